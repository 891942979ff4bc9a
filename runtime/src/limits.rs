//! Resource limits of a training component, configured in one place.

use std::time::Duration;

/// What one component instance may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest linear memory the component may grow to.
    pub memory_bytes: usize,
    /// Wall time one call may take (`None`: unlimited).
    pub call_timeout: Option<Duration>,
    /// What happens when a call takes longer than `call_timeout`.
    pub on_overrun: OnOverrun,
}

/// How a call timeout is enforced.
#[derive(Debug, Clone, Copy)]
pub enum OnOverrun {
    /// The call traps and the host carries on (with a new instance).
    ///
    /// wasmtime can only interrupt running code at epoch checks, which this
    /// compiles into every loop of the component; measured with
    /// `hearth-host bench` they cost about 40 % of training throughput.
    Trap,
    /// The component runs without checks; a watchdog thread calls this
    /// function, which ends or restarts the process, once a call overruns.
    /// For a device worker, whose state lives with the coordinator, a
    /// restart loses one round at most.
    EndProcess(fn(Duration) -> !),
}

impl Default for Limits {
    /// 1 GiB and 10 minutes, enforced by a trap: room for evaluating 10,000
    /// images on a Pi 3, small enough that a runaway component cannot take a
    /// device down.
    fn default() -> Self {
        Self {
            memory_bytes: 1 << 30,
            call_timeout: Some(Duration::from_secs(600)),
            on_overrun: OnOverrun::Trap,
        }
    }
}

impl Limits {
    /// Whether the component is compiled with epoch checks.
    pub(crate) fn epoch_checks(&self) -> bool {
        self.call_timeout.is_some() && matches!(self.on_overrun, OnOverrun::Trap)
    }
}
