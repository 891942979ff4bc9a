//! `SHA256SUMS` (the `sha256sum` format) and verification against it.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// File name → lowercase hex digest, or `None` if the directory has no `SHA256SUMS`.
pub fn read_sums(dir: &Path) -> Result<Option<HashMap<String, String>>> {
    let path = dir.join("SHA256SUMS");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path, source }),
    };
    let sums = text
        .lines()
        .filter_map(|line| {
            let (digest, name) = line.trim().split_once(char::is_whitespace)?;
            Some((
                name.trim().trim_start_matches('*').to_string(),
                digest.to_ascii_lowercase(),
            ))
        })
        .collect();
    Ok(Some(sums))
}

/// Checks `bytes` of `path` against its entry in `sums` (files not listed pass).
pub fn verify(path: &Path, bytes: &[u8], sums: Option<&HashMap<String, String>>) -> Result<()> {
    let Some(sums) = sums else { return Ok(()) };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let Some(expected) = sums.get(name) else {
        return Ok(());
    };
    let actual: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if &actual != expected {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}
