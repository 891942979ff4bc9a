//! The browser API, exported through wasm-bindgen.
//!
//! - [`BrowserWorker`]: a worker session. JavaScript only moves bytes between
//!   the WebSocket and [`BrowserWorker::handle`]; the frames are decoded,
//!   trained on and answered by `hearth-session`'s [`WorkerSession`], the
//!   same state machine `hearth-host` drives.
//! - [`WebModel`]: a model for the page itself (draw-a-digit inference, the
//!   parity check and the benchmark).
//! - [`digest`]: SHA-256 of the module bytes, which the worker presents in
//!   its hello (the coordinator admits only the module it serves).

use hearth_protocol as proto;
use hearth_protocol::auth::{DeviceKey, NONCE_LEN};
use hearth_session::{DEFAULT_MEMORY_MIB, Identity, WorkerSession};
use hearth_worker::{ARCHITECTURES, Model, ModelConfig, OptimizerConfig};
use wasm_bindgen::prelude::*;

pub mod component;
pub mod core_module;
pub mod parallel;
pub mod tab_trainer;

use tab_trainer::TabTrainer;

/// Training samples a tab keeps so they need not be sent again (20,000 ×
/// 785 bytes, 15.7 MB: a tab shares its memory with the page).
pub const TAB_SAMPLE_CACHE: u32 = 20_000;

#[wasm_bindgen]
extern "C" {
    /// `performance.now()`, available in pages and Web Workers.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// Lowercase hex SHA-256 of `bytes` ([`hearth_protocol::digest`], as hosts name their component).
#[wasm_bindgen]
pub fn digest(bytes: &[u8]) -> String {
    proto::digest(bytes)
}

/// The 28×28 MNIST-style image of a canvas drawing (`width × height` RGBA,
/// white ink on black; the red channel is used).
#[wasm_bindgen]
pub fn digit_from_canvas(rgba: &[u8], width: usize, height: usize) -> Vec<u8> {
    let intensity: Vec<u8> = rgba.chunks_exact(4).map(|p| p[0]).collect();
    hearth_worker::drawing::mnist_from_drawing(&intensity, width, height)
}

/// The HTTP API credential of paired device `device` with pairing code
/// `key` (`Authorization: Bearer …`).
#[wasm_bindgen]
pub fn http_token(device: &str, key: &str) -> Result<String, JsError> {
    Ok(DeviceKey::from_code(key)
        .map_err(js_error)?
        .http_token(device))
}

/// Names of the architectures this module can build, comma-separated.
#[wasm_bindgen]
pub fn architectures() -> String {
    ARCHITECTURES.join(",")
}

/// Seconds by the tab's clock (`Date.now()`, in every worker scope): the
/// session times its rounds with it.
fn seconds_now() -> f64 {
    js_sys::Date::now() / 1000.0
}

/// The helpers' buffers of a JavaScript array.
fn shared_buffers(array: &js_sys::Array) -> Result<Vec<js_sys::SharedArrayBuffer>, JsError> {
    array
        .iter()
        .map(|b| {
            b.dyn_into()
                .map_err(|_| JsError::new("a helper's buffer is not shared memory"))
        })
        .collect()
}

fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A model for the page: inference, parity checks, benchmarks.
#[wasm_bindgen]
pub struct WebModel {
    model: Model,
    helpers: Option<parallel::Helpers>,
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
        Ok(WebModel {
            model,
            helpers: None,
        })
    }

    /// Shares each training step with the helper workers of `buffers`
    /// (their `SharedArrayBuffer`s; empty: this worker alone).
    pub fn use_helpers(&mut self, buffers: js_sys::Array) -> Result<(), JsError> {
        let buffers = shared_buffers(&buffers)?;
        self.helpers = (!buffers.is_empty()).then(|| parallel::Helpers::new(&buffers));
        Ok(())
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
        let stats = match &self.helpers {
            Some(h) => h
                .train_batch(&mut self.model, pixels, labels)
                .map_err(js_error)?,
            None => self.model.train_batch(pixels, labels).map_err(js_error)?,
        };
        Ok(stats.loss)
    }

    /// Class probabilities (`count × 10`) for `count` 28×28 images.
    pub fn predict(&mut self, pixels: &[u8]) -> Result<Vec<f32>, JsError> {
        self.model.predict(pixels).map_err(js_error)
    }
}

/// One session with the coordinator, driven by the JavaScript glue: send
/// [`hello`](Self::hello) on every new connection, then pass every binary
/// frame to [`handle`](Self::handle) and send back what it returns, and
/// send what [`poll`](Self::poll) returns after every frame and now and
/// then (an offered component is tested there).
#[wasm_bindgen]
pub struct BrowserWorker {
    session: WorkerSession<TabTrainer>,
    busy_ms: f64,
}

