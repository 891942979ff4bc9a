//! A thread that ends the process when a component call overruns its time
//! (see [`crate::OnOverrun::EndProcess`]).

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

/// How long the watching thread sleeps with no call in progress.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// Deadlines of the calls in progress, and the thread that watches them.
pub(crate) struct Watchdog {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// Calls in progress: id, deadline, budget.
    calls: Vec<(u64, Instant, Duration)>,
    next_id: u64,
    stop: bool,
    /// When the watching thread wakes up on its own (none: it is awake and
    /// will look at the calls before it sleeps again). A call due later
    /// need not wake it: a training step is one call, and on a device
    /// held to a fraction of a core every thread switch costs.
    sleeping_until: Option<Instant>,
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
                sleeping_until: None,
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
        let deadline = Instant::now() + timeout;
        state.calls.push((id, deadline, timeout));
        let wake = state.sleeping_until.is_some_and(|t| deadline < t);
        drop(state);
        if wake {
            self.changed.notify_one();
        }
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
        let mut state = dog.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.sleeping_until = None;
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
                state.sleeping_until = Some(deadline);
                let _ = dog
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            None => {
                // Wake up now and then, so the thread notices when the
                // runtime is gone even if nobody notifies it.
                state.sleeping_until = Some(now + IDLE_WAKE);
                let _ = dog
                    .changed
                    .wait_timeout(state, IDLE_WAKE)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    static FIRED: AtomicBool = AtomicBool::new(false);

    /// Records the overrun and parks the watching thread for good.
    fn record(_: Duration) -> ! {
        FIRED.store(true, Ordering::SeqCst);
        loop {
            thread::park();
        }
    }

    #[test]
    fn a_call_due_before_the_thread_wakes_wakes_it_and_one_due_later_does_not_need_to() {
        let dog = Watchdog::start(record).expect("a thread");
        // Let the thread fall asleep with no call in progress (for a second).
        thread::sleep(Duration::from_millis(50));
        // A call due later than that: nothing to do before it returns.
        drop(dog.begin(Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(50));
        assert!(!FIRED.load(Ordering::SeqCst));
        // A call due well before the thread would wake on its own.
        let started = Instant::now();
        let _call = dog.begin(Duration::from_millis(100));
        while !FIRED.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(5));
        }
        let took = started.elapsed();
        assert!(FIRED.load(Ordering::SeqCst), "the overrun was seen");
        // The thread would wake on its own about 0.9 s after the call began.
        assert!(
            took < Duration::from_millis(600),
            "on time ({took:?}), not when the thread woke anyway"
        );
    }
}
