//! The household: its secret and its paired devices, kept in the
//! coordinator's home directory (`--home`, default `$HEARTH_HOME` or
//! `~/.local/state/hearth`).
//!
//! - `HOME/secret`: the household secret (hex, made by the first `pair`; a
//!   `--secret` flag or `HEARTH_SECRET` overrides it). Devices started with
//!   the secret itself use the key [`DeviceKey::derive`] gives their id.
//! - `HOME/devices.json`: paired devices, each with its own random key, and
//!   whether it was revoked. It is read on every admission, so pairing and
//!   revoking take effect without a restart.
//!
//! Both files are written whole (temporary file, fsync, rename) and readable
//! by their owner only.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use hearth_protocol::auth::{DEV_SECRET, DeviceKey, KEY_LEN, NONCE_LEN, http_token_device};
use serde::{Deserialize, Serialize};

/// Where the household lives and which secret it uses.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HouseholdOptions {
    /// The coordinator's home directory (household secret, paired devices);
    /// default `$HEARTH_HOME`, else `~/.local/state/hearth`.
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// The household secret (default: HOME/secret if it exists, else the
    /// public development secret, which only loopback accepts).
    #[arg(long, env = "HEARTH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// A paired device, as `devices.json` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Its id (the worker id it presents).
    pub id: String,
    /// Its key, as a pairing code.
    pub key: String,
    /// When it was paired (Unix seconds).
    pub paired_at: u64,
    /// When it was revoked (Unix seconds), if it was.
    #[serde(default)]
    pub revoked_at: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Registry {
    devices: Vec<Device>,
}

/// The household secret and device registry.
#[derive(Debug, Clone)]
pub struct Household {
    secret: String,
    home: PathBuf,
}

/// A fresh random nonce (for the worker sessions this binary runs itself).
pub fn nonce() -> Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
    Ok(n)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes `bytes` to `path` whole and readable by the owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    hearth_runtime::files::write_private(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// The name the household's owner uses on the HTTP API (its key is derived
/// from the secret, like the owner's own machines').
pub const OWNER: &str = "owner";

/// A valid device id: 1 to 64 bytes of letters, digits, `-`, `_`, `.`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("a device id is 1 to 64 letters, digits, '-', '_' or '.'".into());
    }
    Ok(())
}

impl Household {
    /// The household of `options`: its home directory and its secret (the
    /// flag, else `HOME/secret`, else the development secret).
    pub fn open(options: &HouseholdOptions) -> Result<Self> {
        let home = match &options.home {
            Some(h) => h.clone(),
            None => default_home()?,
        };
        let secret = match &options.secret {
            Some(s) if s.is_empty() => bail!("--secret must not be empty"),
            Some(s) => s.clone(),
            None => match std::fs::read_to_string(home.join("secret")) {
                Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
                Ok(_) => bail!("{} is empty", home.join("secret").display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEV_SECRET.to_string(),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reading {}", home.join("secret").display()));
                }
            },
        };
        Ok(Self { secret, home })
    }

    /// A household with this secret and home (tests, benchmarks).
    pub fn with_secret(secret: &str, home: &Path) -> Self {
        Self {
            secret: secret.to_string(),
            home: home.to_path_buf(),
        }
    }