#[wasm_bindgen]
impl BrowserWorker {
    /// A session for paired device `name` with pairing code `key`,
    /// presenting the module's `digest` (an invalid code is an error),
    /// taking components signed by one of `trust` (comma-separated hex
    /// public keys from the pairing link; empty: none), and sharing each
    /// step with the helper workers of `helpers` (their
    /// `SharedArrayBuffer`s; empty: this worker alone).
    #[wasm_bindgen(constructor)]
    pub fn new(
        name: String,
        key: &str,
        digest: String,
        trust: &str,
        helpers: js_sys::Array,
    ) -> Result<BrowserWorker, JsError> {
        let buffers = shared_buffers(&helpers)?;
        let helpers = (!buffers.is_empty()).then(|| parallel::Helpers::new(&buffers));
        let threads = helpers.as_ref().map_or(1, |h| h.threads()) as u32;
        let trusted = trust
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect();
        let identity = Identity {
            worker_id: name,
            key: DeviceKey::from_code(key).map_err(js_error)?,
            component_digest: digest.clone(),
            kind: proto::WorkerKind::Browser,
            threads,
            memory_mib: DEFAULT_MEMORY_MIB as u32,
            sample_cache: TAB_SAMPLE_CACHE,
        };
        let trainer = TabTrainer::new(digest, trusted, (DEFAULT_MEMORY_MIB as u64) << 20, helpers);
        Ok(BrowserWorker {
            session: WorkerSession::new(identity, trainer).with_clock(seconds_now),
            busy_ms: 0.0,
        })
    }

    /// A component that hung this tab's worker while on trial (the page
    /// stopped that worker): never taken again, and reported to the
    /// coordinator as a rollback if `report` (the first time).
    pub fn failed_before(&mut self, digest: String, reason: String, report: bool) {
        self.session
            .trainer_mut()
            .failed_before(digest, reason, report);
    }

    /// Digest of the component being tried now, if any (the page stops
    /// this worker if a call runs too long while one is).
    pub fn pending(&self) -> Option<String> {
        self.session.trainer().pending()
    }

    /// A frame to send that no incoming frame asked for: an offered
    /// component's outcome (it is verified, compiled and tested here), or a
    /// rollback to report.
    pub fn poll(&mut self) -> Option<Vec<u8>> {
        self.session.poll()
    }

    /// True while a round sent ahead has steps left to train: call
    /// [`work`](Self::work) when no message is waiting.
    pub fn has_work(&self) -> bool {
        self.session.has_work()
    }

    /// Trains one step of a round sent ahead (the tab would otherwise wait
    /// for the coordinator).
    pub fn work(&mut self) {
        let start = performance_now();
        self.session.work();
        self.busy_ms += performance_now() - start;
    }

    /// The first frame of a connection; `nonce` is 16 fresh random bytes
    /// (`crypto.getRandomValues`).
    pub fn hello(&mut self, nonce: &[u8]) -> Result<Vec<u8>, JsError> {
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| JsError::new(&format!("a nonce is {NONCE_LEN} bytes")))?;
        self.session.hello(nonce).map_err(js_error)
    }

    /// Handles one frame from the coordinator and returns the frame to send
    /// back, if any. A frame it cannot use becomes an error report to the
    /// coordinator, never a crash of the tab.
    pub fn handle(&mut self, frame: &[u8]) -> Option<Vec<u8>> {
        let start = performance_now();
        let trained = |s: &hearth_session::SessionStats| s.rounds + s.steps_ahead;
        let before = trained(self.session.stats());
        let reply = self.session.handle(frame);
        if trained(self.session.stats()) > before {
            self.busy_ms += performance_now() - start;
        }
        reply
    }

    /// True once the coordinator said goodbye or rejected this worker, or it
    /// could not build the model (do not reconnect).
    pub fn done(&self) -> bool {
        self.session.phase().is_final()
    }

    /// The session's figures as JSON, for the page.
    pub fn status(&self) -> String {
        let stats = self.session.stats();
        let ips = if self.busy_ms > 0.0 {
            stats.images as f64 * 1000.0 / self.busy_ms
        } else {
            0.0
        };
        let loss = match stats.last_loss {
            Some(l) if l.is_finite() => format!("{l:.5}"),
            _ => "null".into(),
        };
        format!(
            r#"{{"phase":"{}","message":{},"component":{},"component_label":{},"threads":{},"rounds":{},"images":{},"images_per_second":{:.1},"last_loss":{},"bytes_in":{},"bytes_out":{}}}"#,
            self.session.phase().name(),
            json_string(self.session.note()),
            json_string(self.session.running()),
            json_string(self.session.trainer().label()),
            self.session.trainer().threads(),
            stats.rounds,
            stats.images,
            ips,
            loss,
            stats.bytes_in,
            stats.bytes_out
        )
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
