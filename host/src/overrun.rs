//! What a device does when a component call overruns its time limit.
//!
//! Hosts run the component without wasmtime's epoch checks (they cost about
//! 40 % of training throughput, see `hearth-host bench`), so a runaway call
//! cannot be interrupted. The runtime's watchdog calls one of these instead:
//! one-shot commands stop with an error, and `work` restarts itself in place.

use std::time::Duration;

/// Exit status of a process stopped because a component call overran.
pub const EXIT_OVERRUN: i32 = 75;

/// Environment variable counting in-place restarts after overruns.
pub const RESTARTS_VAR: &str = "HEARTH_OVERRUN_RESTARTS";

/// Prints why, and exits with [`EXIT_OVERRUN`].
pub fn exit(limit: Duration) -> ! {
    tracing::error!(limit = ?limit, "a component call ran past its time limit; stopping");
    std::process::exit(EXIT_OVERRUN)
}

/// Replaces this process with a fresh copy of itself (same program, same
/// arguments, same process id; one more in [`RESTARTS_VAR`]). The
/// coordinator sees the connection drop and gives the round's batches to
/// other workers; the new process reconnects after a backoff. Where that is
/// impossible, exits with [`EXIT_OVERRUN`] for the service manager.
pub fn restart(limit: Duration) -> ! {
    let restarts = restarts_so_far() + 1;
    tracing::error!(
        limit = ?limit,
        restarts,
        "a component call ran past its time limit; restarting in place"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        match std::env::current_exe() {
            Ok(exe) => {
                // exec only returns on failure. The runaway call is spinning
                // in wasm code on another thread and holds no locks of ours.
                let err = std::process::Command::new(exe)
                    .args(std::env::args_os().skip(1))
                    .env(RESTARTS_VAR, restarts.to_string())
                    .exec();
                tracing::error!(error = %err, "cannot restart in place");
            }
            Err(e) => tracing::error!(error = %e, "cannot find this program to restart it"),
        }
    }
    std::process::exit(EXIT_OVERRUN)
}

/// How many times this process was restarted in place after an overrun.
pub fn restarts_so_far() -> u32 {
    std::env::var(RESTARTS_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