    /// True when the secret is the public development one.
    pub fn is_dev(&self) -> bool {
        self.secret == DEV_SECRET
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Makes a household secret in HOME/secret if the household has none
    /// yet (first pairing); returns the household with it.
    pub fn ensure_secret(self) -> Result<Self> {
        if !self.is_dev() {
            return Ok(self);
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.home.join("secret");
        write_private(&path, secret.as_bytes())?;
        eprintln!("made a household secret in {}", path.display());
        Ok(Self { secret, ..self })
    }

    fn registry(&self) -> Result<Registry> {
        let path = self.home.join("devices.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a device registry", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self, registry: &Registry) -> Result<()> {
        write_private(
            &self.home.join("devices.json"),
            &serde_json::to_vec_pretty(registry)?,
        )
    }

    /// The key device `id` must prove, or why it may not join: a paired
    /// device's own key, a revoked device's refusal, or for any other id
    /// the key derived from the household secret.
    pub fn key_for(&self, id: &str) -> Result<DeviceKey, String> {
        check_id(id)?;
        let registry = self
            .registry()
            .map_err(|e| format!("the coordinator cannot read its device registry: {e:#}"))?;
        match registry.devices.iter().find(|d| d.id == id) {
            Some(d) if d.revoked_at.is_some() => Err(format!("device {id} was revoked")),
            Some(d) => DeviceKey::from_code(&d.key)
                .map_err(|e| format!("the registry's key for {id} is damaged: {e}")),
            None => Ok(DeviceKey::derive(&self.secret, id)),
        }
    }

    /// True if `token` is the owner's HTTP credential: device [`OWNER`],
    /// whose key is derived from the household secret (a device cannot be
    /// paired under that name).
    pub fn is_owner(&self, token: &str) -> bool {
        http_token_device(token) == Some(OWNER)
            && self
                .registry()
                .is_ok_and(|r| r.devices.iter().all(|d| d.id != OWNER))
            && self.http_allowed(token)
    }

    /// True if `token` (`ID.TAG`) is a valid HTTP credential of a device
    /// that may join.
    pub fn http_allowed(&self, token: &str) -> bool {
        http_token_device(token)
            .and_then(|id| self.key_for(id).ok().map(|k| (id, k)))
            .is_some_and(|(id, key)| key.check_http_token(id, token))
    }

    /// Pairs device `id` with a fresh random key (a device paired before
    /// gets a new key; a revoked one is paired again).
    pub fn pair(&self, id: &str) -> Result<DeviceKey> {
        check_id(id).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            id != OWNER,
            "{OWNER} is the household owner's name, not a device's"
        );
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
        let key = DeviceKey::from_bytes(bytes);
        let mut registry = self.registry()?;
        registry.devices.retain(|d| d.id != id);
        registry.devices.push(Device {
            id: id.to_string(),
            key: key.code(),
            paired_at: now(),
            revoked_at: None,
        });
        self.save(&registry)?;
        Ok(key)
    }

    /// The paired devices.
    pub fn devices(&self) -> Result<Vec<Device>> {
        Ok(self.registry()?.devices)
    }

    /// Revokes device `id`: it can no longer join or read the API (a
    /// connected device is sent away at the session's next check).
    pub fn revoke(&self, id: &str) -> Result<()> {
        let mut registry = self.registry()?;
        let found = registry.devices.iter_mut().find(|d| d.id == id);
        match found {
            Some(d) => {
                d.revoked_at.get_or_insert(now());
            }
            None => {
                // An unpaired id (one using the household secret): record the
                // revocation so its derived key stops working too (no key is
                // kept: a revoked entry's key is never read).
                check_id(id).map_err(anyhow::Error::msg)?;
                registry.devices.push(Device {
                    id: id.to_string(),
                    key: String::new(),
                    paired_at: 0,
                    revoked_at: Some(now()),
                });
            }
        }
        self.save(&registry)
    }
}

/// The link that pairs a browser: the page at `page` (an `http://…/` URL)
/// with the device's id and code in the fragment (a fragment never leaves
/// the browser; the page keeps it in its local storage), and the
/// household's public signing key if it has one (`trust`: components it
/// signed may replace the tab's training code).
pub fn page_link(page: &str, id: &str, key: &DeviceKey, trust: Option<&str>) -> String {
    let trust = trust.map(|t| format!("&trust={t}")).unwrap_or_default();
    format!("{page}#device={id}&key={}{trust}", key.code())
}

fn default_home() -> Result<PathBuf> {
    hearth_runtime::files::state_home().context("set --home, HEARTH_HOME or HOME")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_devices_use_their_own_key_and_revoked_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = Household::with_secret("s3cret", dir.path());
        assert_eq!(h.key_for("owner"), Ok(DeviceKey::derive("s3cret", "owner")));
        assert!(h.key_for("bad id\n").is_err());

        let key = h.pair("kitchen").unwrap();
        assert_eq!(h.key_for("kitchen"), Ok(key.clone()));
        assert_ne!(key, DeviceKey::derive("s3cret", "kitchen"));
        assert!(h.http_allowed(&key.http_token("kitchen")));
        assert!(!h.http_allowed(&DeviceKey::derive("s3cret", "kitchen").http_token("kitchen")));

        h.revoke("kitchen").unwrap();
        assert!(h.key_for("kitchen").unwrap_err().contains("revoked"));
        assert!(!h.http_allowed(&key.http_token("kitchen")));
        h.revoke("owner").unwrap();
        assert!(
            h.key_for("owner").is_err(),
            "a secret-holding id can be revoked too"
        );

        let again = h.pair("kitchen").unwrap();
        assert_ne!(again, key, "pairing again makes a new key");
        assert_eq!(h.key_for("kitchen"), Ok(again));
        assert_eq!(h.devices().unwrap().len(), 2);
    }

    #[test]
    fn the_secret_comes_from_the_flag_else_the_home_else_the_dev_default() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |secret: Option<&str>| HouseholdOptions {
            home: Some(dir.path().to_path_buf()),
            secret: secret.map(str::to_string),
        };
        assert!(Household::open(&opts(None)).unwrap().is_dev());
        let made = Household::open(&opts(None))
            .unwrap()
            .ensure_secret()
            .unwrap();
        assert!(!made.is_dev());
        let reopened = Household::open(&opts(None)).unwrap();
        assert_eq!(reopened.secret, made.secret);
        assert_eq!(Household::open(&opts(Some("x"))).unwrap().secret, "x");
        assert!(Household::open(&opts(Some(""))).is_err());
    }
}
