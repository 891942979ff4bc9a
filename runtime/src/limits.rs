//! Resource limits of a training component, configured in one place.

use std::time::Duration;

/// What one component instance may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory the component may grow to.
    pub memory_bytes: usize,
    /// Wall time one call may take before it is interrupted (a trap).
    ///
    /// `Some` compiles epoch checks into every loop of the component (that is
    /// how wasmtime interrupts running code); measured here they cost about a
    /// quarter of training throughput, because Cranelift keeps loop-carried
    /// SIMD values on the stack around the check. `None` omits them: a
    /// runaway call then blocks its thread, and the host's own watchdog or
    /// service manager must deal with it.
    pub call_timeout: Option<Duration>,
}

impl Default for Limits {
    /// 1 GiB and 10 minutes: room for evaluating 10,000 images on a Pi 3,
    /// small enough that a runaway component cannot take a device down.
    fn default() -> Self {
        Self {
            memory_bytes: 1 << 30,
            call_timeout: Some(Duration::from_secs(600)),
        }
    }
}
