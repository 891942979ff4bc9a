//! Files a device or coordinator keeps: where they live, and how they are
//! written (whole or not at all).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` whole (temporary file, fsync, rename) and
/// readable by the owner only; creates the directory.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other(format!("{} has no directory", path.display())))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Hearth's state directory on this machine: `$HEARTH_HOME`, else
/// `$XDG_STATE_HOME/hearth`, else `~/.local/state/hearth` (`None` when
/// none of those variables is set).
pub fn state_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HEARTH_HOME") {
        return Some(PathBuf::from(h));
    }
    if let Some(s) = std::env::var_os("XDG_STATE_HOME") {
        return Some(PathBuf::from(s).join("hearth"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/hearth"))
}
