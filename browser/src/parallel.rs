//! A tab's other cores: helper Web Workers that compute the gradient of
//! their share of each training step, so one tab trains on several cores
//! and the coordinator still sees one device (one update per round).
//!
//! Each helper has a `SharedArrayBuffer` of its own (the page must be
//! cross-origin isolated; the coordinator's pages are). The tab's session
//! worker writes the parameters and the helper's share of the batch into
//! it, raises the job flag and computes its own share meanwhile; the
//! helper ([`ShareWorker`]) computes its gradient, writes it back and
//! lowers the flag. The gradients are averaged by share size and applied
//! in one SGD step, which equals one step on the whole batch to float
//! tolerance (`hearth-worker`'s share test).

use hearth_worker::model::MAX_TRAIN_BATCH;
use hearth_worker::{ARCHITECTURES, IMAGE_LEN, Model, ModelConfig, TrainStats};
use js_sys::{Atomics, Float32Array, Int32Array, SharedArrayBuffer, Uint8Array};
use wasm_bindgen::prelude::*;

/// Control words at the start of a buffer.
const CONTROL: usize = 8;
/// Control word indices.
const STATE: u32 = 0;
const COUNT: u32 = 1;
const ARCH: u32 = 2;
const PARAMS: u32 = 3;
const CORRECT: u32 = 4;
const LOSS: u32 = 5;
/// States.
const JOB: i32 = 1;
const DONE: i32 = 2;
const FAILED: i32 = 3;

/// The largest parameter count of the architectures this module builds.
fn max_params() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        ARCHITECTURES
            .iter()
            .filter_map(|a| Model::new(&config(a)).ok())
            .map(|m| m.params().len())
            .max()
            .unwrap_or(0)
    })
}

fn config(arch: &str) -> ModelConfig {
    ModelConfig {
        arch: arch.into(),
        seed: 0,
        optimizer: Default::default(),
    }
}

/// Bytes of one helper's buffer.
#[wasm_bindgen]
pub fn helper_buffer_bytes() -> usize {
    CONTROL * 4 + 2 * 4 * max_params() + MAX_TRAIN_BATCH * (IMAGE_LEN + 1)
}

/// Views of one helper's buffer.
struct Link {
    control: Int32Array,
    params: Float32Array,
    grads: Float32Array,
    pixels: Uint8Array,
    labels: Uint8Array,
}

impl Link {
    fn new(buffer: &SharedArrayBuffer) -> Self {
        let n = max_params() as u32;
        let control = Int32Array::new_with_byte_offset_and_length(buffer, 0, CONTROL as u32);
        let mut at = CONTROL as u32 * 4;
        let params = Float32Array::new_with_byte_offset_and_length(buffer, at, n);
        at += 4 * n;
        let grads = Float32Array::new_with_byte_offset_and_length(buffer, at, n);
        at += 4 * n;
        let images = (MAX_TRAIN_BATCH * IMAGE_LEN) as u32;
        let pixels = Uint8Array::new_with_byte_offset_and_length(buffer, at, images);
        at += images;
        let labels =
            Uint8Array::new_with_byte_offset_and_length(buffer, at, MAX_TRAIN_BATCH as u32);
        Self {
            control,
            params,
            grads,
            pixels,
            labels,
        }
    }

    fn get(&self, i: u32) -> i32 {
        Atomics::load(&self.control, i).unwrap_or(FAILED)
    }

    fn set(&self, i: u32, v: i32) {
        let _ = Atomics::store(&self.control, i, v);
    }
}

/// The session worker's side: its helpers.
pub struct Helpers {
    links: Vec<Link>,
}

impl Helpers {
    /// Helpers over `buffers` (each already handed to a helper worker).
    pub fn new(buffers: &[SharedArrayBuffer]) -> Self {
        Self {
            links: buffers.iter().map(Link::new).collect(),
        }
    }

    /// Cores a step uses: the helpers and this worker.
    pub fn threads(&self) -> usize {
        self.links.len() + 1
    }

