//! Head starts: a round whose images came ahead, trained a step at a time
//! while the worker would otherwise wait, and finished on the global model
//! its assignment brings (delayed averaging).

use hearth_protocol::{self as proto, Message};

use super::{WorkerSession, shifted};
use crate::Trainer;
use crate::round::Steps;

/// A round trained ahead of its assignment, a step at a time while the
/// device would otherwise wait ([`WorkerSession::work`]).
pub(super) struct Early {
    /// The round.
    round: u64,
    /// What it is trained as.
    start: proto::HeadStart,
    /// Its images, shifted as the round says.
    pixels: Vec<u8>,
    /// Their labels.
    labels: Vec<u8>,
    /// What its progress is measured from: the model it was trained from.
    base: Vec<f32>,
    /// Its steps so far.
    steps: Steps,
    /// Training seconds so far (0 without a clock).
    seconds: f64,
}

impl Early {
    /// True if `a` is the assignment this round is trained for.
    fn answers(&self, a: &proto::Assign) -> bool {
        a.round == self.round
            && a.prefetched
            && a.learning_rate.to_bits() == self.start.learning_rate.to_bits()
            && a.steps == self.start.steps
            && a.shift == self.start.shift
    }
}

impl<T: Trainer> WorkerSession<T> {
    /// The round trained ahead for `a`, if `a` is what it was trained as and
    /// runs on the same component, none being watched (it is dropped
    /// either way: another assignment trains from the model it brings).
    pub(super) fn early_for(&mut self, a: &proto::Assign) -> Option<Early> {
        let early = self.early.take()?;
        let same_code = a.component.is_empty() || a.component == self.running;
        (early.answers(a) && self.watch.is_none() && same_code).then_some(early)
    }

    /// True while a round sent ahead has steps left to train
    /// ([`work`](Self::work) trains the next one).
    pub fn has_work(&self) -> bool {
        self.early
            .as_ref()
            .is_some_and(|e| !e.steps.finished(&e.start.steps))
    }

    /// Trains one step of the round sent ahead with a head start, if any is
    /// left: call it whenever no frame is waiting. Its assignment then
    /// finds that much done. A driver that never calls it trains every
    /// round when its assignment comes, as without head starts.
    pub fn work(&mut self) {
        let clock = self.clock;
        let Some(e) = self.early.as_mut() else {
            return;
        };
        if e.steps.finished(&e.start.steps) {
            return;
        }
        let t0 = clock.map(|c| c());
        let stepped = if e.steps.done == 0 {
            self.trainer
                .set_learning_rate(e.start.learning_rate)
                .map_err(|e| e.to_string())
        } else {
            Ok(())
        }
        .and_then(|()| {
            e.steps
                .next(&mut self.trainer, &e.start.steps, &e.pixels, &e.labels)
        });
        match stepped {
            Ok(()) => {
                if let (Some(clock), Some(t0)) = (clock, t0) {
                    e.seconds += (clock() - t0).max(0.0);
                }
                self.stats.steps_ahead += 1;
            }
            // Its assignment trains the round again and reports the failure.
            Err(_) => self.early = None,
        }
    }

    /// Gets the images just sent ahead ready to train before their
    /// assignment, from the global model the round just answered started
    /// from plus the head start's share of what that round learned, if
    /// the coordinator gave a head start and nothing stands in the way
    /// (the last round failed, or a swapped-to component is watched: then
    /// the assignment trains as usual).
    pub(super) fn start_ahead(&mut self) {
        let Some(p) = self.ahead.as_ref() else {
            return;
        };
        let Some(start) = p.head_start.clone() else {
            return;
        };
        if self.watch.is_some()
            || self
                .answered
                .is_none_or(|r| r.checked_add(1) != Some(p.round))
        {
            return;
        }
        let Ok(mut base) = self.trainer.params() else {
            return;
        };
        // Train from the next global model as far as this worker can know
        // it: its copy of the global model plus its share of its own
        // progress (the others' is unknown; all of its own would be its
        // drift, which the average cancels: at 11 devices, 99.00 % after 10
        // epochs against 99.11-99.20 % from its share over six runs).
        if start.own_share < 1.0
            && let Some(held) = self.compact.held().filter(|h| h.len() == base.len())
        {
            for (b, h) in base.iter_mut().zip(held) {
                *b = h + start.own_share * (*b - h);
            }
            if self.trainer.set_params(&base).is_err() {
                return;
            }
        }
        let pixels = shifted(self.seed, p.round, start.shift, &p.pixels).into_owned();
        self.early = Some(Early {
            round: p.round,
            pixels,
            labels: p.labels.clone(),
            start,
            base,
            steps: Steps::default(),
            seconds: 0.0,
        });
    }

    /// The answer to `a` for the round trained ahead for it: what its steps
    /// so far learned goes on top of the global model `a` brings, the
    /// steps left are trained from there, and the change from that global
    /// model is the result.
    pub(super) fn finish_early(&mut self, a: &proto::Assign, mut e: Early) -> Message {
        let global = match self.compact.params(a) {
            Ok(p) => p.to_vec(),
            Err(reason) => {
                self.stats.failed_rounds += 1;
                return self.error(Some(a.round), reason);
            }
        };
        let clock = self.clock;
        let trainer = &mut self.trainer;
        let mut finish = || -> Result<proto::RoundResult, String> {
            let fail = |e: T::Error| e.to_string();
            if e.steps.done == 0 {
                trainer.set_params(&global).map_err(fail)?;
                trainer.set_learning_rate(a.learning_rate).map_err(fail)?;
            } else {
                let now = trainer.params().map_err(fail)?;
                let moved: Vec<f32> = global
                    .iter()
                    .zip(now.iter().zip(&e.base))
                    .map(|(g, (n, b))| g + (n - b))
                    .collect();
                trainer.set_params(&moved).map_err(fail)?;
            }
            let t0 = clock.map(|c| c());
            while !e.steps.finished(&a.steps) {
                e.steps.next(trainer, &a.steps, &e.pixels, &e.labels)?;
            }
            let mut result = e.steps.result(trainer, a, &global)?;
            if let (Some(clock), Some(t0)) = (clock, t0) {
                result.compute_seconds = (e.seconds + (clock() - t0).max(0.0)) as f32;
            }
            Ok(result)
        };
        match finish() {
            Ok(mut result) => {
                self.compact.pack(&mut result, a.reply_encoding);
                self.answered = Some(a.round);
                self.answered_with(result)
            }
            Err(e) => {
                self.stats.failed_rounds += 1;
                self.error(Some(a.round), format!("round {} failed: {e}", a.round))
            }
        }
    }
}
