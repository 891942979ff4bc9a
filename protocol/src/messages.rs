//! The messages of the protocol, one struct per message.
//!
//! Flow: worker → `Hello`; coordinator → `Challenge`; worker → `Proof`
//! (see [`crate::auth`]); coordinator → `Welcome` or `Reject`; then rounds of
//! coordinator → `Assign`, worker → `Result`; either side may send `Error` (a
//! problem with one message or one round; the session goes on) and `Goodbye`
//! (the session ends). Hot-reload: coordinator → `Offer` (a signed
//! component); worker → `ComponentStatus` (ready, refused, rolled back);
//! an `Assign` names the component its round runs on, so a swap happens at
//! a round boundary. Liveness is the WebSocket's own business (ping/pong,
//! close); a worker meets a deadline only by answering its round.

use serde::{Deserialize, Serialize};

pub use crate::encoding::Encoding;
pub use crate::samples::{SampleRefs, SampleSet};
pub use hearth_worker::OptimizerConfig;

/// What kind of device a worker is (`host` or `browser` in JSON reports;
/// postcard on the wire encodes the variant's index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerKind {
    /// `hearth-host`: wasmtime on a device.
    Host,
    /// A browser tab running the same compute through wasm-bindgen.
    Browser,
}

/// What a worker can do, as it reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Host or browser.
    pub kind: WorkerKind,
    /// Architectures its component can build.
    pub architectures: Vec<String>,
    /// Threads it will use for training.
    pub threads: u32,
    /// Memory it may use, in MiB.
    pub memory_mib: u32,
    /// Its own estimate of training throughput (0 if unknown).
    pub images_per_second: f32,
    /// Vector encodings it can read and write (f32 always).
    pub encodings: Vec<Encoding>,
    /// Training samples it can keep, so that they need not be sent again
    /// ([`crate::samples`]; 0: none).
    pub sample_cache: u32,
}

/// Worker → coordinator: the first message of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Stable id of the device (survives reconnects).
    pub worker_id: String,
    /// A fresh random nonce ([`crate::auth::NONCE_LEN`] bytes): the
    /// coordinator's proof in the welcome covers it.
    pub nonce: Vec<u8>,
    /// Hex SHA-256 of the training component the worker runs.
    pub component_digest: String,
    /// What the worker can do.
    pub capabilities: Capabilities,
}

/// Coordinator → worker: admitted, and what to build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// Session id: the coordinator's number for this connection, new on
    /// every admission (a reconnecting worker gets a new one).
    pub session: u64,
    /// Architecture to build.
    pub arch: String,
    /// Initialization seed.
    pub seed: u64,
    /// The optimizer the worker steps with (the strategy decides whether
    /// workers or the coordinator apply momentum).
    pub optimizer: OptimizerConfig,
    /// The coordinator's proof that it knows the device's key
    /// ([`crate::auth::DeviceKey::coordinator_proof`]).
    pub proof: Vec<u8>,
    /// The [`params_digest`](crate::params_digest) of the run's initial
    /// model, while no round has changed it: a worker whose freshly built
    /// model has this digest holds it as version 0, and its first
    /// assignment is the (empty) change from it instead of the whole model.
    pub initial: Option<String>,
}

/// Coordinator → worker: prove you hold your device key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// A fresh random nonce ([`crate::auth::NONCE_LEN`] bytes), new on every connection.
    pub nonce: Vec<u8>,
}

/// Worker → coordinator: the answer to a [`Challenge`]
/// ([`crate::auth::DeviceKey::worker_proof`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proof {
    /// HMAC-SHA-256 tag.
    pub mac: Vec<u8>,
}

/// Coordinator → worker: not admitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    /// Why, for the worker's log.
    pub reason: String,
}

/// The kind byte of an [`Assign`].
pub const ASSIGN_KIND: u8 = 4;

