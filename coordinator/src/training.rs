//! The training loop: epochs of rounds over the ledger, run on its own thread.
//!
//! Per round: the strategy says how many batches each connected worker gets;
//! the ledger hands them out; the images and the global parameters go out in
//! one `Assign` frame per worker; results are validated (right round, right
//! worker, right length, finite) and aggregated; anything lost or rejected
//! goes back to the queue. After each epoch the global model is evaluated on
//! the test set inside the same wasmtime component the devices run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hearth_mnist::Mnist;
use hearth_protocol::{self as proto, Message};
use hearth_runtime::ComponentModel;
use hearth_worker::LrSchedule;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::dashboard::{Dashboard, EpochPoint, RoundPoint, WorkerRow};
use crate::ledger::{BatchId, Ledger};
use crate::session::{ConnId, Event};
use crate::strategy::{Contribution, Strategy, WorkerView, validate};

/// Settings of a training run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per local step.
    pub batch: usize,
    /// Peak learning rate and its schedule.
    pub lr: f32,
    /// Schedule over all rounds.
    pub schedule: LrSchedule,
    /// Ledger shuffle seed.
    pub seed: u64,
    /// Workers to wait for before the first round.
    pub min_workers: usize,
    /// A worker that has not answered a round in this time loses its batches.
    pub round_timeout: Duration,
    /// Give up if too few workers are connected for this long (`None`: wait
    /// forever, as a server for the household's devices should).
    pub join_timeout: Option<Duration>,
    /// Where metrics, ledger, model and summary go.
    pub out: PathBuf,
    /// Hide progress bars.
    pub quiet: bool,
}

/// A connected worker.
struct Worker {
    name: String,
    kind: proto::WorkerKind,
    component: String,
    frames: UnboundedSender<Vec<u8>>,
    /// The round it is working on and its batches.
    busy: Option<(u64, Vec<BatchId>, Instant)>,
    /// When its current round's batches go back to the queue if it has not answered.
    deadline: Instant,
    /// It missed a deadline and has not been heard from since: no new batches
    /// until it answers (a frozen tab or stopped process would otherwise hold
    /// up every round).
    missed: bool,
    rounds: u64,
    images: u64,
    busy_seconds: f64,
    bytes_in: u64,
    bytes_out: u64,
    rejected: u64,
}

impl Worker {
    /// Counts a frame from this worker, which also shows it is alive again.
    fn heard(&mut self, bytes: usize) {
        self.bytes_in += bytes as u64;
        if self.missed {
            self.missed = false;
            tracing::info!(worker = %self.name, "answers again; back in the rounds");
        }
    }

    fn images_per_second(&self) -> f64 {
        if self.busy_seconds > 0.0 {
            self.images as f64 / self.busy_seconds
        } else {
            0.0
        }
    }

    fn send(&mut self, message: &Message) {
        let frame = proto::encode(message);
        self.bytes_out += frame.len() as u64;
        // A closed channel means the session ended; its Left event follows.
        let _ = self.frames.send(frame);
    }
}

/// Per-worker totals, in the summary and the per-epoch table.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerReport {
    name: String,
    kind: proto::WorkerKind,
    component: String,
    rounds: u64,
    images: u64,
    images_per_second: f64,
    bytes_sent_to: u64,
    bytes_received_from: u64,
    rejected_results: u64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Serialize)]
struct EpochMetrics {
    epoch: usize,
    rounds: u64,
    wall_seconds: f64,
    train_loss: f64,
    train_accuracy: f64,
    test_loss: f64,
    test_accuracy: f64,
    workers: usize,
    bytes_sent: u64,
    bytes_received: u64,
    requeued_batches: u64,
    rejected_results: u64,
}

/// What a finished run reports.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Strategy name.
    pub strategy: String,
    /// Test accuracy after the last epoch.
    pub final_test_accuracy: f64,
    /// Per-epoch training accuracy (of the workers, before each step).
    pub train_accuracy: Vec<f64>,
    /// Per-epoch test accuracy.
    pub test_accuracy: Vec<f64>,
    /// Per-epoch wall time.
    pub epoch_seconds: Vec<f64>,
    /// Bytes on the wire per epoch (both directions).
    pub bytes_per_epoch: Vec<u64>,
    /// Totals per worker name.
    pub workers: Vec<WorkerReport>,
}

