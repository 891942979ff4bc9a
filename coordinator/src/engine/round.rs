//! One round: hand out batches (as the strategy says), take results in,
//! close it (the strategy aggregates).

use std::sync::Arc;
use std::time::Duration;

use hearth_protocol::{self as proto, RoundResult};

use super::carry::{Images, images, round_steps};
use super::guard::{self, Verdict};
use super::notice::{Notice, Requeue, RoundReport};
use super::state::{Busy, ConnId, Now, Phase, Prefetched, RoundProgress};
use super::{Engine, checks};
use crate::strategy::{FitInstruction, FitResult, RoundContext, WorkerView};

/// How long a worker may take to answer a round of `images`: four times what
/// its measured speed predicts plus 5 s (for a worker whose speed is not
/// known yet: `limit`), never more than `limit`. A frozen tab or a stopped
/// process then holds up a round for seconds, not for the whole round timeout.
pub fn answer_deadline(images_per_second: f64, images: usize, limit: Duration) -> Duration {
    if images_per_second > 0.0 {
        Duration::from_secs_f64(4.0 * images as f64 / images_per_second + 5.0).min(limit)
    } else {
        limit
    }
}

/// A device whose speed is not known yet is allowed to be this many times
/// slower than the slowest device measured so far (or than one that has just
/// answered the same round) before its batches go back to the queue.
const NEWCOMER_SLOWDOWN: f64 = 10.0;

/// A worker on probation gets a batch at most this often.
const PROBATION_GAP: Duration = Duration::from_secs(1);

/// Workers on probation (`suspects`) get one batch at most, and only one
/// nobody else is left without: a suspect's batch goes to a trusted worker
/// the strategy gave nothing.
fn probation(instructions: &mut [FitInstruction], suspects: &[bool]) {
    for i in 0..instructions.len() {
        if !suspects[i] || instructions[i].batches == 0 {
            continue;
        }
        instructions[i].set_batches(1);
        let idle = (0..instructions.len()).find(|&j| !suspects[j] && instructions[j].batches == 0);
        if let Some(j) = idle {
            instructions[i].set_batches(0);
            instructions[j].set_batches(1);
        }
    }
}

impl Engine {
    /// Starts a round among the available workers; false if the strategy
    /// gave nobody anything.
    pub(super) fn start_round(&mut self, now: Now) -> bool {
        let (steps_done, total) = self.run_batches();
        let o = &self.state.options;
        let lr = o
            .lr_schedule
            .rate(o.lr, steps_done as usize, total as usize);
        let Some(current) = self.state.current.as_ref() else {
            return false;
        };
        let conns: Vec<ConnId> = self
            .state
            .workers
            .iter()
            .filter(|(_, w)| !w.missed && w.not_before <= now)
            .map(|(&c, _)| c)
            .collect();
        let views: Vec<WorkerView> = conns
            .iter()
            .map(|c| WorkerView {
                name: self.state.workers[c].name.clone(),
                images_per_second: self.state.workers[c].images_per_second(),
            })
            .collect();
        let context = RoundContext {
            round: self.state.round + 1,
            pending: current.ledger.pending(),
            learning_rate: lr,
            max_learning_rate: o.lr_max(),
            growth: self.state.pace.growth,
            early: self.state.synchronous_epoch(),
        };
        let mut instructions = self.strategy.configure_fit(&context, &views);
        let suspects: Vec<bool> = views
            .iter()
            .map(|v| self.state.guard.suspects.contains_key(&v.name))
            .collect();
        probation(&mut instructions, &suspects);
        let next = self.state.round + 1;
        for (conn, fit) in conns.iter().zip(instructions.iter_mut()) {
            // A worker holding this round's images trains on them, at the
            // learning rate it may have started with.
            if let Some(p) = self.state.workers[conn]
                .prefetched
                .as_ref()
                .filter(|p| p.round == next)
            {
                fit.set_batches(fit.batches.max(1));
                if let Some(start) = &p.head_start {
                    fit.learning_rate = start.learning_rate;
                }
            }
        }
        // Images sent ahead to a worker that sits this round out go back.
        let idle: Vec<ConnId> = self
            .state
            .workers
            .iter()
            .filter(|(c, w)| {
                w.prefetched.is_some()
                    && !conns
                        .iter()
                        .zip(&instructions)
                        .any(|(k, f)| k == *c && f.batches > 0)
            })
            .map(|(&c, _)| c)
            .collect();
        for conn in idle {
            self.drop_prefetch(conn);
        }
        if instructions.iter().all(|i| i.batches == 0) {
            return false;
        }
        for (conn, (fit, &suspect)) in conns.iter().zip(instructions.iter().zip(&suspects)) {
            if suspect
                && fit.batches > 0
                && let Some(w) = self.state.workers.get_mut(conn)
            {
                w.not_before = now + PROBATION_GAP;
            }
        }
        self.state.round += 1;
        self.state.phase = Phase::Round;
        self.state.round_progress = RoundProgress {
            model_norm: guard::norm(&self.state.global),
            ..Default::default()
        };
        let round = self.state.round;
        let peak = instructions
            .iter()
            .map(|f| f.learning_rate)
            .fold(0.0f32, f32::max);
        let o = &self.state.options;
        self.state.guard_rate = if o.momentum_on == crate::strategy::MomentumOn::Workers {
            // A velocity decays by the momentum once per local step.
            let decay = o.momentum.powi(o.local_steps as i32);
            peak.max(self.state.guard_rate * decay)
        } else {
            peak
        };
        for (conn, fit) in conns.iter().zip(&instructions) {
            if fit.batches > 0 {
                self.assign(now, *conn, round, fit);
            }
        }
        // Then the next round's images: they travel while the devices train.
        if self.state.options.prefetch {
            let list = conns
                .iter()
                .copied()
                .zip(instructions)
                .filter(|(_, fit)| fit.batches > 0)
                .collect();
            self.schedule_prefetch(now, round + 1, list);
        }
        true
    }

