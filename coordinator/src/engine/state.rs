//! The run state: everything the round engine knows, in one serializable
//! value. Saving it and restoring it gives an engine that continues exactly
//! where the first one was (the test `a_restored_engine_continues_bit_for_bit`).

use std::collections::BTreeMap;
use std::time::Duration;

use hearth_protocol::{Encoding, UpdateKind, WorkerKind};
use serde::{Deserialize, Serialize};

use super::downlink::Mirror;
use super::guard::GuardState;
use super::notice::EpochMetrics;
use super::rollout::{ComponentInfo, Rollout};
use crate::ledger::{BatchId, Ledger};
use crate::options::TrainingOptions;
use crate::strategy::{FitFailure, FitResult, StrategyState};

/// Connection id, given by the transport (a reconnecting worker gets a new one).
pub type ConnId = u64;

/// The engine's clock: time since an origin the driver chose (a monotonic
/// clock in the server, a counter in tests).
pub type Now = Duration;

/// Where the run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Phase {
    /// Between rounds (or before the first): the next step starts a round.
    Idle,
    /// Too few workers since `since`.
    Waiting {
        /// When the wait began.
        since: Now,
    },
    /// A round is in flight.
    Round,
    /// Every epoch is done.
    Finished,
}

/// A round a worker is working on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Busy {
    /// The round.
    pub round: u64,
    /// Its batches.
    pub batches: Vec<BatchId>,
    /// Samples in them.
    pub samples: u32,
    /// Parameter version the round started from.
    pub version: u64,
    /// What the result must carry.
    pub reply: UpdateKind,
    /// Digest of the component the round runs on.
    pub component: String,
    /// The learning rate the guard scales its bound by (the round's, or
    /// more while workers' velocity still carries earlier rounds').
    pub learning_rate: f32,
    /// When the assignment went out (for a round with a head start: when
    /// its images did, since the worker may train from then).
    pub sent: Now,
    /// When its batches go back to the queue if it has not answered.
    pub deadline: Now,
}

/// Batches of a worker's next round whose images went out ahead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prefetched {
    /// The round they are for.
    pub round: u64,
    /// The batches.
    pub batches: Vec<BatchId>,
    /// When they went out.
    pub sent: Now,
    /// The head start they came with, if the worker may train them before
    /// the round's assignment: the assignment then says the same.
    pub head_start: Option<hearth_protocol::HeadStart>,
}

/// A connected worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSlot {
    /// Name from its hello.
    pub name: String,
    /// Host or browser.
    pub kind: WorkerKind,
    /// Digest of the code it runs.
    pub component: String,
    /// The round it is working on, if any.
    pub busy: Option<Busy>,
    /// Its next round's batches, whose images it was sent ahead.
    pub prefetched: Option<Prefetched>,
    /// It missed a deadline and has not answered since: no new batches until
    /// it does (a frozen tab or a stopped process would hold up every round).
    pub missed: bool,
    /// Results credited.
    pub rounds: u64,
    /// Images in them.
    pub images: u64,
    /// Time from assignment to result, summed over credited rounds: its
    /// speed estimate is `images / busy_seconds`.
    pub busy_seconds: f64,
    /// Images of the results that said how long they trained.
    pub timed_images: u64,
    /// Training seconds those results reported.
    pub compute_seconds: f64,
    /// Bytes it sent.
    pub bytes_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// Messages of its that were refused.
    pub rejected: u64,
    /// Rounds it was given and did not complete (it left, missed its
    /// deadline, reported a failure, or its result was refused).
    pub abandoned: u64,
    /// Refused messages in a row.
    pub strikes: u32,
    /// Accepted results in a row.
    pub streak: u32,
    /// No batches before this time (a worker on probation gets one now and then).
    pub not_before: Now,
    /// The component it was last offered.
    pub offered: Option<String>,
    /// The offered component it said is ready.
    pub ready: Option<String>,
    /// The round from which it ran the component it runs (if it swapped).
    pub swapped_round: Option<u64>,
    /// Components it rolled back from.
    pub rollbacks: u32,
    /// The last refusal or rollback it reported, for people.
    pub component_note: String,
    /// What it ran before its last swap (what a rollback returns it to).
    pub previous_component: String,
    /// It said it cannot take components at all (it trusts no key).
    pub unable: bool,
    /// How vectors travel to and from it (the run's `--encoding` if it can
    /// read and write it, else f32).
    pub encoding: Encoding,
    /// Its copy of the model as of the last assignment: the next one sends
    /// the change from it. Never saved: a resumed run's workers reconnect
    /// and get the whole model first.
    #[serde(skip)]
    pub mirror: Option<Mirror>,
    /// The training samples it keeps, mirrored message by message
    /// ([`hearth_protocol::samples`]). Never saved, like `mirror`.
    #[serde(skip)]
    pub samples: hearth_protocol::SampleSet,
    /// The next message with images tells it to start its cache over (a
    /// round failed: what it keeps is in doubt).
    #[serde(skip)]
    pub samples_reset: bool,
}

