//! A device's components on disk: every component it was offered (with its
//! signature), which one it runs, which one is on trial, which ones failed
//! here (never taken again), compiled artefacts, and an append-only audit
//! of all of it.
//!
//! ```text
//! DIR/standing.json            current, trial, failed (written whole)
//! DIR/components/SHA.wasm      the component, as offered
//! DIR/components/SHA.wasm.sig  its signature file
//! DIR/compiled/SHA.cwasm       wasmtime's compiled artefact (a cache)
//! DIR/audit.jsonl              one line per event, appended
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::files::write_private;

/// Which components a device runs and avoids.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// The component it runs (it passed its watched rounds here); `None`:
    /// the one built into the binary.
    pub current: Option<String>,
    /// One it swapped to and is still watching. A process that starts and
    /// finds one set was ended while watching it (a call overran its time
    /// budget, or the device lost power): it goes back to `current`.
    pub trial: Option<String>,
    /// Components that failed here, with why: never taken again.
    pub failed: BTreeMap<String, String>,
}

/// One line of the audit file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// What happened: offered, refused, ready, swapped, committed, rolled-back, started.
    pub event: String,
    /// Digest of the component concerned.
    pub digest: String,
    /// Name and version from its manifest, a reason, or nothing.
    pub detail: String,
}

/// The directory of one device's components.
#[derive(Debug, Clone)]
pub struct ComponentStore {
    dir: PathBuf,
}

impl ComponentStore {
    /// Opens (creating) `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("components"))?;
        std::fs::create_dir_all(dir.join("compiled"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the device runs and avoids (nothing yet: the default). A file
    /// that does not parse is an error, never silently forgotten.
    pub fn standing(&self) -> Result<Standing, String> {
        let path = self.dir.join("standing.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is damaged: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Standing::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Replaces the standing (whole or not at all).
    pub fn set_standing(&self, standing: &Standing) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(standing).map_err(std::io::Error::other)?;
        write_private(&self.dir.join("standing.json"), &text)
    }

    /// Where component `digest` is kept (its signature beside it, `.sig`).
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join("components").join(format!("{digest}.wasm"))
    }

    /// Where the compiled artefact of `digest` is cached.
    pub fn compiled_path(&self, digest: &str) -> PathBuf {
        self.dir.join("compiled").join(format!("{digest}.cwasm"))
    }

    /// Digests of the components kept here.
    pub fn kept(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.dir.join("components")) else {
            return Vec::new();
        };
        let mut digests: Vec<String> = dir
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".wasm").map(str::to_string)
            })
            .collect();
        digests.sort();
        digests
    }

    /// Keeps a component and its signature file; returns its path.
    pub fn keep(&self, bytes: &[u8], signature: &str) -> std::io::Result<PathBuf> {
        let path = self.path(&crate::digest(bytes));
        write_private(&crate::signature_path(&path), signature.as_bytes())?;
        write_private(&path, bytes)?;
        Ok(path)
    }

    /// Appends one event to the audit file (`detail` is cut to 300 characters).
    pub fn audit(&self, event: &str, digest: &str, detail: &str) -> std::io::Result<()> {
        let line = AuditEvent {
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            event: event.into(),
            digest: digest.into(),
            detail: detail.chars().take(300).collect(),
        };
        let mut text = serde_json::to_string(&line).map_err(std::io::Error::other)?;
        text.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("audit.jsonl"))?;
        f.write_all(text.as_bytes())?;
        f.sync_data()
    }

    /// Every audit event so far (lines that do not parse are skipped).
    pub fn audit_log(&self) -> Vec<AuditEvent> {
        std::fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standing_survives_reopening_and_a_damaged_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = ComponentStore::open(dir.path()).unwrap();
        assert_eq!(store.standing(), Ok(Standing::default()));
        let mut s = Standing {
            current: Some("ab".into()),
            trial: Some("cd".into()),
            ..Standing::default()
        };
        s.failed.insert("ef".into(), "NaN parameters".into());
        store.set_standing(&s).unwrap();
        let again = ComponentStore::open(dir.path()).unwrap();
        assert_eq!(again.standing(), Ok(s));
        std::fs::write(dir.path().join("standing.json"), b"{\"current\":").unwrap();
        assert!(again.standing().unwrap_err().contains("damaged"));
    }

    #[test]
    fn kept_components_sit_by_their_digest_with_their_signature_and_are_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = ComponentStore::open(dir.path()).unwrap();
        let path = store.keep(b"\0asm bytes", "{\"sig\":1}").unwrap();
        assert_eq!(path, store.path(&crate::digest(b"\0asm bytes")));
        assert_eq!(std::fs::read(&path).unwrap(), b"\0asm bytes");
        assert_eq!(
            std::fs::read_to_string(crate::signature_path(&path)).unwrap(),
            "{\"sig\":1}"
        );
        assert_eq!(store.kept(), [crate::digest(b"\0asm bytes")]);
        store.audit("offered", "ab", "hearth-trainer 2").unwrap();
        store.audit("rolled-back", "ab", "NaN").unwrap();
        let log = store.audit_log();
        assert_eq!(
            log.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
            ["offered", "rolled-back"]
        );
    }
}
