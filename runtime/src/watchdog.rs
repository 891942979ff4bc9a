//! A thread that ends the process when a component call overruns its time
//! (see [`crate::OnOverrun::EndProcess`]).

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

/// Deadlines of the calls in progress, and the thread that watches them.
pub(crate) struct Watchdog {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Deadline of each call in progress, by call id.
    /// Calls in progress: id, deadline, budget.
    calls: Vec<(u64, Instant, Duration)>,
    next_id: u64,
    stop: bool,
}

/// Clears its call's deadline when dropped (the call returned).
pub(crate) struct CallGuard {
    watchdog: Arc<Watchdog>,
    id: u64,
}

impl Watchdog {
    /// Starts the watchdog thread; `on_overrun(budget)` runs on it when a
    /// call is still in progress `budget` after it started.
    pub(crate) fn start(on_overrun: fn(Duration) -> !) -> std::io::Result<Arc<Self>> {
        let this = Arc::new(Self {
            state: Mutex::new(State {
                calls: Vec::new(),
                next_id: 0,
                stop: false,
            }),
            changed: Condvar::new(),
        });
        let weak = Arc::downgrade(&this);
        thread::Builder::new()
            .name("hearth-watchdog".into())
            .spawn(move || watch(weak, on_overrun))?;
        Ok(this)
    }

    /// Registers a call that must end within `timeout` from now.
    pub(crate) fn begin(self: &Arc<Self>, timeout: Duration) -> CallGuard {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let id = state.next_id;
        state.next_id += 1;
        state.calls.push((id, Instant::now() + timeout, timeout));
        drop(state);
        self.changed.notify_one();
        CallGuard {
            watchdog: self.clone(),
            id,
        }
    }

    /// Ends the watchdog thread.
    pub(crate) fn stop(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stop = true;
        self.changed.notify_one();
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let mut state = self
            .watchdog
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.calls.retain(|&(id, _, _)| id != self.id);
    }
}

/// The watchdog thread: sleeps until the earliest deadline (or a change).
fn watch(watchdog: Weak<Watchdog>, on_overrun: fn(Duration) -> !) {
    loop {
        let Some(dog) = watchdog.upgrade() else {
            return;
        };
        let state = dog.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.stop {
            return;
        }
        let earliest = state.calls.iter().map(|&(_, d, t)| (d, t)).min();
        let now = Instant::now();
        match earliest {
            Some((deadline, budget)) if deadline <= now => {
                drop(state);
                on_overrun(budget);
            }
            Some((deadline, _)) => {
                let _ = dog
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            None => {
                // Wake up now and then, so the thread notices when the
                // runtime is gone even if nobody notifies it.
                let _ = dog
                    .changed
                    .wait_timeout(state, Duration::from_secs(1))
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}