impl WorkerSlot {
    /// A worker that just joined.
    pub fn new(name: String, kind: WorkerKind, component: String, encoding: Encoding) -> Self {
        Self {
            name,
            kind,
            component,
            busy: None,
            prefetched: None,
            missed: false,
            rounds: 0,
            images: 0,
            busy_seconds: 0.0,
            timed_images: 0,
            compute_seconds: 0.0,
            bytes_in: 0,
            bytes_out: 0,
            rejected: 0,
            abandoned: 0,
            strikes: 0,
            streak: 0,
            not_before: Now::ZERO,
            offered: None,
            ready: None,
            swapped_round: None,
            rollbacks: 0,
            component_note: String::new(),
            previous_component: String::new(),
            unable: false,
            encoding,
            mirror: None,
            samples: hearth_protocol::SampleSet::default(),
            samples_reset: false,
        }
    }

    /// Measured training throughput (0 until its first credited result):
    /// by the training time its results report, or else by round trips.
    pub fn images_per_second(&self) -> f64 {
        if self.compute_seconds > 0.0 {
            self.timed_images as f64 / self.compute_seconds
        } else if self.busy_seconds > 0.0 {
            self.images as f64 / self.busy_seconds
        } else {
            0.0
        }
    }

    /// Its totals as a report.
    pub fn report(&self, connected: bool) -> WorkerReport {
        WorkerReport {
            name: self.name.clone(),
            kind: self.kind,
            component: self.component.clone(),
            connected,
            rounds: self.rounds,
            images: self.images,
            images_per_second: self.images_per_second(),
            bytes_sent_to: self.bytes_out,
            bytes_received_from: self.bytes_in,
            rejected_results: self.rejected,
            abandoned_rounds: self.abandoned,
            suspect: None,
            component_label: String::new(),
            swapped_round: self.swapped_round,
            rollbacks: self.rollbacks,
            component_note: self.component_note.clone(),
        }
    }
}

/// Per-worker totals, in the summary, the worker table and the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Worker name.
    pub name: String,
    /// Host or browser.
    pub kind: WorkerKind,
    /// Digest of the code it runs.
    pub component: String,
    /// Connected now.
    pub connected: bool,
    /// Results credited.
    pub rounds: u64,
    /// Images in them.
    pub images: u64,
    /// Training throughput (the best of its connections).
    pub images_per_second: f64,
    /// Bytes the coordinator sent it.
    pub bytes_sent_to: u64,
    /// Bytes it sent the coordinator.
    pub bytes_received_from: u64,
    /// Its messages that were refused.
    pub rejected_results: u64,
    /// Rounds it was given and did not complete (left, silent past its
    /// deadline, failed, refused): a device that takes work and never
    /// delivers shows here.
    pub abandoned_rounds: u64,
    /// Why it is on probation (one batch a round), if it is.
    pub suspect: Option<String>,
    /// Name and version of the component it runs, if the coordinator knows it.
    pub component_label: String,
    /// The round from which it ran that component, if it swapped to it.
    pub swapped_round: Option<u64>,
    /// Components it rolled back from.
    pub rollbacks: u32,
    /// The last refusal or rollback it reported.
    pub component_note: String,
}

impl WorkerReport {
    /// Adds the totals of another connection of the same worker.
    pub fn absorb(&mut self, other: WorkerReport) {
        self.connected |= other.connected;
        self.rounds += other.rounds;
        self.images += other.images;
        self.images_per_second = self.images_per_second.max(other.images_per_second);
        self.bytes_sent_to += other.bytes_sent_to;
        self.bytes_received_from += other.bytes_received_from;
        self.rejected_results += other.rejected_results;
        self.abandoned_rounds += other.abandoned_rounds;
        self.rollbacks += other.rollbacks;
        if other.connected || !other.component.is_empty() {
            self.component = other.component;
            self.swapped_round = other.swapped_round.or(self.swapped_round);
        }
        if !other.component_note.is_empty() {
            self.component_note = other.component_note;
        }
    }
}

