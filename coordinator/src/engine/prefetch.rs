//! Images sent ahead: the next round's images go to each device while it
//! trains this round, a little after this round's assignments, so that
//! those have the coordinator's link to themselves.

use std::time::Duration;

use hearth_protocol::{self as proto, Message};

use super::Engine;
use super::carry::{images, round_steps};
use super::state::{ConnId, Now, Prefetched};
use crate::strategy::FitInstruction;

/// Share of the devices' expected training time of a round after which
/// the next round's images go out.
pub const PREFETCH_AFTER: f64 = 0.25;

/// The next round's images, to send at `at`.
pub(super) struct DuePrefetch {
    /// When.
    pub at: Now,
    /// The round they are for.
    pub round: u64,
    /// The devices and their instructions.
    pub list: Vec<(ConnId, FitInstruction)>,
}

impl Engine {
    /// Holds the images of `round` (the next) for the devices of `list`
    /// until [`prefetch_delay`](Self::prefetch_delay) has passed; sends them
    /// now if it is zero.
    pub(super) fn schedule_prefetch(
        &mut self,
        now: Now,
        round: u64,
        list: Vec<(ConnId, FitInstruction)>,
    ) {
        self.prefetch_due = Some(DuePrefetch {
            at: now + self.prefetch_delay(&list),
            round,
            list,
        });
        self.send_due_prefetches(now);
    }

    /// How long the next round's images wait after this round's
    /// assignments: [`PREFETCH_AFTER`] of the shortest expected training
    /// time among the devices of `list` (none while a speed is unknown).
    /// Sent at once, the images of the first devices share the
    /// coordinator's link with the assignments of the last ones, and the
    /// round starts late for those (at 11 devices, a first epoch of 6.4 s
    /// measured instead of 5.7 s with the images 40 ms later).
    fn prefetch_delay(&self, list: &[(ConnId, FitInstruction)]) -> Duration {
        let batch = self.state.options.batch as f64;
        let shortest = list
            .iter()
            .map(|(conn, fit)| {
                let speed = self
                    .state
                    .workers
                    .get(conn)
                    .map_or(0.0, |w| w.images_per_second());
                if speed > 0.0 {
                    fit.batches as f64 * batch / speed
                } else {
                    0.0
                }
            })
            .fold(f64::INFINITY, f64::min);
        if shortest.is_finite() {
            Duration::from_secs_f64(shortest * PREFETCH_AFTER)
        } else {
            Duration::ZERO
        }
    }

    /// Sends the held-back images of the next round once their time has
    /// come, to the devices still training this round (one that has
    /// already answered gets its images with its next assignment).
    pub(super) fn send_due_prefetches(&mut self, now: Now) {
        if self.prefetch_due.as_ref().is_none_or(|p| p.at > now) {
            return;
        }
        let Some(due) = self.prefetch_due.take() else {
            return;
        };
        if self.state.round.checked_add(1) != Some(due.round) {
            return;
        }
        let round_batches: usize = due.list.iter().map(|(_, fit)| fit.batches).sum();
        for (conn, fit) in &due.list {
            let busy = self
                .state
                .workers
                .get(conn)
                .is_some_and(|w| w.busy.is_some());
            if busy {
                let own_share = fit.batches as f32 / round_batches.max(1) as f32;
                self.prefetch(now, *conn, due.round, fit, own_share.min(1.0));
            }
        }
    }

    /// Takes as many batches as `fit` gave `conn` this round for its round
    /// `round` and sends their images now, with a head start at `fit`'s
    /// learning rate if the run trains ahead (`own_share`: `conn`'s share
    /// of this round's batches).
    fn prefetch(
        &mut self,
        now: Now,
        conn: ConnId,
        round: u64,
        fit: &FitInstruction,
        own_share: f32,
    ) {
        let shift = self.shift();
        let o = &self.state.options;
        // Server momentum on updates one round old is unstable (74.9 % after
        // an epoch at 11 devices against 96 %): head starts only with
        // momentum on the devices, and not in the first epochs, where the
        // model changes fastest and an update one round old costs most.
        let grown = o.train_ahead_when_grown && self.state.pace.reached_max;
        let train_ahead = (o.train_ahead || grown)
            && o.momentum_on == crate::strategy::MomentumOn::Workers
            && !self.state.synchronous_epoch();
        let (Some(current), Some(w)) = (
            self.state.current.as_mut(),
            self.state.workers.get_mut(&conn),
        ) else {
            return;
        };
        let batches = current.ledger.assign(&w.name, round, fit.batches);
        if batches.is_empty() {
            return;
        }
        let steps = round_steps(&current.ledger, &batches, fit.steps_for(batches.len()));
        let carried = images(&self.train, &current.ledger, &batches, w);
        let head_start = train_ahead.then_some(proto::HeadStart {
            learning_rate: fit.learning_rate,
            steps,
            shift,
            own_share,
        });
        w.prefetched = Some(Prefetched {
            round,
            batches,
            sent: now,
            head_start: head_start.clone(),
        });
        let message = Message::Prefetch(proto::Prefetch {
            round,
            pixels: carried.pixels,
            labels: carried.labels,
            cache: carried.cache,
            head_start,
        });
        self.send(conn, &message);
        self.stock(conn, fit.batches);
    }

    /// Tops up `conn`'s stock to `batches` pending batches it keeps: it is
    /// sent the images of pending batches nobody keeps, which become its
    /// own (the ledger gives them to it first), to keep for the round after
    /// the one just prefetched. Where every image crosses the link (the
    /// first epoch), the link then works a round ahead of the devices
    /// instead of in step with them. Only to a device that keeps samples
    /// and has room for these.
    fn stock(&mut self, conn: ConnId, batches: usize) {
        let batch = self.state.options.batch.max(1);
        let (Some(current), Some(w)) = (
            self.state.current.as_mut(),
            self.state.workers.get_mut(&conn),
        ) else {
            return;
        };
        let room = w.samples.capacity().saturating_sub(w.samples.len()) / batch;
        let wanted = batches.saturating_sub(current.ledger.kept_pending(&w.name));
        if wanted.min(room) == 0 {
            return;
        }
        let reserved = current.ledger.reserve(&w.name, wanted.min(room));
        // A sample it holds (of a batch that came back) is not sent again.
        let ids: Vec<u32> = reserved
            .iter()
            .flat_map(|&b| current.ledger.samples(b).iter().copied())
            .filter(|&id| !w.samples.holds(id))
            .collect();
        if ids.is_empty() {
            return;
        }
        let cache = w.samples.refer(&ids, std::mem::take(&mut w.samples_reset));
        let sent: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        self.train.gather(&sent, &mut pixels, &mut labels);
        let message = Message::Stock(proto::Stock {
            pixels,
            labels,
            cache,
        });
        self.send(conn, &message);
    }

    /// Puts `conn`'s images sent ahead back in the queue; returns how many
    /// batches went back.
    pub(super) fn drop_prefetch(&mut self, conn: ConnId) -> usize {
        let (Some(current), Some(w)) = (
            self.state.current.as_mut(),
            self.state.workers.get_mut(&conn),
        ) else {
            return 0;
        };
        match w.prefetched.take() {
            Some(ahead) => current.ledger.requeue(&w.name, &ahead.batches),
            None => 0,
        }
    }
}
