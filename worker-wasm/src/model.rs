//! A model: layers, flat parameters, gradients, momentum, and the buffers of
//! one batch. Buffers grow to the largest batch seen and are then reused, so
//! a training step allocates nothing.

use core::ops::Range;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::arch::{self, CLASSES, IMAGE_LEN};
use crate::error::{Error, Result};
use crate::layers::Layer;
use crate::loss::softmax_cross_entropy;
use crate::optimizer::{OptimizerConfig, sgd_step};

/// Largest batch [`Model::train_batch`] accepts.
pub const MAX_TRAIN_BATCH: usize = 4096;
/// Evaluation and prediction run in chunks of this many samples (bounds memory).
pub const EVAL_CHUNK: usize = 256;

/// What a model is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// One of [`arch::ARCHITECTURES`].
    pub arch: String,
    /// Initialization seed.
    pub seed: u64,
    /// Optimizer hyper-parameters.
    pub optimizer: OptimizerConfig,
}

/// One named tensor inside the flat parameter vector.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// e.g. "c1.weight".
    pub name: String,
    /// e.g. `[6, 1, 5, 5]`.
    pub shape: Vec<usize>,
    /// Offset in the flat vector.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

/// One layer, as described to hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    /// e.g. "c1".
    pub name: String,
    /// e.g. "conv2d 5x5 pad 2".
    pub kind: String,
    /// Per-sample output shape.
    pub output_shape: Vec<usize>,
    /// Trainable parameters.
    pub param_count: usize,
}

/// The architecture of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchInfo {
    /// Architecture name.
    pub name: String,
    /// Per-sample input shape `[1, 28, 28]`.
    pub input_shape: Vec<usize>,
    /// Layers in execution order.
    pub layers: Vec<LayerInfo>,
    /// Layout of the flat parameter vector.
    pub tensors: Vec<TensorInfo>,
    /// Total trainable parameters.
    pub param_count: usize,
    /// Length of the optimizer state.
    pub optimizer_state_len: usize,
}

/// Outcome of one training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainStats {
    /// Mean loss of the batch before the update.
    pub loss: f32,
    /// Correctly classified samples before the update.
    pub correct: u32,
    /// Batch size.
    pub count: u32,
}

/// Outcome of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalStats {
    /// Sum of per-sample losses.
    pub loss_sum: f64,
    /// Correctly classified samples.
    pub correct: u32,
    /// Samples evaluated.
    pub count: u32,
    /// Predicted class per sample, if asked for.
    pub predictions: Vec<u8>,
}

/// A trainable network with its optimizer.
pub struct Model {
    arch: String,
    layers: Vec<Box<dyn Layer>>,
    /// Parameter range of each layer in the flat vectors.
    ranges: Vec<Range<usize>>,
    /// `(range, weight-decay multiplier)` of each tensor.
    decay: Vec<(Range<usize>, f32)>,
    tensors: Vec<TensorInfo>,
    params: Vec<f32>,
    grads: Vec<f32>,
    velocity: Vec<f32>,
    optimizer: OptimizerConfig,
    /// `acts[i]` is the input of layer `i`; the last one holds the logits.
    acts: Vec<Vec<f32>>,
    /// Gradients of `acts`.
    dacts: Vec<Vec<f32>>,
    probs: Vec<f32>,
    capacity: usize,
}