/// What a round or an epoch has added up so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Sum of per-sample training losses.
    pub loss_sum: f64,
    /// Samples classified right before their step.
    pub correct: u64,
    /// Samples credited.
    pub samples: u64,
    /// Batches credited.
    pub batches: u64,
    /// Batches that went back to the queue.
    pub requeued: u64,
    /// Messages refused.
    pub rejected: u64,
}

impl Totals {
    /// Adds `other` in.
    pub fn add(&mut self, other: &Totals) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.samples += other.samples;
        self.batches += other.batches;
        self.requeued += other.requeued;
        self.rejected += other.rejected;
    }
}

/// The epoch in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// Its ledger: which batch went to whom.
    pub ledger: Ledger,
    /// When its first round started (its clock; until then, when it began).
    pub started: Now,
    /// Its first round.
    pub first_round: u64,
    /// Bytes sent and received before it.
    pub bytes_before: (u64, u64),
    /// Its credited rounds so far.
    pub totals: Totals,
    /// Digests of the components its credited results were trained with.
    pub components: std::collections::BTreeSet<String>,
}

/// The round in flight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundProgress {
    /// Results credited so far.
    pub results: Vec<FitResult>,
    /// Workers whose batches went back to the queue.
    pub failures: Vec<FitFailure>,
    /// What it has added up.
    pub totals: Totals,
    /// Norm of the global parameters it started from (for the update bound).
    pub model_norm: f64,
}

/// An epoch whose rounds are done, waiting for its test-set score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEvaluation {
    /// Its metrics, all but the test loss and accuracy.
    pub metrics: EpochMetrics,
    /// The global parameters at its end, to score.
    pub params: Vec<f32>,
}

/// Everything the engine knows: options, model, strategy state, schedule
/// position, the epoch's ledger, the round in flight and the workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// How the run trains.
    pub options: TrainingOptions,
    /// Current epoch (1-based; 0 before the first).
    pub epoch: usize,
    /// Rounds started so far.
    pub round: u64,
    /// Version of the global parameters (one per aggregation that changed them).
    pub version: u64,
    /// The global parameters.
    pub global: Vec<f32>,
    /// The strategy's own state (server momentum).
    pub strategy: StrategyState,
    /// Batches credited in the whole run: the learning-rate schedule's step.
    pub steps_done: u64,
    /// The learning rate the update guard scales its bound by: the round's,
    /// or, when workers keep momentum, the decayed memory of earlier rounds'
    /// (their velocity still moves the model after the rate has fallen).
    pub guard_rate: f32,
    /// How much the local steps have grown (devices waiting on the link).
    pub pace: super::pace::Pace,
    /// Where the run stands.
    pub phase: Phase,
    /// The epoch in progress, if any.
    pub current: Option<EpochProgress>,
    /// The round in flight (empty between rounds).
    pub round_progress: RoundProgress,
    /// Connected workers, with their speed estimates.
    pub workers: BTreeMap<ConnId, WorkerSlot>,
    /// Totals of workers that left, by name.
    pub departed: BTreeMap<String, WorkerReport>,
    /// Recent honest update norms and the workers on probation.
    pub guard: GuardState,
    /// The last time the engine was told (a resumed driver's clock starts here).
    pub clock: Now,
    /// When the last checkpoint was handed out.
    pub last_checkpoint: Now,
    /// A checkpoint is due at the next round boundary (an epoch ended).
    pub checkpoint_due: bool,
    /// Every finished epoch's metrics.
    pub history: Vec<EpochMetrics>,
    /// Epochs whose rounds are done and whose test-set score is awaited,
    /// oldest first (the next epoch trains meanwhile).
    pub evaluations: Vec<PendingEvaluation>,
    /// The component the coordinator scores with and its devices run (the
    /// last one rolled out past its canary).
    pub component: ComponentInfo,
    /// Every component this run accepted, by digest.
    pub components: BTreeMap<String, ComponentInfo>,
    /// The last rollout, if any.
    pub rollout: Option<Rollout>,
    /// Components that failed on a device, with why: never offered again.
    pub failed_components: BTreeMap<String, String>,
}