/// The loop's state.
pub struct Trainer {
    plan: Plan,
    data: Mnist,
    events: Receiver<Event>,
    strategy: Box<dyn Strategy>,
    evaluator: ComponentModel,
    global: Vec<f32>,
    version: u64,
    round: u64,
    workers: BTreeMap<ConnId, Worker>,
    /// Totals of workers that left, by name.
    departed: BTreeMap<String, WorkerReport>,
    ledger_out: BufWriter<File>,
    metrics_out: BufWriter<File>,
    dashboard: Dashboard,
    /// Architecture of the global model (for the worker list).
    arch: String,
}

impl Trainer {
    /// Prepares a run; `evaluator` holds the initial global model.
    pub fn new(
        plan: Plan,
        data: Mnist,
        events: Receiver<Event>,
        mut strategy: Box<dyn Strategy>,
        mut evaluator: ComponentModel,
        dashboard: Dashboard,
    ) -> Result<Self> {
        std::fs::create_dir_all(&plan.out)
            .with_context(|| format!("creating {}", plan.out.display()))?;
        let open = |name: &str| -> Result<BufWriter<File>> {
            let p = plan.out.join(name);
            Ok(BufWriter::new(
                File::create(&p).with_context(|| format!("creating {}", p.display()))?,
            ))
        };
        let global = evaluator.params()?;
        strategy.initialize(&global);
        Ok(Self {
            ledger_out: open("ledger.jsonl")?,
            metrics_out: open("metrics.jsonl")?,
            plan,
            data,
            events,
            strategy,
            evaluator,
            global,
            version: 0,
            round: 0,
            workers: BTreeMap::new(),
            departed: BTreeMap::new(),
            arch: dashboard.model().arch,
            dashboard,
        })
    }