    /// One SGD step of `model` on the batch, its gradient computed in
    /// shares by this worker and the helpers.
    pub fn train_batch(
        &self,
        model: &mut Model,
        pixels: &[u8],
        labels: &[u8],
    ) -> Result<TrainStats, String> {
        let n = labels.len();
        let parts = self.threads().min(n.max(1));
        if parts <= 1 || pixels.len() != n * IMAGE_LEN {
            return model.train_batch(pixels, labels).map_err(|e| e.to_string());
        }
        let arch = ARCHITECTURES
            .iter()
            .position(|a| *a == model.arch())
            .ok_or("an architecture helpers cannot build")? as i32;
        let bounds: Vec<usize> = (0..=parts).map(|i| n * i / parts).collect();
        let n_params = model.params().len();
        // Post every helper's job first, then compute this worker's share.
        for (link, w) in self.links.iter().zip(bounds.windows(2).skip(1)) {
            let (lo, hi) = (w[0], w[1]);
            link.params
                .subarray(0, n_params as u32)
                .copy_from(model.params());
            link.pixels
                .subarray(0, ((hi - lo) * IMAGE_LEN) as u32)
                .copy_from(&pixels[lo * IMAGE_LEN..hi * IMAGE_LEN]);
            link.labels
                .subarray(0, (hi - lo) as u32)
                .copy_from(&labels[lo..hi]);
            link.set(COUNT, (hi - lo) as i32);
            link.set(ARCH, arch);
            link.set(PARAMS, n_params as i32);
            link.set(STATE, JOB);
            let _ = Atomics::notify(&link.control, STATE);
        }
        let own = model
            .compute_gradient(&pixels[..bounds[1] * IMAGE_LEN], &labels[..bounds[1]])
            .map_err(|e| e.to_string())?;
        let weight = |lo: usize, hi: usize| (hi - lo) as f32 / n as f32;
        let w0 = weight(bounds[0], bounds[1]);
        let mut grads: Vec<f32> = model.gradient().iter().map(|g| w0 * g).collect();
        let (mut loss, mut correct) = (w0 * own.loss, own.correct);
        let mut theirs = vec![0.0f32; n_params];
        let mut failed = None;
        for (link, w) in self.links.iter().zip(bounds.windows(2).skip(1)) {
            while link.get(STATE) == JOB {
                let _ = Atomics::wait(&link.control, STATE, JOB);
            }
            if link.get(STATE) != DONE {
                failed = Some("a helper worker failed its share");
                continue;
            }
            link.grads.subarray(0, n_params as u32).copy_to(&mut theirs);
            let wi = weight(w[0], w[1]);
            for (g, t) in grads.iter_mut().zip(&theirs) {
                *g += wi * t;
            }
            loss += wi * f32::from_bits(link.get(LOSS) as u32);
            correct += link.get(CORRECT) as u32;
        }
        if let Some(why) = failed {
            return Err(why.into());
        }
        model.apply_gradient(&grads).map_err(|e| e.to_string())?;
        Ok(TrainStats {
            loss,
            correct,
            count: n as u32,
        })
    }
}

/// A helper worker's side: computes the gradient of the share it is given.
#[wasm_bindgen]
pub struct ShareWorker {
    link: Link,
    model: Option<(i32, Model)>,
    params: Vec<f32>,
}

#[wasm_bindgen]
impl ShareWorker {
    /// A helper over `buffer` (the one its session worker made for it).
    #[wasm_bindgen(constructor)]
    pub fn new(buffer: SharedArrayBuffer) -> ShareWorker {
        ShareWorker {
            link: Link::new(&buffer),
            model: None,
            params: Vec::new(),
        }
    }

    /// Does the posted job, if there is one (the helper's loop waits on the
    /// buffer's first word between jobs); false when there was none.
    pub fn step(&mut self) -> bool {
        if self.link.get(STATE) != JOB {
            return false;
        }
        let outcome = self.job();
        match outcome {
            Ok(stats) => {
                self.link.set(LOSS, stats.loss.to_bits() as i32);
                self.link.set(CORRECT, stats.correct as i32);
                self.link.set(STATE, DONE);
            }
            Err(_) => self.link.set(STATE, FAILED),
        }
        let _ = Atomics::notify(&self.link.control, STATE);
        true
    }

    fn job(&mut self) -> Result<TrainStats, String> {
        let arch = self.link.get(ARCH);
        let count = usize::try_from(self.link.get(COUNT)).map_err(|e| e.to_string())?;
        let n = usize::try_from(self.link.get(PARAMS)).map_err(|e| e.to_string())?;
        if count == 0 || count > MAX_TRAIN_BATCH || n > self.link.params.length() as usize {
            return Err("a job out of range".into());
        }
        if self.model.as_ref().is_none_or(|(a, _)| *a != arch) {
            let name = usize::try_from(arch)
                .ok()
                .and_then(|i| ARCHITECTURES.get(i))
                .ok_or("an unknown architecture")?;
            let model = Model::new(&config(name)).map_err(|e| e.to_string())?;
            self.model = Some((arch, model));
        }
        let Some((_, model)) = self.model.as_mut() else {
            return Err("no model".into());
        };
        self.params.resize(n, 0.0);
        self.link
            .params
            .subarray(0, n as u32)
            .copy_to(&mut self.params);
        model.set_params(&self.params).map_err(|e| e.to_string())?;
        let pixels = self
            .link
            .pixels
            .subarray(0, (count * IMAGE_LEN) as u32)
            .to_vec();
        let labels = self.link.labels.subarray(0, count as u32).to_vec();
        let stats = model
            .compute_gradient(&pixels, &labels)
            .map_err(|e| e.to_string())?;
        self.link
            .grads
            .subarray(0, n as u32)
            .copy_from(model.gradient());
        Ok(stats)
    }
}
