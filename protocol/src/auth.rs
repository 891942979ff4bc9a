//! Who may join: device keys and the challenge-response that proves one
//! without sending it.
//!
//! Every device has a 128-bit [`DeviceKey`]: either derived from the
//! household secret and the device's id ([`DeviceKey::derive`], for devices
//! the owner starts with the secret itself) or drawn at random when the
//! device is paired (the coordinator keeps it in its device registry). Keys
//! never travel after pairing:
//!
//! ```text
//! worker      → Hello {id, nonce_w, …}
//! coordinator → Challenge {nonce_c}                      (fresh per connection)
//! worker      → Proof {HMAC(key, "worker" ‖ nonce_c ‖ SHA-256(hello frame))}
//! coordinator → Welcome {…, HMAC(key, "coordinator" ‖ nonce_w ‖ nonce_c)}
//! ```
//!
//! A captured hello and proof are worthless on a new connection (another
//! challenge), the proof binds the exact hello (its capabilities and
//! component cannot be swapped), and the welcome proves the coordinator
//! knows the key too. Comparisons are constant-time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a device key.
pub const KEY_LEN: usize = 16;

/// Bytes of a nonce (the worker's in the hello, the coordinator's in the challenge).
pub const NONCE_LEN: usize = 16;

/// Bytes of a proof (an HMAC-SHA-256 tag).
pub const PROOF_LEN: usize = 32;

/// The secret of a fresh install: public, so only for loopback (a
/// coordinator listening beyond loopback refuses to start with it).
pub const DEV_SECRET: &str = "hearth-local";

/// Crockford's base-32 alphabet (no I, L, O, U: a code survives being read aloud).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A device's key.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey([u8; KEY_LEN]);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(…)")
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for p in parts {
        m.update(p);
    }
    m
}

