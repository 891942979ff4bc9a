//! The run directory: `ledger.jsonl` (every credited batch and its samples),
//! `metrics.jsonl` (one line per epoch) and `run-state.bin` (the engine's
//! last checkpoint). Each line is written with one call, so a crash never
//! leaves half a line behind a whole one; the checkpoint is written to a
//! temporary file, synced and renamed over the old one, and it records how
//! long the two line files were, so a resumed run cuts them back to that
//! point and nothing is credited twice.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::Observer;
use crate::engine::{Notice, RunState};

/// The checkpoint's file name.
pub const CHECKPOINT: &str = "run-state.bin";
const LEDGER: &str = "ledger.jsonl";
const METRICS: &str = "metrics.jsonl";
/// Format of `run-state.bin` (bumped when `RunState` changes shape; 11:
/// the options carry `--lr-max`).
const FORMAT: u32 = 11;

/// What `run-state.bin` holds.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    format: u32,
    ledger_bytes: u64,
    metrics_bytes: u64,
    state: RunState,
}

/// One line file and how many bytes it holds.
struct Lines {
    path: PathBuf,
    file: File,
    len: u64,
}

impl Lines {
    fn open(dir: &Path, name: &str, keep: Option<u64>) -> Result<Self> {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let len = keep.unwrap_or(0);
        file.set_len(len)
            .with_context(|| format!("cutting {} back to the checkpoint", path.display()))?;
        Ok(Self { path, file, len })
    }

    /// Appends `lines` (each already ending in a newline) with one write.
    fn append(&mut self, lines: &str) -> Result<()> {
        self.file
            .write_all(lines.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.len += lines.len() as u64;
        Ok(())
    }
}

/// The files of a run directory.
pub struct RunFiles {
    dir: PathBuf,
    ledger: Lines,
    metrics: Lines,
}

fn read_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let path = dir.join(CHECKPOINT);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("reading {} (is this a run directory?)", path.display()))?;
    let saved: Checkpoint = postcard::from_bytes(&bytes)
        .with_context(|| format!("{} is damaged or from another version", path.display()))?;
    if saved.format != FORMAT {
        bail!(
            "{} has format {}, this coordinator reads {FORMAT}",
            path.display(),
            saved.format
        );
    }
    Ok(saved)
}

impl RunFiles {
    /// A new run in `dir` (created if needed). A previous run's files there
    /// are not overwritten: the directory is first moved aside to `DIR.1`
    /// (or the next free number), which is returned.
    pub fn create(dir: &Path) -> Result<(Self, Option<PathBuf>)> {
        let moved = if [LEDGER, METRICS, CHECKPOINT]
            .iter()
            .any(|f| dir.join(f).exists())
        {
            let aside = (1..)
                .map(|i| PathBuf::from(format!("{}.{i}", dir.display())))
                .find(|p| !p.exists())
                .context("no free name to move the previous run to")?;
            std::fs::rename(dir, &aside)
                .with_context(|| format!("moving the previous run {} aside", dir.display()))?;
            Some(aside)
        } else {
            None
        };
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let files = Self {
            dir: dir.to_path_buf(),
            ledger: Lines::open(dir, LEDGER, None)?,
            metrics: Lines::open(dir, METRICS, None)?,
        };
        Ok((files, moved))
    }

    /// The run saved in `dir`: its state at the last checkpoint, with the
    /// line files cut back to that point.
    pub fn resume(dir: &Path) -> Result<(Self, RunState)> {
        let saved = read_checkpoint(dir)?;
        let files = Self {
            dir: dir.to_path_buf(),
            ledger: Lines::open(dir, LEDGER, Some(saved.ledger_bytes))?,
            metrics: Lines::open(dir, METRICS, Some(saved.metrics_bytes))?,
        };
        Ok((files, saved.state))
    }

    /// The state of the last checkpoint in `dir`, read only (nothing is cut).
    pub fn saved_state(dir: &Path) -> Result<RunState> {
        Ok(read_checkpoint(dir)?.state)
    }

    /// Writes `state` as the checkpoint: temporary file, sync, rename, sync
    /// the directory.
    fn checkpoint(&mut self, state: &RunState) -> Result<()> {
        // The line files first: the checkpoint must never count bytes that
        // are not on disk.
        self.ledger.file.sync_data()?;
        self.metrics.file.sync_data()?;
        let saved = Checkpoint {
            format: FORMAT,
            ledger_bytes: self.ledger.len,
            metrics_bytes: self.metrics.len,
            state: state.clone(),
        };
        let bytes = postcard::to_allocvec(&saved).context("encoding the run state")?;
        let path = self.dir.join(CHECKPOINT);
        let tmp = self.dir.join(format!("{CHECKPOINT}.tmp"));
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
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
                self.ledger.append(&lines)
            }
            Notice::EpochFinished(m) => {
                let line = serde_json::to_string(m)? + "\n";
                self.metrics.append(&line)
            }
            Notice::Checkpoint(state) => self.checkpoint(state),
            _ => Ok(()),
        }
    }
}
