//! The browser API (feature `browser`), exported through wasm-bindgen.
//!
//! - [`BrowserWorker`]: a worker session. JavaScript only moves bytes between
//!   the WebSocket and [`BrowserWorker::handle`]; the frames are decoded,
//!   trained on and answered here, with the same protocol crate and the same
//!   round procedure as `hearth-host`.
//! - [`WebModel`]: a model for the page itself (draw-a-digit inference, the
//!   parity check and the benchmark).
//! - [`digest`]: SHA-256 of the module bytes, which the worker presents in
//!   its hello (the coordinator admits only the module it serves).

use hearth_protocol::round::{LocalTrainer, run_round};
use hearth_protocol::{self as proto, Message};
use wasm_bindgen::prelude::*;

use crate::{ARCHITECTURES, Model, ModelConfig, OptimizerConfig};

#[wasm_bindgen]
extern "C" {
    /// `performance.now()`, available in pages and Web Workers.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Lowercase hex SHA-256 of `bytes` (the same digest `hearth-runtime` uses).
#[wasm_bindgen]
pub fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The 28×28 MNIST-style image of a canvas drawing (`width × height` RGBA,
/// white ink on black; the red channel is used).
#[wasm_bindgen]
pub fn digit_from_canvas(rgba: &[u8], width: usize, height: usize) -> Vec<u8> {
    let intensity: Vec<u8> = rgba.chunks_exact(4).map(|p| p[0]).collect();
    crate::drawing::mnist_from_drawing(&intensity, width, height)
}

/// Names of the architectures this module can build, comma-separated.
#[wasm_bindgen]
pub fn architectures() -> String {
    ARCHITECTURES.join(",")
}

fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A model for the page: inference, parity checks, benchmarks.
#[wasm_bindgen]
pub struct WebModel {
    model: Model,
}

#[wasm_bindgen]
impl WebModel {
    /// Builds `arch` with seeded initialization and the given SGD settings.
    #[wasm_bindgen(constructor)]
    pub fn new(
        arch: &str,
        seed: u32,
        learning_rate: f32,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<WebModel, JsError> {
        let model = Model::new(&ModelConfig {
            arch: arch.to_string(),
            seed: seed.into(),
            optimizer: OptimizerConfig {
                learning_rate,
                momentum,
                weight_decay,
            },
        })
        .map_err(js_error)?;
        Ok(WebModel { model })
    }

    /// Number of parameters.
    pub fn param_count(&self) -> usize {
        self.model.params().len()
    }

    /// The flat parameter vector.
    pub fn params(&self) -> Vec<f32> {
        self.model.params().to_vec()
    }

    /// Replaces the parameters (the length must match).
    pub fn set_params(&mut self, params: &[f32]) -> Result<(), JsError> {
        self.model.set_params(params).map_err(js_error)
    }

    /// One SGD step on `labels.len()` images; returns the mean loss before it.
    pub fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<f32, JsError> {
        Ok(self
            .model
            .train_batch(pixels, labels)
            .map_err(js_error)?
            .loss)
    }

    /// Class probabilities (`count × 10`) for `count` 28×28 images.
    pub fn predict(&mut self, pixels: &[u8]) -> Result<Vec<f32>, JsError> {
        self.model.predict(pixels).map_err(js_error)
    }
}

/// Where a browser worker's session stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Joining,
    Training,
    Finished,
    Rejected,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Joining => "joining",
            Phase::Training => "training",
            Phase::Finished => "finished",
            Phase::Rejected => "rejected",
        }
    }
}

/// A model plus the welcome's optimizer settings, as a round trainer.
struct Trainer<'a> {
    model: &'a mut Model,
    optimizer: OptimizerConfig,
}

impl LocalTrainer for Trainer<'_> {
    type Error = crate::Error;
    fn set_params(&mut self, params: &[f32]) -> crate::Result<()> {
        self.model.set_params(params)
    }
    fn params(&mut self) -> crate::Result<Vec<f32>> {
        Ok(self.model.params().to_vec())
    }
    fn set_learning_rate(&mut self, lr: f32) -> crate::Result<()> {
        self.model.set_optimizer(OptimizerConfig {
            learning_rate: lr,
            ..self.optimizer
        })
    }
    fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> crate::Result<(f32, u32)> {
        let s = self.model.train_batch(pixels, labels)?;
        Ok((s.loss, s.correct))
    }
}

/// One session with the coordinator, driven by the JavaScript glue: send
/// [`hello`](Self::hello), then pass every binary frame to
/// [`handle`](Self::handle) and send back what it returns.
#[wasm_bindgen]
pub struct BrowserWorker {
    name: String,
    token: String,
    digest: String,
    phase: Phase,
    message: String,
    model: Option<(Model, OptimizerConfig)>,
    rounds: u64,
    images: u64,
    busy_ms: f64,
    last_loss: f64,
    bytes_in: u64,
    bytes_out: u64,
}