impl DeviceKey {
    /// The key of device `id` in the household whose secret is `secret`.
    pub fn derive(secret: &str, id: &str) -> Self {
        let tag = mac(
            secret.as_bytes(),
            &[b"hearth device key v1\0", id.as_bytes()],
        )
        .finalize()
        .into_bytes();
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&tag[..KEY_LEN]);
        Self(key)
    }

    /// A key from raw bytes (a random draw at pairing).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The pairing code: the key in Crockford base 32, in groups of five
    /// (`XXXXX-XXXXX-XXXXX-XXXXX-XXXXX-X`).
    pub fn code(&self) -> String {
        let mut bits = 0u32;
        let mut n = 0;
        let mut chars = Vec::with_capacity(32);
        for &b in &self.0 {
            bits = (bits << 8) | u32::from(b);
            n += 8;
            while n >= 5 {
                n -= 5;
                chars.push(ALPHABET[((bits >> n) & 31) as usize]);
            }
        }
        if n > 0 {
            chars.push(ALPHABET[((bits << (5 - n)) & 31) as usize]);
        }
        chars
            .chunks(5)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// Parses a pairing code (case, dashes and spaces do not matter; `O`
    /// reads as 0, `I` and `L` as 1, as Crockford's base 32 says).
    pub fn from_code(code: &str) -> Result<Self, String> {
        let mut bits = 0u64;
        let mut n = 0;
        let mut out = Vec::with_capacity(KEY_LEN);
        let mut digits = 0;
        for c in code.chars() {
            if c == '-' || c == ' ' {
                continue;
            }
            let c = match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            };
            let v = ALPHABET
                .iter()
                .position(|&a| char::from(a) == c)
                .ok_or_else(|| format!("`{c}` is not a pairing-code character"))?;
            digits += 1;
            bits = (bits << 5) | v as u64;
            n += 5;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        let expected = (KEY_LEN * 8).div_ceil(5);
        if digits != expected || out.len() != KEY_LEN || bits & ((1 << n) - 1) != 0 {
            return Err(format!(
                "a pairing code has {expected} characters (groups of five), this one has {digits}"
            ));
        }
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&out);
        Ok(Self(key))
    }

    /// The worker's proof for challenge `nonce` over the hello frame it sent.
    pub fn worker_proof(&self, nonce: &[u8], hello_frame: &[u8]) -> Vec<u8> {
        let hello = Sha256::digest(hello_frame);
        mac(&self.0, &[b"hearth v3 worker\0", nonce, &hello])
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// True if `proof` is the worker's proof for `nonce` and `hello_frame`
    /// (constant-time).
    pub fn check_worker_proof(&self, nonce: &[u8], hello_frame: &[u8], proof: &[u8]) -> bool {
        let hello = Sha256::digest(hello_frame);
        mac(&self.0, &[b"hearth v3 worker\0", nonce, &hello])
            .verify_slice(proof)
            .is_ok()
    }

    /// The coordinator's proof, over the worker's and its own nonce.
    pub fn coordinator_proof(&self, worker_nonce: &[u8], nonce: &[u8]) -> Vec<u8> {
        mac(&self.0, &[b"hearth v3 coordinator\0", worker_nonce, nonce])
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// True if `proof` is the coordinator's proof for these nonces (constant-time).
    pub fn check_coordinator_proof(&self, worker_nonce: &[u8], nonce: &[u8], proof: &[u8]) -> bool {
        mac(&self.0, &[b"hearth v3 coordinator\0", worker_nonce, nonce])
            .verify_slice(proof)
            .is_ok()
    }

    /// The device's credential for the HTTP API: `ID.TAG`, sent as
    /// `Authorization: Bearer ID.TAG` (TAG is hex; the key itself stays on
    /// the device, and an HTTP credential cannot join training).
    pub fn http_token(&self, id: &str) -> String {
        let tag = mac(&self.0, &[b"hearth http v1\0", id.as_bytes()])
            .finalize()
            .into_bytes();
        let hex: String = tag[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{id}.{hex}")
    }

    /// True if `token` is this device's HTTP credential for `id` (constant-time).
    pub fn check_http_token(&self, id: &str, token: &str) -> bool {
        let expected = self.http_token(id);
        expected.len() == token.len()
            && expected
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// What a host needs to join: `hearth://HOST:PORT/?device=ID&key=CODE`
/// (printed by `hearth-coordinator pair`, given to `hearth-host work --pair`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingLink {
    /// The coordinator's `host:port`.
    pub address: String,
    /// The device's id.
    pub device: String,
    /// The device's key.
    pub key: DeviceKey,
    /// The SHA-256 fingerprint (hex) of the coordinator's TLS certificate,
    /// if it serves TLS: the device then connects with `wss://` and trusts
    /// that certificate only.
    pub tls: Option<String>,
}

impl PairingLink {
    /// Parses a pairing string.
    pub fn parse(link: &str) -> Result<Self, String> {
        let rest = link
            .trim()
            .strip_prefix("hearth://")
            .ok_or("a pairing string starts with hearth://")?;
        let (address, query) = rest
            .split_once("/?")
            .ok_or("a pairing string is hearth://HOST:PORT/?device=ID&key=CODE")?;
        let (mut device, mut key, mut tls) = (None, None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("device", v)) => device = Some(v.to_string()),
                Some(("key", v)) => key = Some(DeviceKey::from_code(v)?),
                Some(("tls", v)) => tls = Some(v.to_ascii_lowercase()),
                _ => {}
            }
        }
        match (device, key) {
            (Some(device), Some(key)) if !address.is_empty() && !device.is_empty() => Ok(Self {
                address: address.to_string(),
                device,
                key,
                tls,
            }),
            _ => Err("a pairing string names a host, a device and a key".into()),
        }
    }

    /// The coordinator's WebSocket URL (`wss://` when it serves TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.address)
    }
}

impl std::fmt::Display for PairingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hearth://{}/?device={}&key={}",
            self.address,
            self.device,
            self.key.code()
        )?;
        match &self.tls {
            Some(fp) => write!(f, "&tls={fp}"),
            None => Ok(()),
        }
    }
}