    /// Largest random shift of this epoch's images.
    pub(super) fn shift(&self) -> u8 {
        let o = &self.state.options;
        if self.state.epoch > o.shift_after {
            o.shift
        } else {
            0
        }
    }

    /// Takes `fit.batches` batches from the ledger for `conn` and sends them
    /// with the global parameters.
    fn assign(&mut self, now: Now, conn: ConnId, round: u64, fit: &FitInstruction) {
        let limit = self.state.options.round_timeout();
        let slowest = self
            .state
            .workers
            .values()
            .map(|w| w.images_per_second())
            .filter(|&s| s > 0.0)
            .min_by(f64::total_cmp);
        let component_for = self.component_for(conn);
        let shift = self.shift();
        let (Some(current), Some(w)) = (
            self.state.current.as_mut(),
            self.state.workers.get_mut(&conn),
        ) else {
            return;
        };
        let ahead = w.prefetched.take_if(|p| p.round == round);
        let prefetched = ahead.is_some();
        // A round started ahead began when its images went out, and is
        // split as its head start said.
        let (batches, sent, split) = match ahead {
            Some(Prefetched {
                batches,
                sent,
                head_start: Some(start),
                ..
            }) => (batches, sent, Some(start.steps)),
            Some(p) => (p.batches, now, None),
            None => (
                current.ledger.assign(&w.name, round, fit.batches),
                now,
                None,
            ),
        };
        if batches.is_empty() {
            return;
        }
        let swap_to = component_for;
        let runs_on = if swap_to.is_empty() {
            w.component.clone()
        } else {
            swap_to.clone()
        };
        let steps = split.unwrap_or_else(|| {
            round_steps(&current.ledger, &batches, fit.steps_for(batches.len()))
        });
        let carried = if prefetched {
            Images {
                pixels: Vec::new(),
                labels: Vec::new(),
                cache: None,
            }
        } else {
            images(&self.train, &current.ledger, &batches, w)
        };
        let samples = steps.iter().map(|&n| n as usize).sum::<usize>();
        let down = self.downlinks.downlink(
            &mut w.mirror,
            w.encoding,
            &self.state.global,
            self.state.version,
        );
        let reply_encoding = w.encoding;
        let speed = match (w.images_per_second(), slowest) {
            (s, _) if s > 0.0 => s,
            (_, Some(slowest)) => slowest / NEWCOMER_SLOWDOWN,
            _ => 0.0,
        };
        w.busy = Some(Busy {
            round,
            batches,
            samples: samples as u32,
            version: self.state.version,
            reply: fit.reply,
            learning_rate: fit.learning_rate.max(self.state.guard_rate),
            sent,
            deadline: now + answer_deadline(speed, samples, limit),
            component: runs_on,
        });
        let assign = proto::Assign {
            round,
            params_version: self.state.version,
            learning_rate: fit.learning_rate,
            steps,
            reply: fit.reply,
            // The bytes below stand for the values: no copy of them.
            params: Vec::new(),
            params_encoding: down.encoding,
            params_base: down.base,
            reply_encoding,
            shift,
            prefetched,
            pixels: carried.pixels,
            labels: carried.labels,
            cache: carried.cache,
            component: swap_to,
        };
        let params = proto::EncodedParams {
            bytes: &down.wire,
            len: down.values.len(),
        };
        self.send_frame(conn, proto::encode_assign(&assign, Some(params)));
    }

