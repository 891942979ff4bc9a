//! Signed training components (see the crate README).
//!
//! The signed message is the manifest's fields, each prefixed by its length,
//! after a domain label, so no two manifests sign the same bytes and no
//! signature made for something else can pass for a component's.

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a signature says about a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The component's name (e.g. `hearth-trainer`).
    pub name: String,
    /// Its version (e.g. `0.2.0`).
    pub version: String,
    /// The WIT package it implements (e.g. `hearth:trainer@0.1.0`).
    pub package: String,
    /// The WIT world it implements (e.g. `trainer-component`).
    pub world: String,
    /// Hex SHA-256 of the component's bytes.
    pub sha256: String,
}

/// A manifest with the key that signed it and the signature (`FILE.sig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// What is vouched for.
    pub manifest: Manifest,
    /// Hex of the signer's public key.
    pub key: String,
    /// Hex of the Ed25519 signature over [`message`] of the manifest.
    pub signature: String,
}

/// Why a component is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No signature came with it.
    #[error("the component is unsigned")]
    Unsigned,
    /// The signature file is not one.
    #[error("the signature is malformed: {0}")]
    Malformed(String),
    /// Signed by a key this device does not trust.
    #[error("signed by key {0}, which this device does not trust")]
    UntrustedKey(String),
    /// The signature does not match the manifest.
    #[error("the signature does not match the manifest (forged or altered)")]
    BadSignature,
    /// The bytes are not the ones the manifest names.
    #[error(
        "the component was tampered with: its SHA-256 is {found}, the signed manifest says {signed}"
    )]
    Tampered {
        /// From the manifest.
        signed: String,
        /// Of the bytes.
        found: String,
    },
    /// Built for another contract.
    #[error("the component implements {found}, this device runs {expected}")]
    WrongWorld {
        /// `package/world` of this device.
        expected: String,
        /// `package/world` of the component.
        found: String,
    },
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The bytes a signature covers.
pub fn message(m: &Manifest) -> Vec<u8> {
    let mut out = b"hearth component v1\0".to_vec();
    for field in [&m.name, &m.version, &m.package, &m.world, &m.sha256] {
        out.extend_from_slice(&(field.len() as u64).to_le_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

/// The household's signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// The key with this 32-byte seed (draw it from the OS).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Parses a key file's text (hex of the seed).
    pub fn parse(text: &str) -> Result<Self, String> {
        unhex::<32>(text.trim())
            .map(Self::from_seed)
            .ok_or_else(|| "a signing key is 64 hex digits".to_string())
    }

    /// The text of a key file.
    pub fn to_text(&self) -> String {
        hex(&self.0.to_bytes())
    }

    /// The public key, hex (what devices trust).
    pub fn public(&self) -> String {
        hex(self.0.verifying_key().as_bytes())
    }

    /// Signs `bytes` as `manifest` describes them (its `sha256` is set here).
    pub fn sign(&self, bytes: &[u8], mut manifest: Manifest) -> Signed {
        manifest.sha256 = sha256_hex(bytes);
        let signature = self.0.sign(&message(&manifest));
        Signed {
            manifest,
            key: self.public(),
            signature: hex(&signature.to_bytes()),
        }
    }
}

/// The WIT package a training component implements (`wit/trainer.wit`).
pub const WIT_PACKAGE: &str = "hearth:trainer@0.1.0";

/// The WIT world a training component must implement.
pub const WIT_WORLD: &str = "trainer-component";

/// What a Hearth device accepts: training components (of [`WIT_PACKAGE`]
/// and [`WIT_WORLD`]) signed by one of `trusted` (hex Ed25519 public keys).
pub fn trainer_policy(trusted: Vec<String>) -> Policy {
    Policy {
        trusted,
        package: WIT_PACKAGE.into(),
        world: WIT_WORLD.into(),
    }
}

/// What a device accepts: keys it trusts, the package and world it runs.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Hex public keys.
    pub trusted: Vec<String>,
    /// The WIT package it implements.
    pub package: String,
    /// The WIT world.
    pub world: String,
}

impl Policy {
    /// Checks `bytes` and their signature file's text (`None`: unsigned);
    /// returns the verified manifest.
    pub fn verify(&self, bytes: &[u8], signature: Option<&str>) -> Result<Manifest, Refusal> {
        let text = signature.ok_or(Refusal::Unsigned)?;
        let signed: Signed =
            serde_json::from_str(text).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let key_hex = signed.key.to_ascii_lowercase();
        if !self
            .trusted
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&key_hex))
        {
            return Err(Refusal::UntrustedKey(key_hex));
        }
        let key = unhex::<32>(&key_hex)
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
            .ok_or_else(|| Refusal::Malformed("not an Ed25519 public key".into()))?;
        let sig = unhex::<64>(&signed.signature)
            .map(|s| ed25519_dalek::Signature::from_bytes(&s))
            .ok_or_else(|| Refusal::Malformed("a signature is 128 hex digits".into()))?;
        key.verify_strict(&message(&signed.manifest), &sig)
            .map_err(|_| Refusal::BadSignature)?;
        let found = sha256_hex(bytes);
        if found != signed.manifest.sha256 {
            return Err(Refusal::Tampered {
                signed: signed.manifest.sha256,
                found,
            });
        }
        let m = signed.manifest;
        if m.package != self.package || m.world != self.world {
            return Err(Refusal::WrongWorld {
                expected: format!("{}/{}", self.package, self.world),
                found: format!("{}/{}", m.package, m.world),
            });
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(world: &str) -> Manifest {
        Manifest {
            name: "hearth-trainer".into(),
            version: "0.2.0".into(),
            package: "hearth:trainer@0.1.0".into(),
            world: world.into(),
            sha256: String::new(),
        }
    }

    fn policy(key: &SigningKey) -> Policy {
        Policy {
            trusted: vec![key.public()],
            package: "hearth:trainer@0.1.0".into(),
            world: "trainer-component".into(),
        }
    }

    #[test]
    fn a_signed_component_passes_and_every_fault_has_its_reason() {
        let key = SigningKey::from_seed([7; 32]);
        let other = SigningKey::from_seed([8; 32]);
        let bytes = b"\0asm component bytes".to_vec();
        let signed = key.sign(&bytes, manifest("trainer-component"));
        let text = serde_json::to_string(&signed).unwrap();
        let p = policy(&key);
        assert_eq!(
            p.verify(&bytes, Some(&text)).map(|m| m.version),
            Ok("0.2.0".into())
        );

        assert_eq!(p.verify(&bytes, None), Err(Refusal::Unsigned));
        assert!(matches!(
            p.verify(&bytes, Some("{")),
            Err(Refusal::Malformed(_))
        ));
        let mut flipped = bytes.clone();
        flipped[3] ^= 1;
        assert!(matches!(
            p.verify(&flipped, Some(&text)),
            Err(Refusal::Tampered { .. })
        ));
        let by_other =
            serde_json::to_string(&other.sign(&bytes, manifest("trainer-component"))).unwrap();
        assert_eq!(
            p.verify(&bytes, Some(&by_other)),
            Err(Refusal::UntrustedKey(other.public()))
        );
        // A manifest altered after signing (another version, another hash).
        let mut altered = signed.clone();
        altered.manifest.version = "9.9.9".into();
        let altered = serde_json::to_string(&altered).unwrap();
        assert_eq!(p.verify(&bytes, Some(&altered)), Err(Refusal::BadSignature));
        // Properly signed, but for another world.
        let elsewhere = serde_json::to_string(&key.sign(&bytes, manifest("other-world"))).unwrap();
        assert!(matches!(
            p.verify(&bytes, Some(&elsewhere)),
            Err(Refusal::WrongWorld { .. })
        ));
    }

    #[test]
    fn keys_round_trip_through_their_text() {
        let key = SigningKey::from_seed([3; 32]);
        let again = SigningKey::parse(&key.to_text()).unwrap();
        assert_eq!(again.public(), key.public());
        assert!(SigningKey::parse("abc").is_err());
    }

    #[test]
    fn fields_cannot_be_shifted_between_each_other() {
        let mut a = manifest("w");
        a.name = "ab".into();
        a.version = "c".into();
        let mut b = a.clone();
        b.name = "a".into();
        b.version = "bc".into();
        assert_ne!(message(&a), message(&b));
    }
}
