//! Side effects of training as observers of the engine's [`Notice`]s: the
//! run's files, the progress bars and tables, the logs, the run summary and
//! the dashboard each listen to the same events, so one more output (a
//! Prometheus endpoint, an audit log) is one more observer.

mod files;
mod log;
mod progress;
mod summary;

pub use files::RunFiles;
pub use log::Log;
pub use progress::Progress;
pub use summary::{Summary, SummaryRecorder};

use crate::engine::Notice;

/// Something that reacts to what the engine reports.
pub trait Observer {
    /// Handles one notice; an error stops the run (e.g. a file that cannot be written).
    fn notice(&mut self, notice: &Notice) -> anyhow::Result<()>;
}

/// Longest piece of peer-supplied text a log line shows.
const SHOWN_MAX: usize = 160;

/// `text` as it may appear in a log: control characters escaped, at most
/// [`SHOWN_MAX`] characters (what a peer sends can forge neither lines nor
/// megabytes of log).
pub fn shown(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn peer_text_cannot_forge_log_lines_or_grow_them() {
        assert_eq!(
            super::shown("pi\n2026 INFO fake\u{1b}[31m"),
            "pi\\n2026 INFO fake\\u{1b}[31m"
        );
        let long = "x".repeat(10_000);
        assert_eq!(super::shown(&long).chars().count(), super::SHOWN_MAX + 1);
    }
}