    /// A result from `conn`: checked, then credited to the ledger and kept
    /// for aggregation, or refused (and its batches requeued if it answers
    /// the worker's round).
    pub(super) fn result(&mut self, now: Now, conn: ConnId, mut r: RoundResult) {
        let params = self.state.global.len();
        let Some(busy) = self.state.workers.get(&conn).and_then(|w| w.busy.clone()) else {
            let reason = "a result for a round this worker was not given".to_string();
            self.refuse(conn, Some(r.round), reason);
            return;
        };
        if let Some(reason) = checks::problem(&r, &busy, params) {
            if r.round == busy.round {
                // This round's result is unusable: its batches go back.
                self.release(conn, Requeue::Rejected);
            }
            self.refuse(conn, Some(r.round), reason);
            return;
        }
        let model_norm = self.state.round_progress.model_norm;
        let o = &self.state.options;
        let (guard, factor) = (o.update_guard, f64::from(o.norm_factor));
        let verdict = self.state.guard.judge(
            &mut r,
            busy.batches.len(),
            f64::from(busy.learning_rate),
            model_norm,
            guard,
            factor,
        );
        let verdict = match verdict {
            Ok(v) => v,
            Err(reason) => {
                self.release(conn, Requeue::Rejected);
                self.refuse(conn, Some(r.round), reason);
                return;
            }
        };
        self.credit(now, conn, &busy, r, verdict);
    }

    /// A result at `speed` images per second came in: workers of the same
    /// round whose speed is unknown (a device that just joined, or one that
    /// never answers) may now take at most [`NEWCOMER_SLOWDOWN`] times as long.
    fn hurry_newcomers(&mut self, speed: f64) {
        let limit = self.state.options.round_timeout();
        for w in self.state.workers.values_mut() {
            if w.images_per_second() > 0.0 {
                continue;
            }
            if let Some(b) = w.busy.as_mut() {
                let allowed = answer_deadline(speed / NEWCOMER_SLOWDOWN, b.samples as usize, limit);
                b.deadline = b.deadline.min(b.sent + allowed);
            }
        }
    }

