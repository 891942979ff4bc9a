//! How peers name a component or module: the lowercase hex SHA-256 of its
//! bytes, as a hello presents it and the coordinator admits it.

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a parameter vector's little-endian bytes, in hex: the same
/// on every platform for the same values, bit for bit.
pub fn params_digest(params: &[f32]) -> String {
    let mut h = Sha256::new();
    for p in params {
        h.update(p.to_le_bytes());
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn digest_is_lowercase_hex_sha256() {
        assert_eq!(
            super::digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // A vector's digest is that of its little-endian bytes.
        let values = [1.0f32, -2.5, 0.0];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(super::params_digest(&values), super::digest(&bytes));
        assert_ne!(super::params_digest(&[0.0]), super::params_digest(&[-0.0]));
    }
}