    /// Runs every epoch, then says goodbye to the workers.
    pub fn run(mut self) -> Result<(Summary, Vec<f32>)> {
        let n = self.data.train.len();
        let rounds_per_epoch = n.div_ceil(self.plan.batch) as u64;
        let total_steps = rounds_per_epoch * self.plan.epochs as u64;
        let mut summary = Summary {
            strategy: self.strategy.name(),
            final_test_accuracy: 0.0,
            train_accuracy: Vec::new(),
            test_accuracy: Vec::new(),
            epoch_seconds: Vec::new(),
            bytes_per_epoch: Vec::new(),
            workers: Vec::new(),
        };
        let mut steps_done = 0u64;
        // Two bars: the whole run, and the current epoch.
        let bars = if self.plan.quiet {
            indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
        } else {
            indicatif::MultiProgress::new()
        };
        let overall = bars.add(progress(total_steps, "overall", String::new()));
        for epoch in 1..=self.plan.epochs {
            let mut ledger = Ledger::new(epoch, n, self.plan.batch, self.plan.seed);
            self.dashboard.set_progress(epoch, 0, ledger.batches());
            let bar = bars.add(progress(
                ledger.batches() as u64,
                "epoch",
                format!("{epoch}/{}", self.plan.epochs),
            ));
            let start = Instant::now();
            let bytes_before = self.bytes_total();
            let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0u64, 0u64);
            let (mut requeued, mut rejected, first_round) = (0u64, 0u64, self.round);
            while !ledger.is_complete() {
                self.wait_for_workers()?;
                let lr = self.plan.schedule.rate(
                    self.plan.lr,
                    steps_done as usize,
                    total_steps as usize,
                );
                self.dashboard.set_phase("training");
                let outcome = self.play_round(&mut ledger, lr)?;
                self.dashboard.set_progress(
                    epoch,
                    ledger.batches() - ledger.pending(),
                    ledger.batches(),
                );
                self.dashboard.record_round(
                    RoundPoint {
                        round: self.round,
                        epoch,
                        train_loss: outcome.loss_sum / outcome.samples.max(1) as f64,
                        train_accuracy: outcome.correct as f64 / outcome.samples.max(1) as f64,
                        samples: outcome.samples,
                    },
                    outcome
                        .aggregated
                        .then_some((self.version, &self.global[..])),
                );
                self.publish_workers();
                loss_sum += outcome.loss_sum;
                correct += outcome.correct;
                seen += outcome.samples;
                requeued += outcome.requeued;
                rejected += outcome.rejected;
                steps_done += outcome.batches;
                bar.set_position((ledger.batches() - ledger.pending()) as u64);
                overall.set_position(steps_done);
                bar.set_message(format!("{} workers", self.workers.len()));
            }
            bar.finish_and_clear();
            bars.remove(&bar);
            let wall = start.elapsed().as_secs_f64();
            self.evaluator.set_params(&self.global)?;
            let test = &self.data.test;
            let eval = self.evaluator.evaluate(
                test.pixels(),
                test.labels.as_slice().unwrap_or(&[]),
                false,
            )?;
            let bytes = self.bytes_total();
            let m = EpochMetrics {
                epoch,
                rounds: self.round - first_round,
                wall_seconds: wall,
                train_loss: loss_sum / seen.max(1) as f64,
                train_accuracy: correct as f64 / seen.max(1) as f64,
                test_loss: eval.loss_sum / eval.count.max(1) as f64,
                test_accuracy: eval.correct as f64 / eval.count.max(1) as f64,
                workers: self.workers.len(),
                bytes_sent: bytes.0 - bytes_before.0,
                bytes_received: bytes.1 - bytes_before.1,
                requeued_batches: requeued,
                rejected_results: rejected,
            };
            let line = format!(
                "epoch {epoch:>2}/{}  {:>6.1} s  {} rounds  train loss {:.4} acc {:.2} %  test acc {:.2} %  {:.1} MB on the wire",
                self.plan.epochs,
                m.wall_seconds,
                m.rounds,
                m.train_loss,
                100.0 * m.train_accuracy,
                100.0 * m.test_accuracy,
                (m.bytes_sent + m.bytes_received) as f64 / 1e6
            );
            bars.suspend(|| {
                println!("{line}");
                self.print_workers();
            });
            serde_json::to_writer(&mut self.metrics_out, &m)?;
            writeln!(self.metrics_out)?;
            self.metrics_out.flush()?;
            self.ledger_out.flush()?;
            summary.train_accuracy.push(m.train_accuracy);
            summary.test_accuracy.push(m.test_accuracy);
            summary.epoch_seconds.push(m.wall_seconds);
            summary
                .bytes_per_epoch
                .push(m.bytes_sent + m.bytes_received);
            summary.final_test_accuracy = m.test_accuracy;
            self.dashboard.record_epoch(EpochPoint {
                epoch,
                seconds: m.wall_seconds,
                train_loss: m.train_loss,
                train_accuracy: m.train_accuracy,
                test_loss: m.test_loss,
                test_accuracy: m.test_accuracy,
                bytes: m.bytes_sent + m.bytes_received,
            });
        }
        overall.finish_and_clear();
        for w in self.workers.values_mut() {
            w.send(&Message::Goodbye(proto::Goodbye {
                reason: "training finished".into(),
            }));
        }
        summary.workers = self.reports();
        self.close_sessions();
        self.publish_workers();
        self.dashboard.set_phase("finished");
        Ok((summary, self.global))
    }

    /// Drops every session's sender (each session then sends what is queued,
    /// the goodbye included, and closes) and waits up to 5 s for them to end,
    /// so no worker is left without its goodbye when the process exits.
    fn close_sessions(&mut self) {
        let mut open: Vec<ConnId> = self.workers.keys().copied().collect();
        for (_, w) in std::mem::take(&mut self.workers) {
            absorb(&mut self.departed, report(&w));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let goodbye = proto::encode(&Message::Goodbye(proto::Goodbye {
            reason: "training finished".into(),
        }));
        while !open.is_empty() {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Event::Left { conn }) => open.retain(|&c| c != conn),
                // Joined after the end: tell it, and its sender drops right here.
                Ok(Event::Joined { frames, .. }) => {
                    let _ = frames.send(goodbye.clone());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    fn bytes_total(&self) -> (u64, u64) {
        let live = self
            .workers
            .values()
            .fold((0, 0), |a, w| (a.0 + w.bytes_out, a.1 + w.bytes_in));
        self.departed.values().fold(live, |a, w| {
            (a.0 + w.bytes_sent_to, a.1 + w.bytes_received_from)
        })
    }

    /// Shows the worker list on the dashboard.
    fn publish_workers(&self) {
        let arch = self.arch.clone();
        let mut rows: Vec<WorkerRow> = self
            .reports()
            .into_iter()
            .map(|r| WorkerRow {
                connected: self.workers.values().any(|w| w.name == r.name),
                kind: match r.kind {
                    proto::WorkerKind::Host => "host".into(),
                    proto::WorkerKind::Browser => "browser".into(),
                },
                arch: arch.clone(),
                component: r.component.chars().take(12).collect(),
                name: r.name,
                rounds: r.rounds,
                images: r.images,
                images_per_second: r.images_per_second,
                bytes_sent_to: r.bytes_sent_to,
                bytes_received_from: r.bytes_received_from,
            })
            .collect();
        rows.sort_by_key(|r| !r.connected);
        self.dashboard.set_workers(rows);
    }

    /// Totals per worker name, over every connection it had.
    fn reports(&self) -> Vec<WorkerReport> {
        let mut all = self.departed.clone();
        for w in self.workers.values() {
            absorb(&mut all, report(w));
        }
        all.into_values().collect()
    }

    fn print_workers(&self) {
        if self.plan.quiet {
            return;
        }
        println!(
            "  {:<16} {:>7} {:>9} {:>9} {:>12} {:>12}",
            "worker", "rounds", "images", "img/s", "sent MB", "received MB"
        );
        for r in self.reports() {
            println!(
                "  {:<16} {:>7} {:>9} {:>9.0} {:>12.2} {:>12.2}",
                r.name,
                r.rounds,
                r.images,
                r.images_per_second,
                r.bytes_sent_to as f64 / 1e6,
                r.bytes_received_from as f64 / 1e6
            );
        }
    }

    /// Blocks until enough workers are connected: `min_workers` before the
    /// first round, one after that (workers come and go during training).
    fn wait_for_workers(&mut self) -> Result<()> {
        let mut logged = false;
        let since = Instant::now();
        let needed = if self.round == 0 {
            self.plan.min_workers.max(1)
        } else {
            1
        };
        while self.available() < needed {
            if !logged {
                tracing::info!(
                    connected = self.workers.len(),
                    available = self.available(),
                    needed,
                    "waiting for workers"
                );
                logged = true;
            }
            match self.events.recv_timeout(Duration::from_secs(1)) {
                Ok(event) => self.handle_idle(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the server stopped"),
            }
            if let Some(limit) = self.plan.join_timeout
                && since.elapsed() > limit
            {
                anyhow::bail!(
                    "only {} of {needed} workers connected within {} s (were they rejected? see their errors above)",
                    self.workers.len(),
                    limit.as_secs()
                );
            }
        }
        Ok(())
    }

    /// Connected workers that are not silent past a deadline.
    fn available(&self) -> usize {
        self.workers.values().filter(|w| !w.missed).count()
    }

    /// Events outside a round (or from workers not in it).
    fn handle_idle(&mut self, event: Event) {
        match event {
            Event::Joined {
                conn,
                name,
                capabilities,
                component,
                frames,
            } => {
                tracing::info!(worker = %name, kind = ?capabilities.kind, "joined");
                self.workers.insert(
                    conn,
                    Worker {
                        name,
                        kind: capabilities.kind,
                        component,
                        frames,
                        busy: None,
                        deadline: Instant::now(),
                        missed: false,
                        rounds: 0,
                        images: 0,
                        busy_seconds: 0.0,
                        bytes_in: 0,
                        bytes_out: 0,
                        rejected: 0,
                    },
                );
            }
            Event::Left { conn } => self.remove(conn),
            Event::Garbage { conn, bytes, error } => {
                self.refuse(conn, bytes, None, &format!("malformed frame: {error}"))
            }
            Event::Frame {
                conn,
                bytes,
                message,
            } => {
                if let Some(w) = self.workers.get_mut(&conn) {
                    w.heard(bytes);
                }
                match message {
                    Message::Result(r) => self.refuse(
                        conn,
                        0,
                        Some(r.round),
                        "a result for a round this worker was not given",
                    ),
                    Message::Goodbye(_) => self.remove(conn),
                    _ => {}
                }
            }
        }
    }

    fn remove(&mut self, conn: ConnId) {
        if let Some(w) = self.workers.remove(&conn) {
            tracing::info!(worker = %w.name, "left");
            absorb(&mut self.departed, report(&w));
        }
        self.publish_workers();
    }

    /// Logs a refused message and tells the worker why; the model is untouched.
    fn refuse(&mut self, conn: ConnId, bytes: usize, round: Option<u64>, reason: &str) {
        if let Some(w) = self.workers.get_mut(&conn) {
            w.bytes_in += bytes as u64;
            w.rejected += 1;
            tracing::warn!(worker = %w.name, ?round, %reason, "refused");
            w.send(&Message::Error(proto::ErrorReport {
                round,
                reason: reason.to_string(),
            }));
        }
    }

    /// One round; returns its totals.
    fn play_round(&mut self, ledger: &mut Ledger, lr: f32) -> Result<RoundOutcome> {
        self.round += 1;
        let round = self.round;
        let conns: Vec<ConnId> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.missed)
            .map(|(&c, _)| c)
            .collect();
        let views: Vec<WorkerView> = conns
            .iter()
            .map(|c| WorkerView {
                name: self.workers[c].name.clone(),
                images_per_second: self.workers[c].images_per_second(),
            })
            .collect();
        let shares = self.strategy.configure_round(&views, ledger.pending());
        let mut outcome = RoundOutcome::default();
        for ((conn, share), view) in conns.iter().zip(shares).zip(&views) {
            tracing::debug!(worker = %view.name, batches = share, round, "assign");
            if share == 0 {
                continue;
            }
            let Some(w) = self.workers.get_mut(conn) else {
                continue;
            };
            let batches = ledger.assign(&w.name, round, share);
            let (mut pixels, mut labels) = (Vec::new(), Vec::new());
            for &b in &batches {
                let idx: Vec<usize> = ledger.samples(b).iter().map(|&i| i as usize).collect();
                self.data.train.gather(&idx, &mut pixels, &mut labels);
            }
            let images = labels.len();
            w.send(&Message::Assign(proto::Assign {
                round,
                params_version: self.version,
                local_steps: batches.len() as u32,
                batch_size: self.plan.batch as u32,
                learning_rate: lr,
                batch_ids: batches.clone(),
                params: Some(self.global.clone()),
                pixels,
                labels,
            }));
            let now = Instant::now();
            w.deadline =
                now + answer_deadline(w.images_per_second(), images, self.plan.round_timeout);
            w.busy = Some((round, batches, now));
        }
        let mut contributions = Vec::new();
        while self.workers.values().any(|w| w.busy.is_some()) {
            let deadline = self
                .workers
                .values()
                .filter(|w| w.busy.is_some())
                .map(|w| w.deadline)
                .min()
                .unwrap_or_else(Instant::now);
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(wait) {
                Ok(Event::Frame {
                    conn,
                    bytes,
                    message: Message::Result(r),
                }) => {
                    let expected = self.global.len();
                    let Some(w) = self.workers.get_mut(&conn) else {
                        continue;
                    };
                    w.heard(bytes);
                    let Some((busy_round, batches, sent)) = w.busy.clone() else {
                        self.refuse(
                            conn,
                            0,
                            Some(r.round),
                            "a result for a round this worker was not given",
                        );
                        outcome.rejected += 1;
                        continue;
                    };
                    let samples: usize = batches.iter().map(|&b| ledger.samples(b).len()).sum();
                    let problem = if r.round != busy_round {
                        Some(format!(
                            "result for round {}, but this worker is in round {busy_round}",
                            r.round
                        ))
                    } else if r.kind != proto::UpdateKind::Delta {
                        Some("this strategy aggregates deltas, not parameters".to_string())
                    } else if r.samples as usize != samples {
                        Some(format!(
                            "result covers {} samples, the round gave {samples}",
                            r.samples
                        ))
                    } else {
                        validate(&r.values, expected).err()
                    };
                    if let Some(reason) = problem {
                        if r.round == busy_round {
                            // This round's result is unusable: its batches go back.
                            outcome.requeued += ledger.requeue(&w.name, &batches) as u64;
                            w.busy = None;
                        }
                        self.refuse(conn, 0, Some(r.round), &reason);
                        outcome.rejected += 1;
                        continue;
                    }
                    let entries = match ledger.complete(&w.name, round, &batches) {
                        Ok(e) => e,
                        Err(reason) => {
                            w.busy = None;
                            self.refuse(conn, 0, Some(r.round), &reason);
                            outcome.rejected += 1;
                            continue;
                        }
                    };
                    for e in &entries {
                        serde_json::to_writer(&mut self.ledger_out, e)?;
                        writeln!(self.ledger_out)?;
                    }
                    w.busy = None;
                    w.rounds += 1;
                    w.images += samples as u64;
                    w.busy_seconds += sent.elapsed().as_secs_f64();
                    outcome.loss_sum += r.loss_sum;
                    outcome.correct += r.correct as u64;
                    outcome.samples += samples as u64;
                    outcome.batches += batches.len() as u64;
                    contributions.push(Contribution {
                        worker: w.name.clone(),
                        samples: r.samples,
                        delta: r.values,
                    });
                }
                Ok(Event::Frame {
                    conn,
                    bytes,
                    message: Message::Error(e),
                }) => {
                    // The worker could not do its round: its batches go back now
                    // instead of at the timeout.
                    if let Some(w) = self.workers.get_mut(&conn) {
                        w.heard(bytes);
                        if let Some((busy_round, batches, _)) = w.busy.clone()
                            && e.round == Some(busy_round)
                        {
                            let n = ledger.requeue(&w.name, &batches);
                            tracing::warn!(worker = %w.name, batches = n, reason = %e.reason, "worker failed its round; its batches go back to the queue");
                            outcome.requeued += n as u64;
                            w.busy = None;
                        } else {
                            tracing::warn!(worker = %w.name, reason = %e.reason, "worker reported an error");
                        }
                    }
                }
                Ok(Event::Left { conn }) => {
                    if let Some(w) = self.workers.get(&conn)
                        && let Some((_, batches, _)) = &w.busy
                    {
                        let n = ledger.requeue(&w.name, batches);
                        tracing::warn!(worker = %w.name, batches = n, "left mid-round; its batches go back to the queue");
                        outcome.requeued += n as u64;
                    }
                    self.remove(conn);
                }
                Ok(other) => self.handle_idle(other),
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    for w in self.workers.values_mut() {
                        if w.deadline > now {
                            continue;
                        }
                        if let Some((_, batches, sent)) = w.busy.take() {
                            w.missed = true;
                            let n = ledger.requeue(&w.name, &batches);
                            tracing::warn!(
                                worker = %w.name,
                                batches = n,
                                waited_s = sent.elapsed().as_secs_f64(),
                                "no answer by its deadline; its batches go back to the queue"
                            );
                            outcome.requeued += n as u64;
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the server stopped"),
            }
        }
        if !contributions.is_empty() {
            // Deterministic order, whatever order results arrived in.
            contributions.sort_by(|a, b| a.worker.cmp(&b.worker));
            self.strategy.aggregate(&mut self.global, &contributions);
            self.version += 1;
            outcome.aggregated = true;
        }
        Ok(outcome)
    }
}

/// How long a worker may take to answer a round of `images`: four times what
/// its measured speed predicts plus 5 s (for a worker whose speed is not
/// known yet: `limit`), never more than `limit`. A frozen tab or a stopped
/// process then holds up a round for seconds, not for the whole round timeout.
fn answer_deadline(images_per_second: f64, images: usize, limit: Duration) -> Duration {
    if images_per_second > 0.0 {
        Duration::from_secs_f64(4.0 * images as f64 / images_per_second + 5.0).min(limit)
    } else {
        limit
    }
}

/// Totals of one round.
#[derive(Default)]
struct RoundOutcome {
    loss_sum: f64,
    correct: u64,
    samples: u64,
    batches: u64,
    requeued: u64,
    rejected: u64,
    /// The global parameters changed.
    aggregated: bool,
}

/// Adds `r` to the totals of its worker name in `all`.
fn absorb(all: &mut BTreeMap<String, WorkerReport>, r: WorkerReport) {
    match all.get_mut(&r.name) {
        None => {
            all.insert(r.name.clone(), r);
        }
        Some(e) => {
            e.rounds += r.rounds;
            e.images += r.images;
            e.images_per_second = e.images_per_second.max(r.images_per_second);
            e.bytes_sent_to += r.bytes_sent_to;
            e.bytes_received_from += r.bytes_received_from;
            e.rejected_results += r.rejected_results;
        }
    }
}

fn report(w: &Worker) -> WorkerReport {
    WorkerReport {
        name: w.name.clone(),
        kind: w.kind,
        component: w.component.clone(),
        rounds: w.rounds,
        images: w.images,
        images_per_second: w.images_per_second(),
        bytes_sent_to: w.bytes_out,
        bytes_received_from: w.bytes_in,
        rejected_results: w.rejected,
    }
}

fn progress(len: u64, what: &str, prefix: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let template = format!(
        "{what:<7} {{prefix:>5}} [{{bar:32}}] {{pos}}/{{len}} batches  {{per_sec}}  eta {{eta}}  {{msg}}"
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar
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