    /// Credits a checked result: the ledger, the worker's figures, the round's
    /// results.
    fn credit(&mut self, now: Now, conn: ConnId, busy: &Busy, r: RoundResult, verdict: Verdict) {
        let (Some(current), Some(w)) = (
            self.state.current.as_mut(),
            self.state.workers.get_mut(&conn),
        ) else {
            return;
        };
        w.busy = None;
        current.components.insert(busy.component.clone());
        let mut entries = match current.ledger.complete(&w.name, busy.round, &busy.batches) {
            Ok(entries) => entries,
            Err(reason) => {
                self.refuse(conn, Some(r.round), reason);
                return;
            }
        };
        w.rounds += 1;
        // A result too small to measure proves nothing, good or bad.
        let measured = verdict != Verdict::Unmeasured;
        if measured {
            w.strikes = 0;
            w.streak += 1;
        }
        let trusted = measured
            && w.streak >= self.state.options.strikes.max(1)
            && self.state.guard.suspects.remove(&w.name).is_some();
        w.images += u64::from(busy.samples);
        let took = now.saturating_sub(busy.sent).as_secs_f64();
        w.busy_seconds += took;
        // A reported training time counts if it is possible: positive and
        // no longer than the round trip (a liar gains nothing but a tight deadline).
        let computed = f64::from(r.compute_seconds);
        if computed.is_finite() && computed > 0.0 && computed <= took {
            w.compute_seconds += computed;
            w.timed_images += u64::from(busy.samples);
            self.state.pace.credit(computed);
        }
        // Where a round's time goes (the lab's rounds, read from the log).
        tracing::debug!(
            worker = %w.name,
            round = busy.round,
            samples = busy.samples,
            sent_ms = busy.sent.as_millis() as u64,
            took_ms = (took * 1e3) as u64,
            compute_ms = (computed * 1e3) as u64,
            "result timing"
        );
        let worker = w.name.clone();
        if took > 0.0 {
            self.hurry_newcomers(f64::from(busy.samples) / took);
        }
        let t = &mut self.state.round_progress.totals;
        t.loss_sum += r.loss_sum;
        t.correct += u64::from(r.correct);
        t.samples += u64::from(busy.samples);
        t.batches += busy.batches.len() as u64;
        self.state.round_progress.results.push(FitResult {
            worker: worker.clone(),
            samples: r.samples,
            update: r.values,
        });
        if let Verdict::Clipped { from, to } = verdict {
            self.notice(Notice::Clipped {
                worker: worker.clone(),
                from,
                to,
            });
        }
        if trusted {
            self.notice(Notice::Trusted { worker });
        }
        for e in &mut entries {
            e.component.clone_from(&busy.component);
        }
        self.ran_on(conn, busy.round, &busy.component);
        self.notice(Notice::Completed(entries));
    }

    /// Every worker of the round answered or was given up on: aggregate,
    /// report, and end the epoch if its ledger is complete.
    pub(super) fn close_round(&mut self, now: Now) {
        let mut progress = std::mem::take(&mut self.state.round_progress);
        // Deterministic order, whatever order results arrived in.
        progress.results.sort_by(|a, b| a.worker.cmp(&b.worker));
        let changed = self.strategy.aggregate_fit(
            &mut self.state.global,
            &progress.results,
            &progress.failures,
        );
        if changed {
            self.state.version += 1;
        }
        let o = &self.state.options;
        // Rounds grow only after the first `--train-ahead-after` epochs
        // (they keep the steps the accuracy was measured with), and only
        // with momentum on the devices: server momentum on the change of
        // many local steps overshoots (3 hosts at 16 steps ended below 95 %).
        if !self.state.synchronous_epoch()
            && o.momentum_on == crate::strategy::MomentumOn::Workers
            && let Some(g) = self.state.pace.round_closed(
                now,
                progress.results.len(),
                o.local_steps,
                o.max_local_steps,
            )
        {
            let local_steps = o.local_steps * g.growth;
            self.notice(Notice::Paced {
                local_steps,
                more: g.more,
                busy: g.busy,
            });
        }
        let t = &progress.totals;
        self.state.steps_done += t.batches;
        let Some(current) = self.state.current.as_mut() else {
            return;
        };
        current.totals.add(t);
        let ledger = &current.ledger;
        let epoch_batches = (ledger.batches() - ledger.pending(), ledger.batches());
        let complete = ledger.is_complete();
        let started = current.started;
        let report = RoundReport {
            epoch: self.state.epoch,
            round: self.state.round,
            train_loss: t.loss_sum / t.samples.max(1) as f64,
            train_accuracy: t.correct as f64 / t.samples.max(1) as f64,
            samples: t.samples,
            epoch_batches,
            run_batches: self.run_batches(),
            connected: self.state.workers.len(),
            model: changed.then(|| (self.state.version, Arc::new(self.state.global.clone()))),
        };
        self.notice(Notice::RoundFinished(report));
        self.publish_workers();
        self.state.phase = Phase::Idle;
        if complete {
            self.end_epoch(now.saturating_sub(started));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_measured_speed_within_the_round_timeout() {
        let limit = Duration::from_secs(120);
        assert_eq!(answer_deadline(0.0, 256, limit), limit);
        assert_eq!(answer_deadline(1000.0, 500, limit), Duration::from_secs(7));
        assert_eq!(answer_deadline(1.0, 1000, limit), limit);
    }
}
