//! The run's line files: `ledger.jsonl` (every credited batch and its
//! samples) and `metrics.jsonl` (one line per epoch). Each line is written
//! with one call, so a crash never leaves half a line behind a whole one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Observer;
use crate::engine::Notice;

/// The two files of a run directory.
pub struct RunFiles {
    ledger: (PathBuf, File),
    metrics: (PathBuf, File),
}

impl RunFiles {
    /// Creates (or empties) the files in `dir`, creating it if needed.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let open = |name: &str| -> Result<(PathBuf, File)> {
            let p = dir.join(name);
            let f = File::create(&p).with_context(|| format!("creating {}", p.display()))?;
            Ok((p, f))
        };
        Ok(Self {
            ledger: open("ledger.jsonl")?,
            metrics: open("metrics.jsonl")?,
        })
    }
}

/// Appends `lines` (each already ending in a newline) with one write.
fn append(file: &mut (PathBuf, File), lines: &str) -> Result<()> {
    file.1
        .write_all(lines.as_bytes())
        .with_context(|| format!("writing {}", file.0.display()))
}

impl Observer for RunFiles {
    fn notice(&mut self, notice: &Notice) -> Result<()> {
        match notice {
            Notice::Completed(entries) => {
                let mut lines = String::new();
                for e in entries {
                    lines.push_str(&serde_json::to_string(e)?);
                    lines.push('\n');
                }
                append(&mut self.ledger, &lines)
            }
            Notice::EpochFinished(m) => {
                let line = serde_json::to_string(m)? + "\n";
                append(&mut self.metrics, &line)
            }
            _ => Ok(()),
        }
    }
}
