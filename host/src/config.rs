//! `work`'s settings file (`--config FILE`, default `/etc/hearth/host.toml`
//! when it exists): one key per option, named like the long flag
//! (`threads = 4`, `trust = ["…"]`, `state-dir = "/var/lib/hearth"`). The
//! file's values come before the command line's, so a flag given on the
//! command line wins; they also win over environment variables.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Where a device's settings live when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/hearth/host.toml";

/// The flags `path`'s settings stand for, in order.
pub fn flags(path: &Path) -> Result<Vec<OsString>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        if key == "config" {
            bail!("{}: a settings file cannot name another", path.display());
        }
        let flag = OsString::from(format!("--{}", key.replace('_', "-")));
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for v in values {
            match v {
                toml::Value::Boolean(true) => out.push(flag.clone()),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => out.extend([flag.clone(), s.into()]),
                toml::Value::Integer(i) => out.extend([flag.clone(), i.to_string().into()]),
                toml::Value::Float(f) => out.extend([flag.clone(), f.to_string().into()]),
                other => bail!(
                    "{}: {key} = {other} is not a string, number or true",
                    path.display()
                ),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_flags_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("host.toml");
        std::fs::write(
            &file,
            "threads = 4\ntrust = [\"aa\", \"bb\"]\nstate_dir = \"/var/lib/hearth\"\n\
             exit-with-parent = false\ntrial-call-timeout = 2.5\n",
        )
        .unwrap();
        let got: Vec<String> = flags(&file)
            .unwrap()
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        for pair in [
            ["--threads", "4"],
            ["--trust", "aa"],
            ["--trust", "bb"],
            ["--state-dir", "/var/lib/hearth"],
            ["--trial-call-timeout", "2.5"],
        ] {
            assert!(got.windows(2).any(|w| w == pair), "{pair:?} in {got:?}");
        }
        assert!(!got.contains(&"--exit-with-parent".to_string()));
        std::fs::write(&file, "threads = [[1]]\n").unwrap();
        assert!(flags(&file).is_err());
        std::fs::write(&file, "threads = \n").unwrap();
        assert!(
            flags(&file)
                .unwrap_err()
                .to_string()
                .contains("not valid TOML")
        );
    }
}