impl Model {
    /// Builds and initializes a model (Xavier-uniform weights, zero biases).
    pub fn new(config: &ModelConfig) -> Result<Self> {
        config.optimizer.validate()?;
        let layers = arch::build(&config.arch)?;
        let mut ranges = Vec::new();
        let mut decay = Vec::new();
        let mut tensors = Vec::new();
        let mut params = Vec::new();
        let mut rng = Pcg64Mcg::seed_from_u64(config.seed);
        for layer in &layers {
            let start = params.len();
            for spec in layer.tensors() {
                let offset = params.len();
                match spec.xavier_fans {
                    Some((fan_in, fan_out)) => {
                        let a = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                        params.extend((0..spec.numel()).map(|_| rng.random_range(-a..a)));
                    }
                    None => params.resize(offset + spec.numel(), 0.0),
                }
                decay.push((offset..params.len(), spec.wd_mult));
                tensors.push(TensorInfo {
                    name: format!("{}.{}", layer.name(), spec.name),
                    shape: spec.shape.clone(),
                    offset,
                    len: spec.numel(),
                });
            }
            ranges.push(start..params.len());
        }
        let n = params.len();
        let acts = vec![Vec::new(); layers.len() + 1];
        Ok(Self {
            arch: config.arch.clone(),
            layers,
            ranges,
            decay,
            tensors,
            grads: vec![0.0; n],
            velocity: vec![0.0; n],
            params,
            optimizer: config.optimizer,
            dacts: acts.clone(),
            acts,
            probs: Vec::new(),
            capacity: 0,
        })
    }

    /// The architecture: layers, tensors, sizes.
    pub fn describe(&self) -> ArchInfo {
        let layers = self
            .layers
            .iter()
            .zip(&self.ranges)
            .map(|(l, r)| LayerInfo {
                name: l.name().to_string(),
                kind: l.kind(),
                output_shape: l.out_shape(),
                param_count: r.len(),
            })
            .collect();
        ArchInfo {
            name: self.arch.clone(),
            input_shape: vec![1, arch::IMAGE_SIDE, arch::IMAGE_SIDE],
            layers,
            tensors: self.tensors.clone(),
            param_count: self.params.len(),
            optimizer_state_len: self.velocity.len(),
        }
    }

    /// Architecture name.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The flat parameter vector.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Replaces all parameters (length and finiteness are checked first).
    pub fn set_params(&mut self, params: &[f32]) -> Result<()> {
        self.check_vector("parameter vector", params)?;
        self.params.copy_from_slice(params);
        Ok(())
    }

    /// The optimizer state: momentum buffers, laid out like the parameters.
    pub fn optimizer_state(&self) -> &[f32] {
        &self.velocity
    }

    /// Replaces the optimizer state (length and finiteness are checked first).
    pub fn set_optimizer_state(&mut self, state: &[f32]) -> Result<()> {
        self.check_vector("optimizer state", state)?;
        self.velocity.copy_from_slice(state);
        Ok(())
    }

    /// Current hyper-parameters.
    pub fn optimizer(&self) -> OptimizerConfig {
        self.optimizer
    }

    /// Changes hyper-parameters, keeping the momentum buffers.
    pub fn set_optimizer(&mut self, config: OptimizerConfig) -> Result<()> {
        config.validate()?;
        self.optimizer = config;
        Ok(())
    }

    /// The gradient of the last [`Model::train_batch`] or [`Model::compute_gradient`].
    pub fn gradient(&self) -> &[f32] {
        &self.grads
    }

    /// Forward, backward and one SGD step on a batch of MNIST-shaped images.
    pub fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<TrainStats> {
        let stats = self.compute_gradient(pixels, labels)?;
        let grads = std::mem::take(&mut self.grads);
        self.step(&grads);
        self.grads = grads;
        Ok(stats)
    }

    /// One SGD step with a gradient computed elsewhere (e.g. the mean of
    /// several workers' [`Model::compute_gradient`] over shares of a batch).
    pub fn apply_gradient(&mut self, grads: &[f32]) -> Result<()> {
        self.check_vector("gradient", grads)?;
        self.step(grads);
        Ok(())
    }

    fn step(&mut self, grads: &[f32]) {
        for (range, wd_mult) in &self.decay {
            let r = range.clone();
            sgd_step(
                &self.optimizer,
                *wd_mult,
                &mut self.params[r.clone()],
                &mut self.velocity[r.clone()],
                &grads[r],
            );
        }
    }