/// Devices whose measured training rates differ by more than this factor
/// are unlike: in a synchronous round the fast ones would wait for the slow
/// ones' turns on the link and their slow coding of the model, so their
/// rounds are not held synchronous in the first epochs.
pub const UNLIKE_RATES: f64 = 2.0;

impl RunState {
    /// One of the run's first `--train-ahead-after` epochs, among devices
    /// alike in speed: synchronous rounds at `--early-local-steps`, no
    /// head starts, no growth. Synchronous rounds keep each update on the
    /// current model while it changes fastest (at 11 alike `pi3` devices
    /// 97.78 and 97.22 % after the first epoch on seeds 1 and 3, against
    /// 97.28 and 96.47 % with head starts), but a household of unlike
    /// devices (`pi3:6,pi4:3,laptop:2`) kept them 44-67 % busy in it, and
    /// 54-71 % training ahead once their rates were measured (1.86 s for
    /// the epoch instead of 2.90 s, 96.94 % after it, 99.25 % after 10
    /// epochs as before; 66-82 % and 1.73 s training ahead from the start).
    pub fn synchronous_epoch(&self) -> bool {
        self.epoch <= self.options.train_ahead_after && !self.unlike_devices()
    }

    /// True when the measured training rates of the connected devices
    /// differ by more than [`UNLIKE_RATES`] times (devices not measured
    /// yet do not count).
    pub fn unlike_devices(&self) -> bool {
        let rates = self
            .workers
            .values()
            .map(WorkerSlot::images_per_second)
            .filter(|&r| r > 0.0);
        let (slowest, fastest) = rates.fold((f64::INFINITY, 0.0_f64), |(lo, hi), r| {
            (lo.min(r), hi.max(r))
        });
        fastest > UNLIKE_RATES * slowest
    }

    /// The state in a compact binary form (floats stored bit for bit).
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        postcard::to_allocvec(self).map_err(|e| format!("encoding the run state: {e}"))
    }

    /// A state from [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("decoding a saved run state: {e}"))
    }

    /// Totals per worker name (in name order), over every connection it had.
    pub fn reports(&self) -> Vec<WorkerReport> {
        let mut all = self.departed.clone();
        for w in self.workers.values() {
            let r = w.report(true);
            match all.get_mut(&r.name) {
                Some(e) => e.absorb(r),
                None => {
                    all.insert(r.name.clone(), r);
                }
            }
        }
        all.into_values()
            .map(|mut r| {
                r.suspect = self.guard.suspects.get(&r.name).cloned();
                r.component_label = self
                    .components
                    .get(&r.component)
                    .map(ComponentInfo::label)
                    .unwrap_or_default();
                r
            })
            .collect()
    }

    /// Adds the totals of a worker whose connection ended to its name's.
    pub fn depart(&mut self, w: &WorkerSlot) {
        let r = w.report(false);
        match self.departed.get_mut(&r.name) {
            Some(e) => e.absorb(r),
            None => {
                self.departed.insert(r.name.clone(), r);
            }
        }
    }

    /// This state as a coordinator that restarted finds it: no connection
    /// survives (their round's batches go back to the queue and their totals
    /// to the departed), so the run waits for its workers to reconnect.
    pub fn resumed(mut self) -> Self {
        for (_, w) in std::mem::take(&mut self.workers) {
            if let (Some(busy), Some(current)) = (&w.busy, self.current.as_mut()) {
                current.ledger.requeue(&w.name, &busy.batches);
            }
            if let (Some(ahead), Some(current)) = (&w.prefetched, self.current.as_mut()) {
                current.ledger.requeue(&w.name, &ahead.batches);
            }
            self.depart(&w);
        }
        self.round_progress = RoundProgress::default();
        if matches!(self.phase, Phase::Waiting { .. } | Phase::Round) {
            self.phase = Phase::Idle;
        }
        self
    }

    /// Bytes sent and received so far, over every connection.
    pub fn bytes(&self) -> (u64, u64) {
        let live = self
            .workers
            .values()
            .fold((0, 0), |a, w| (a.0 + w.bytes_out, a.1 + w.bytes_in));
        self.departed.values().fold(live, |a, w| {
            (a.0 + w.bytes_sent_to, a.1 + w.bytes_received_from)
        })
    }
}