/// Coordinator → worker: train on these samples from these parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Assign {
    /// Round number.
    pub round: u64,
    /// Version of the global parameters the round starts from; the result
    /// must name it.
    pub params_version: u64,
    /// Learning rate for this round.
    pub learning_rate: f32,
    /// Samples of each local SGD step, in order (one step per ledger batch:
    /// 1 step = synchronous SGD, more = FedAvg); they sum to the sample count.
    pub steps: Vec<u32>,
    /// What the result must carry.
    pub reply: UpdateKind,
    /// The global parameters of `params_version` as the worker must hold
    /// them: these values, or, when `params_base` names a version, these
    /// values added to its copy of that version.
    pub params: Vec<f32>,
    /// How `params` travel (a lossy encoding's values are exact: the sender
    /// rounds them, [`Encoding::round_trip`]).
    pub params_encoding: Encoding,
    /// `Some(v)`: `params` is the change from the copy of version `v` the
    /// worker holds (the one its last assignment gave it); `None`: the model.
    pub params_base: Option<u64>,
    /// How the result's vector must travel.
    pub reply_encoding: Encoding,
    /// Largest random shift of a training image, pixels (0: none): the
    /// worker moves its copy of the round's images
    /// ([`hearth_worker::augment::shift`], seeded by the welcome's seed and
    /// the round).
    pub shift: u8,
    /// The round's images came ahead in a [`Prefetch`] for this round
    /// (`pixels` and `labels` are empty; `steps` split the prefetched samples).
    pub prefetched: bool,
    /// `samples × 784` pixels (none when `prefetched`; with `cache`, only
    /// those of the samples sent).
    pub pixels: Vec<u8>,
    /// One label per sample, 0..=9 (with `cache`, per sample sent).
    pub labels: Vec<u8>,
    /// `Some`: which samples the round's are, the ones the worker holds
    /// not sent again ([`crate::samples`]); `None`: all are sent.
    pub cache: Option<SampleRefs>,
    /// Digest of the component this round runs on ([`crate::digest`]): the
    /// one the worker runs, or one it said is [`ComponentState::Ready`]
    /// (then it swaps before the round); empty: whatever it runs.
    pub component: String,
}

/// Whether a result carries parameters or their change (the coordinator's
/// strategy asks for one in each [`Assign`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateKind {
    /// The worker's parameters after the round.
    Params,
    /// Parameters after minus parameters before.
    Delta,
}

/// Worker → coordinator: what a round produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundResult {
    /// Round number it answers.
    pub round: u64,
    /// Parameter version it started from.
    pub params_version: u64,
    /// Samples trained on.
    pub samples: u32,
    /// Sum of per-sample training losses (before each step).
    pub loss_sum: f64,
    /// Samples classified right (before each step).
    pub correct: u32,
    /// Parameters or delta.
    pub kind: UpdateKind,
    /// The vector itself.
    pub values: Vec<f32>,
    /// How it travels (the assignment's `reply_encoding`).
    pub encoding: Encoding,
    /// Seconds the worker spent training the round, by its own clock (0:
    /// it has none): the coordinator sizes shares by compute speed, not by
    /// round trips that include waiting for the link.
    pub compute_seconds: f32,
}

/// Coordinator → worker: the images of the worker's next round, sent
/// while it trains the current one, so the link and the device work at the
/// same time; the next [`Assign`] names them (`prefetched`).
#[derive(Debug, Clone, PartialEq)]
pub struct Prefetch {
    /// The round they are for.
    pub round: u64,
    /// `samples × 784` pixels (with `cache`, only those of the samples sent).
    pub pixels: Vec<u8>,
    /// One label per sample, 0..=9 (with `cache`, per sample sent).
    pub labels: Vec<u8>,
    /// As [`Assign::cache`].
    pub cache: Option<SampleRefs>,
    /// `Some`: train on them as soon as the current round is answered, from
    /// the model that round ended with, without waiting for the next global
    /// model; the round's [`Assign`] then brings it, and the worker keeps
    /// its progress on top of it (delayed averaging, as in CoCoD-SGD, Shen
    /// et al. 2019). `None`: keep them for the [`Assign`].
    pub head_start: Option<HeadStart>,
}

/// Coordinator → worker: images to keep for a round after the next one,
/// sent while the link has them to spare (every sample in full, none held
/// yet). When every image must cross the coordinator's link (the first
/// epoch), a device that gets its images only one round ahead waits for
/// them whenever the link is behind; stocked a round earlier, the link
/// works ahead of the devices. The worker keeps them by
/// [`crate::SampleSet`]'s rule, and a later message names them as held.
#[derive(Debug, Clone, PartialEq)]
pub struct Stock {
    /// `samples × 784` pixels.
    pub pixels: Vec<u8>,
    /// One label per sample, 0..=9.
    pub labels: Vec<u8>,
    /// Which samples they are (none held).
    pub cache: SampleRefs,
}