    /// Forward and backward only: fills [`Model::gradient`] with the gradient
    /// of the mean loss; parameters are not changed.
    pub fn compute_gradient(&mut self, pixels: &[u8], labels: &[u8]) -> Result<TrainStats> {
        let batch = check_batch(pixels, labels, MAX_TRAIN_BATCH)?;
        self.forward(pixels, batch);
        let last = self.layers.len();
        let totals = softmax_cross_entropy(
            &self.acts[last][..batch * CLASSES],
            labels,
            &mut self.probs,
            Some(&mut self.dacts[last][..batch * CLASSES]),
        );
        self.grads.fill(0.0);
        for i in (0..last).rev() {
            self.backward_layer(i, batch);
        }
        Ok(TrainStats {
            loss: (totals.loss_sum / batch as f64) as f32,
            correct: totals.correct,
            count: batch as u32,
        })
    }

    /// Loss and accuracy on a batch of any size; the model is not changed.
    pub fn evaluate(
        &mut self,
        pixels: &[u8],
        labels: &[u8],
        want_predictions: bool,
    ) -> Result<EvalStats> {
        let total = check_batch(pixels, labels, usize::MAX)?;
        let mut stats = EvalStats {
            loss_sum: 0.0,
            correct: 0,
            count: total as u32,
            predictions: Vec::new(),
        };
        for (px, lb) in pixels
            .chunks(EVAL_CHUNK * IMAGE_LEN)
            .zip(labels.chunks(EVAL_CHUNK))
        {
            let batch = lb.len();
            self.forward(px, batch);
            let t = softmax_cross_entropy(
                &self.acts[self.layers.len()][..batch * CLASSES],
                lb,
                &mut self.probs,
                None,
            );
            stats.loss_sum += t.loss_sum;
            stats.correct += t.correct;
            if want_predictions {
                stats.predictions.extend(
                    self.probs[..batch * CLASSES]
                        .chunks_exact(CLASSES)
                        .map(argmax),
                );
            }
        }
        Ok(stats)
    }

    /// Class probabilities (`count × 10`) for `count` images.
    pub fn predict(&mut self, pixels: &[u8]) -> Result<Vec<f32>> {
        if pixels.is_empty() || !pixels.len().is_multiple_of(IMAGE_LEN) {
            return Err(Error::InvalidBatch(format!(
                "{} pixel bytes is not a positive multiple of {IMAGE_LEN} (28x28)",
                pixels.len()
            )));
        }
        let mut out = Vec::with_capacity(pixels.len() / IMAGE_LEN * CLASSES);
        let zeros = [0u8; EVAL_CHUNK];
        for px in pixels.chunks(EVAL_CHUNK * IMAGE_LEN) {
            let batch = px.len() / IMAGE_LEN;
            self.forward(px, batch);
            let last = self.layers.len();
            softmax_cross_entropy(
                &self.acts[last][..batch * CLASSES],
                &zeros[..batch],
                &mut self.probs,
                None,
            );
            out.extend_from_slice(&self.probs[..batch * CLASSES]);
        }
        Ok(out)
    }

    /// Backward pass of layer `i`: adds its parameter gradients and, except
    /// for the first layer (whose input is the image), writes its input gradient.
    fn backward_layer(&mut self, i: usize, batch: usize) {
        let (lo, hi) = self.dacts.split_at_mut(i + 1);
        let dx = if i > 0 { Some(&mut lo[i][..]) } else { None };
        let r = self.ranges[i].clone();
        self.layers[i].backward(
            &self.params[r.clone()],
            &self.acts[i],
            &self.acts[i + 1],
            &hi[0],
            dx,
            &mut self.grads[r],
            batch,
        );
    }

    /// Runs all layers on `batch` images; the logits end up in the last buffer.
    fn forward(&mut self, pixels: &[u8], batch: usize) {
        self.reserve(batch);
        for (x, &p) in self.acts[0].iter_mut().zip(&pixels[..batch * IMAGE_LEN]) {
            *x = p as f32 / 255.0;
        }
        for i in 0..self.layers.len() {
            let (lo, hi) = self.acts.split_at_mut(i + 1);
            let r = self.ranges[i].clone();
            self.layers[i].forward(&self.params[r], &lo[i], &mut hi[0], batch);
        }
    }

