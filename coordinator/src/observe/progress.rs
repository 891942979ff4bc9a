//! The terminal view: a bar for the run and one for the epoch, a line per
//! epoch, and the per-worker table after it.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Observer, shown};
use crate::engine::{Notice, WorkerReport};

/// Progress bars and tables on the terminal (bars and tables hidden when quiet).
pub struct Progress {
    quiet: bool,
    bars: MultiProgress,
    overall: Option<ProgressBar>,
    epoch: Option<ProgressBar>,
    epochs: usize,
    workers: Vec<WorkerReport>,
}

impl Progress {
    /// A view that draws bars unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        let bars = if quiet {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        } else {
            MultiProgress::new()
        };
        Self {
            quiet,
            bars,
            overall: None,
            epoch: None,
            epochs: 0,
            workers: Vec::new(),
        }
    }

    fn print_workers(&self) {
        if self.quiet {
            return;
        }
        println!(
            "  {:<16} {:>7} {:>9} {:>9} {:>12} {:>12}",
            "worker", "rounds", "images", "img/s", "sent MB", "received MB"
        );
        for r in &self.workers {
            println!(
                "  {:<16} {:>7} {:>9} {:>9.0} {:>12.2} {:>12.2}",
                shown(&r.name),
                r.rounds,
                r.images,
                r.images_per_second,
                r.bytes_sent_to as f64 / 1e6,
                r.bytes_received_from as f64 / 1e6
            );
        }
    }
}

fn bar(len: u64, what: &str, prefix: String) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = format!(
        "{what:<7} {{prefix:>5}} [{{bar:32}}] {{pos}}/{{len}} batches  {{per_sec}}  eta {{eta}}  {{msg}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar
}

impl Observer for Progress {
    fn notice(&mut self, notice: &Notice) -> anyhow::Result<()> {
        match notice {
            Notice::EpochStarted {
                epoch,
                epochs,
                batches,
                run_batches,
            } => {
                self.epochs = *epochs;
                let overall = self.overall.get_or_insert_with(|| {
                    self.bars.add(bar(run_batches.1, "overall", String::new()))
                });
                overall.set_position(run_batches.0);
                self.epoch = Some(self.bars.add(bar(
                    *batches as u64,
                    "epoch",
                    format!("{epoch}/{epochs}"),
                )));
            }
            Notice::RoundFinished(r) => {
                if let Some(b) = &self.epoch {
                    b.set_position(r.epoch_batches.0 as u64);
                    b.set_message(format!("{} workers", r.connected));
                }
                if let Some(b) = &self.overall {
                    b.set_position(r.run_batches.0);
                }
            }
            Notice::Workers(rows) => self.workers = rows.clone(),
            Notice::EpochFinished(m) => {
                if let Some(b) = self.epoch.take() {
                    b.finish_and_clear();
                    self.bars.remove(&b);
                }
                let line = format!(
                    "epoch {:>2}/{}  {:>6.1} s  {} rounds  train loss {:.4} acc {:.2} %  test acc {:.2} %  {:.1} MB on the wire",
                    m.epoch,
                    self.epochs,
                    m.wall_seconds,
                    m.rounds,
                    m.train_loss,
                    100.0 * m.train_accuracy,
                    100.0 * m.test_accuracy,
                    (m.bytes_sent + m.bytes_received) as f64 / 1e6
                );
                self.bars.suspend(|| {
                    println!("{line}");
                    self.print_workers();
                });
            }
            Notice::TrainingFinished { .. } => {
                if let Some(b) = self.overall.take() {
                    b.finish_and_clear();
                }
            }
            _ => {}
        }
        Ok(())
    }
}