#[wasm_bindgen]
impl BrowserWorker {
    /// A session for worker `name`, presenting `token` and the module's `digest`.
    #[wasm_bindgen(constructor)]
    pub fn new(name: String, token: String, digest: String) -> BrowserWorker {
        BrowserWorker {
            name,
            token,
            digest,
            phase: Phase::Joining,
            message: String::new(),
            model: None,
            rounds: 0,
            images: 0,
            busy_ms: 0.0,
            last_loss: f64::NAN,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// The first frame of the session.
    pub fn hello(&mut self) -> Vec<u8> {
        let frame = proto::encode(&Message::Hello(proto::Hello {
            worker_id: self.name.clone(),
            auth_token: self.token.clone(),
            component_digest: self.digest.clone(),
            capabilities: proto::Capabilities {
                kind: proto::WorkerKind::Browser,
                architectures: ARCHITECTURES.iter().map(|a| a.to_string()).collect(),
                threads: 1,
                memory_mib: 0,
                images_per_second: 0.0,
            },
        }));
        self.bytes_out += frame.len() as u64;
        frame
    }

    /// Handles one frame from the coordinator and returns the frame to send
    /// back, if any. A frame it cannot use becomes an error report to the
    /// coordinator, never a crash of the tab.
    pub fn handle(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        self.bytes_in += frame.len() as u64;
        let reply = match proto::decode(frame) {
            Ok(message) => self.on_message(message),
            Err(e) => {
                self.message = format!("malformed frame from the coordinator: {e}");
                Some(Message::Error(proto::ErrorReport {
                    round: None,
                    reason: self.message.clone(),
                }))
            }
        }?;
        let out = proto::encode(&reply);
        self.bytes_out += out.len() as u64;
        Some(out)
    }

    /// True once the coordinator said goodbye or rejected this worker (do not reconnect).
    pub fn done(&self) -> bool {
        matches!(self.phase, Phase::Finished | Phase::Rejected)
    }

    /// The session's figures as JSON, for the page.
    pub fn status(&self) -> String {
        let ips = if self.busy_ms > 0.0 {
            self.images as f64 * 1000.0 / self.busy_ms
        } else {
            0.0
        };
        let loss = if self.last_loss.is_finite() {
            format!("{:.5}", self.last_loss)
        } else {
            "null".into()
        };
        format!(
            r#"{{"phase":"{}","message":{},"rounds":{},"images":{},"images_per_second":{:.1},"last_loss":{},"bytes_in":{},"bytes_out":{}}}"#,
            self.phase.name(),
            json_string(&self.message),
            self.rounds,
            self.images,
            ips,
            loss,
            self.bytes_in,
            self.bytes_out
        )
    }
}

impl BrowserWorker {
    fn on_message(&mut self, message: Message) -> Option<Message> {
        match message {
            Message::Welcome(w) => {
                let optimizer = OptimizerConfig {
                    learning_rate: w.optimizer.learning_rate,
                    momentum: w.optimizer.momentum,
                    weight_decay: w.optimizer.weight_decay,
                };
                let config = ModelConfig {
                    arch: w.arch.clone(),
                    seed: w.seed,
                    optimizer,
                };
                match Model::new(&config) {
                    Ok(m) => {
                        self.model = Some((m, optimizer));
                        self.phase = Phase::Training;
                        self.message = format!("joined: training {}", w.arch);
                        None
                    }
                    Err(e) => {
                        self.phase = Phase::Rejected;
                        self.message = format!("cannot build {}: {e}", w.arch);
                        Some(Message::Goodbye(proto::Goodbye {
                            reason: self.message.clone(),
                        }))
                    }
                }
            }
            Message::Reject(r) => {
                self.phase = Phase::Rejected;
                self.message = format!("rejected: {}", r.reason);
                None
            }
            Message::Goodbye(g) => {
                self.phase = Phase::Finished;
                self.message = format!("coordinator said goodbye: {}", g.reason);
                None
            }
            Message::Error(e) => {
                self.message = format!("coordinator refused a message: {}", e.reason);
                None
            }
            Message::Assign(a) => {
                let round = a.round;
                let images = a.labels.len() as u64;
                let Some((model, optimizer)) = self.model.as_mut() else {
                    return Some(Message::Error(proto::ErrorReport {
                        round: Some(round),
                        reason: "an assignment before the welcome".into(),
                    }));
                };
                let start = performance_now();
                let mut trainer = Trainer {
                    model,
                    optimizer: *optimizer,
                };
                match run_round(&mut trainer, a) {
                    Ok(result) => {
                        self.busy_ms += performance_now() - start;
                        self.rounds += 1;
                        self.images += images;
                        if let Message::Result(r) = &result {
                            self.last_loss = r.loss_sum / (r.samples.max(1) as f64);
                        }
                        Some(result)
                    }
                    Err(e) => {
                        self.message = format!("round {round} failed: {e}");
                        Some(Message::Error(proto::ErrorReport {
                            round: Some(round),
                            reason: self.message.clone(),
                        }))
                    }
                }
            }
            _ => None,
        }
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