    /// Forward and backward time of each layer over `reps` training steps on
    /// one batch (native profiling aid; parameters are not updated).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn layer_times(
        &mut self,
        pixels: &[u8],
        labels: &[u8],
        reps: usize,
    ) -> Result<Vec<(String, f64, f64)>> {
        use std::time::Instant;
        let batch = check_batch(pixels, labels, MAX_TRAIN_BATCH)?;
        let n = self.layers.len();
        let mut times = vec![(0.0, 0.0); n];
        for _ in 0..reps {
            self.forward(pixels, batch);
            for (i, t) in times.iter_mut().enumerate() {
                let (lo, hi) = self.acts.split_at_mut(i + 1);
                let r = self.ranges[i].clone();
                let start = Instant::now();
                self.layers[i].forward(&self.params[r], &lo[i], &mut hi[0], batch);
                t.0 += start.elapsed().as_secs_f64();
            }
            let (_, hi) = self.dacts.split_at_mut(n);
            softmax_cross_entropy(
                &self.acts[n][..batch * CLASSES],
                labels,
                &mut self.probs,
                Some(&mut hi[0][..batch * CLASSES]),
            );
            for i in (0..n).rev() {
                let start = Instant::now();
                self.backward_layer(i, batch);
                times[i].1 += start.elapsed().as_secs_f64();
            }
        }
        Ok(self
            .layers
            .iter()
            .zip(times)
            .map(|(l, (f, b))| (l.name().to_string(), f / reps as f64, b / reps as f64))
            .collect())
    }

    /// Grows the batch buffers to hold `batch` samples (never shrinks them).
    fn reserve(&mut self, batch: usize) {
        if batch <= self.capacity {
            return;
        }
        for (i, (a, d)) in self.acts.iter_mut().zip(self.dacts.iter_mut()).enumerate() {
            let per_sample = if i < self.layers.len() {
                self.layers[i].in_len()
            } else {
                CLASSES
            };
            a.resize(per_sample * batch, 0.0);
            d.resize(per_sample * batch, 0.0);
        }
        self.probs.resize(CLASSES * batch, 0.0);
        self.capacity = batch;
    }

    fn check_vector(&self, what: &'static str, v: &[f32]) -> Result<()> {
        if v.len() != self.params.len() {
            return Err(Error::WrongLength {
                what,
                arch: self.arch.clone(),
                expected: self.params.len(),
                got: v.len(),
            });
        }
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                what,
                index,
                value: v[index],
            });
        }
        Ok(())
    }
}

/// Validates a batch and returns its size.
fn check_batch(pixels: &[u8], labels: &[u8], max: usize) -> Result<usize> {
    let n = labels.len();
    if n == 0 {
        return Err(Error::InvalidBatch("the batch is empty".into()));
    }
    if n > max {
        return Err(Error::InvalidBatch(format!(
            "{n} samples is more than the maximum of {max}"
        )));
    }
    if pixels.len() != n * IMAGE_LEN {
        return Err(Error::InvalidBatch(format!(
            "{} labels need {} pixel bytes (28x28 each), got {}",
            n,
            n * IMAGE_LEN,
            pixels.len()
        )));
    }
    if let Some(i) = labels.iter().position(|&l| l as usize >= CLASSES) {
        return Err(Error::InvalidBatch(format!(
            "label {} at index {i} is not a digit 0-9",
            labels[i]
        )));
    }
    Ok(n)
}

fn argmax(p: &[f32]) -> u8 {
    let mut best = 0;
    for i in 1..p.len() {
        if p[i] > p[best] {
            best = i;
        }
    }
    best as u8
}

#[cfg(test)]
mod tests;
