//! Network layers. Activations are batches of samples laid out one after the
//! other, each sample channel-major (`N × C × H × W`, or `N × F` for dense).

mod activation;
mod conv;
mod dense;
mod pool;
mod sparse;

pub use activation::{Relu, Tanh};
pub use conv::Conv2d;
pub use dense::Dense;
pub use pool::{Pool2x2, PoolKind};

/// A trainable tensor a layer owns, and how to initialize it.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    /// Name suffix, e.g. "weight" (the layer name is prefixed).
    pub name: &'static str,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Xavier fan-in and fan-out; `None` for zero-initialized tensors (biases).
    pub xavier_fans: Option<(usize, usize)>,
    /// Multiplier of the optimizer's weight decay (0 for biases, as in MXNet).
    pub wd_mult: f32,
}

impl TensorSpec {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One step of the network, with its forward and backward pass.
///
/// `params` and `dparams` are this layer's own slice of the flat vectors, in
/// the order of [`Layer::tensors`]. Buffers hold `batch` samples.
pub trait Layer {
    /// Layer name, e.g. "c1".
    fn name(&self) -> &str;
    /// Human-readable kind, e.g. "conv2d 5x5 pad 2".
    fn kind(&self) -> String;
    /// Per-sample output shape.
    fn out_shape(&self) -> Vec<usize>;
    /// Per-sample input length.
    fn in_len(&self) -> usize;
    /// Per-sample output length.
    fn out_len(&self) -> usize {
        self.out_shape().iter().product()
    }
    /// Trainable tensors (empty for parameter-free layers).
    fn tensors(&self) -> Vec<TensorSpec> {
        Vec::new()
    }
    /// `y = f(x)`.
    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], batch: usize);
    /// Given `dy = ∂L/∂y`, add `∂L/∂params` into `dparams` and, if asked,
    /// write `∂L/∂x` into `dx`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        params: &[f32],
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dparams: &mut [f32],
        batch: usize,
    );
}

/// Adds `sum(v)` to `*out`, summing in four fixed lanes (deterministic, fast).
pub(crate) fn add_sum(v: &[f32], out: &mut f32) {
    use crate::simd::F32x4;
    let mut acc = F32x4::zero();
    let mut chunks = v.chunks_exact(4);
    for c in &mut chunks {
        acc = acc + F32x4::load(c);
    }
    let mut s = acc.sum();
    for &x in chunks.remainder() {
        s += x;
    }
    *out += s;
}

#[cfg(test)]
pub(crate) mod gradcheck {
    //! Finite-difference checks shared by the layer tests.
    use super::Layer;

    /// Deterministic pseudo-random values in [-1, 1).
    pub fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// `L = Σ y ⊙ r` in f64 for a fixed random `r`.
    fn objective(layer: &mut dyn Layer, params: &[f32], x: &[f32], r: &[f32], batch: usize) -> f64 {
        let mut y = vec![0.0; layer.out_len() * batch];
        layer.forward(params, x, &mut y, batch);
        y.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    /// Relative error `‖num − ana‖ / max(‖num‖, ‖ana‖)`.
    pub fn rel_err(num: &[f64], ana: &[f32]) -> f64 {
        let diff: f64 = num
            .iter()
            .zip(ana)
            .map(|(n, a)| (n - *a as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let nn: f64 = num.iter().map(|n| n * n).sum::<f64>().sqrt();
        let na: f64 = ana.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        diff / nn.max(na).max(1e-12)
    }

    /// Checks `∂L/∂params` and `∂L/∂x` of `layer` against central differences.
    pub fn check(layer: &mut dyn Layer, batch: usize, eps: f32) {
        let n_params: usize = layer.tensors().iter().map(|t| t.numel()).sum();
        let mut params = values(n_params, 1);
        for p in params.iter_mut() {
            *p *= 0.5;
        }
        let x = values(layer.in_len() * batch, 2);
        let r = values(layer.out_len() * batch, 3);
        let mut y = vec![0.0; layer.out_len() * batch];
        layer.forward(&params, &x, &mut y, batch);
        let mut dx = vec![0.0; x.len()];
        let mut dp = vec![0.0; n_params];
        layer.backward(&params, &x, &y, &r, Some(&mut dx), &mut dp, batch);

        let mut num_p = vec![0.0f64; n_params];
        for i in 0..n_params {
            let orig = params[i];
            params[i] = orig + eps;
            let up = objective(layer, &params, &x, &r, batch);
            params[i] = orig - eps;
            let down = objective(layer, &params, &x, &r, batch);
            params[i] = orig;
            num_p[i] = (up - down) / (2.0 * eps as f64);
        }
        let mut xs = x.clone();
        let mut num_x = vec![0.0f64; x.len()];
        for i in 0..x.len() {
            xs[i] = x[i] + eps;
            let up = objective(layer, &params, &xs, &r, batch);
            xs[i] = x[i] - eps;
            let down = objective(layer, &params, &xs, &r, batch);
            xs[i] = x[i];
            num_x[i] = (up - down) / (2.0 * eps as f64);
        }
        if n_params > 0 {
            let e = rel_err(&num_p, &dp);
            assert!(
                e < 1e-3,
                "{}: parameter gradient relative error {e:.2e}",
                layer.name()
            );
        }
        let e = rel_err(&num_x, &dx);
        assert!(
            e < 1e-3,
            "{}: input gradient relative error {e:.2e}",
            layer.name()
        );
    }
}