/// How to train a round's images before its [`Assign`] comes: what that
/// assignment will say. If it says otherwise (or swaps the component), the
/// worker trains the round again as it says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadStart {
    /// Learning rate of the round.
    pub learning_rate: f32,
    /// Samples of each local step, in order (they sum to the images sent).
    pub steps: Vec<u32>,
    /// Largest random shift of an image, pixels (as [`Assign::shift`]).
    pub shift: u8,
    /// This worker's share of the samples of the round it is training now,
    /// 0 to 1. The next global model is the average of that round's
    /// updates, so it is expected to carry this share of the worker's
    /// progress: the head start trains from the worker's copy of the global
    /// model plus this share of what it learned since (1, a worker alone:
    /// exactly the next model; the others' progress is unknown to it).
    pub own_share: f32,
}

/// Either side: a problem with one message; the session continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// Round concerned, if any.
    pub round: Option<u64>,
    /// Human-readable reason.
    pub reason: String,
}

/// Coordinator → worker: a signed component to get ready (verify, compile,
/// self-test) and report on with a [`ComponentStatus`].
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// The signature file's text (`hearth-signing`'s JSON: the manifest —
    /// name, version, WIT package and world, SHA-256 — and its signature).
    pub signature: String,
    /// The component's bytes.
    pub component: Vec<u8>,
}

/// Where a worker stands with an offered component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentState {
    /// Verified, compiled and self-tested: an assignment may name it.
    Ready,
    /// Not taken (signature, world, self-test, a version that failed
    /// before); the worker keeps what it runs.
    Refused,
    /// Swapped to, then failed while watched (a trap, a limit, NaN, a
    /// diverging loss); the worker is back on its previous component and
    /// will not take this one again.
    RolledBack,
    /// This worker cannot take components (it trusts no signing key, or
    /// its code cannot change): nothing is said of the component.
    Unable,
}

/// Worker → coordinator: what became of an offered component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStatus {
    /// Digest of the offered component.
    pub digest: String,
    /// Ready, refused or rolled back.
    pub state: ComponentState,
    /// The round that failed on it, if one did (its batches go back).
    pub round: Option<u64>,
    /// Why, for people (empty when ready).
    pub reason: String,
}

/// Either side: the session ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// Why, for the other side's log.
    pub reason: String,
}

/// Any message of the protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Reject`].
    Reject(Reject),
    /// See [`Challenge`].
    Challenge(Challenge),
    /// See [`Proof`].
    Proof(Proof),
    /// See [`Assign`].
    Assign(Assign),
    /// See [`RoundResult`].
    Result(RoundResult),
    /// See [`ErrorReport`].
    Error(ErrorReport),
    /// See [`Goodbye`].
    Goodbye(Goodbye),
    /// See [`Offer`].
    Offer(Offer),
    /// Coordinator → worker: the next round's images, ahead.
    Prefetch(Prefetch),
    /// See [`Stock`].
    Stock(Stock),
    /// See [`ComponentStatus`].
    ComponentStatus(ComponentStatus),
}

impl Message {
    /// The kind byte of this message on the wire.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => 1,
            Message::Welcome(_) => 2,
            Message::Reject(_) => 3,
            Message::Assign(_) => ASSIGN_KIND,
            Message::Result(_) => 5,
            Message::Error(_) => 7,
            Message::Goodbye(_) => 8,
            Message::Challenge(_) => 9,
            Message::Proof(_) => 10,
            Message::Offer(_) => 11,
            Message::ComponentStatus(_) => 12,
            Message::Prefetch(_) => 13,
            Message::Stock(_) => 14,
        }
    }

    /// Name of a kind byte, for errors and logs.
    pub fn kind_name(kind: u8) -> &'static str {
        match kind {
            1 => "hello",
            2 => "welcome",
            3 => "reject",
            4 => "assign",
            5 => "result",
            7 => "error",
            8 => "goodbye",
            9 => "challenge",
            10 => "proof",
            11 => "offer",
            12 => "component status",
            13 => "prefetch",
            14 => "stock",
            _ => "unknown",
        }
    }
}