/// The device id an HTTP credential names (`ID.TAG` → `ID`).
pub fn http_token_device(token: &str) -> Option<&str> {
    token.rsplit_once('.').map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_forgive_case_and_dashes() {
        for seed in ["a", "b", "household"] {
            let key = DeviceKey::derive(seed, "kitchen-pi");
            let code = key.code();
            assert_eq!(code.len(), 26 + 5, "{code}");
            assert_eq!(DeviceKey::from_code(&code), Ok(key.clone()));
            let sloppy = code.replace('-', " ").to_lowercase();
            assert_eq!(DeviceKey::from_code(&sloppy), Ok(key));
        }
        assert!(DeviceKey::from_code("ABC").is_err());
        assert!(DeviceKey::from_code("UUUUU-UUUUU-UUUUU-UUUUU-UUUUU-U").is_err());
        // 26 digits carry 130 bits: the 2 spare bits must be zero.
        let key = DeviceKey::from_bytes([0xff; KEY_LEN]);
        let mut code = key.code();
        assert!(code.ends_with('W'), "{code}");
        code.pop();
        code.push('Z');
        assert!(DeviceKey::from_code(&code).is_err());
    }

    #[test]
    fn keys_differ_by_secret_and_device() {
        let k = DeviceKey::derive("s", "a");
        assert_ne!(k, DeviceKey::derive("s", "b"));
        assert_ne!(k, DeviceKey::derive("t", "a"));
        assert_eq!(k, DeviceKey::derive("s", "a"));
    }

    #[test]
    fn proofs_bind_key_nonce_and_hello() {
        let k = DeviceKey::derive("s", "a");
        let other = DeviceKey::derive("s", "b");
        let proof = k.worker_proof(b"nonce-1", b"hello");
        assert_eq!(proof.len(), PROOF_LEN);
        assert!(k.check_worker_proof(b"nonce-1", b"hello", &proof));
        assert!(!k.check_worker_proof(b"nonce-2", b"hello", &proof));
        assert!(!k.check_worker_proof(b"nonce-1", b"hellO", &proof));
        assert!(!other.check_worker_proof(b"nonce-1", b"hello", &proof));
        assert!(!k.check_worker_proof(b"nonce-1", b"hello", &proof[..31]));
        let back = k.coordinator_proof(b"w", b"c");
        assert!(k.check_coordinator_proof(b"w", b"c", &back));
        assert!(!k.check_coordinator_proof(b"c", b"w", &back));
        // A worker's proof is not a coordinator's (different labels).
        assert!(!k.check_coordinator_proof(b"nonce-1", b"hello", &proof));
    }

    #[test]
    fn pairing_strings_round_trip() {
        let link = PairingLink {
            address: "192.168.1.10:7070".into(),
            device: "kitchen-pi".into(),
            key: DeviceKey::derive("s", "kitchen-pi"),
            tls: None,
        };
        let text = link.to_string();
        assert_eq!(PairingLink::parse(&text), Ok(link.clone()));
        assert_eq!(link.url(), "ws://192.168.1.10:7070/ws");
        let secure = PairingLink {
            tls: Some("ab".repeat(32)),
            ..link
        };
        assert_eq!(PairingLink::parse(&secure.to_string()), Ok(secure.clone()));
        assert_eq!(secure.url(), "wss://192.168.1.10:7070/ws");
        assert!(PairingLink::parse("http://x/?device=a&key=b").is_err());
        assert!(PairingLink::parse("hearth://x/?device=a").is_err());
        assert!(PairingLink::parse("hearth://x/?device=a&key=NOTACODE").is_err());
    }

    #[test]
    fn http_tokens_name_their_device() {
        let k = DeviceKey::derive("s", "tab.1");
        let t = k.http_token("tab.1");
        assert_eq!(http_token_device(&t), Some("tab.1"));
        assert!(k.check_http_token("tab.1", &t));
        assert!(!k.check_http_token("tab.2", &t));
        assert!(!DeviceKey::derive("s", "tab.2").check_http_token("tab.1", &t));
        assert!(!k.check_http_token("tab.1", &t[..t.len() - 1]));
    }
}
