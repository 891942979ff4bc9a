//! The worker side of Hearth's protocol, as a state machine with no I/O.
//!
//! A worker (the device host, a browser tab, a benchmark's null worker)
//! creates a [`WorkerSession`] around its [`Trainer`], sends
//! [`WorkerSession::hello`] when a connection opens, passes every binary
//! frame from the coordinator to [`WorkerSession::handle`] and sends back
//! what it returns. [`WorkerSession::phase`] says when to stop.

mod cache;
mod compact;
mod round;
mod trainer;
mod watch;
mod worker;

pub use cache::{DEFAULT_SAMPLE_CACHE, SampleCache};
pub use round::run_round;

pub mod self_test;

/// Memory one component instance may use unless a device says otherwise,
/// in MiB (a host's `--memory-mib`, a tab's cap).
pub const DEFAULT_MEMORY_MIB: usize = 256;
pub use trainer::Trainer;
pub use watch::WATCH_ROUNDS;
pub use worker::{Identity, Phase, SessionStats, WorkerSession};
