//! Softmax cross-entropy over the 10 logits of each sample.

use crate::arch::CLASSES;
use crate::math;

/// Per-batch totals of [`softmax_cross_entropy`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LossTotals {
    /// Sum of per-sample losses.
    pub loss_sum: f64,
    /// Samples whose arg-max logit is the label.
    pub correct: u32,
}

/// Writes softmax probabilities of `logits` (`batch × 10`) into `probs` and
/// returns the loss and accuracy totals. If `dlogits` is given it receives
/// `∂(mean loss)/∂logits = (p − onehot) / batch`.
pub fn softmax_cross_entropy(
    logits: &[f32],
    labels: &[u8],
    probs: &mut [f32],
    mut dlogits: Option<&mut [f32]>,
) -> LossTotals {
    let batch = labels.len();
    let inv_batch = 1.0 / batch as f32;
    let mut totals = LossTotals::default();
    for (b, &label) in labels.iter().enumerate() {
        let z = &logits[b * CLASSES..(b + 1) * CLASSES];
        let p = &mut probs[b * CLASSES..(b + 1) * CLASSES];
        let label = label as usize;
        let (mut best, mut max) = (0, z[0]);
        for (i, &v) in z.iter().enumerate().skip(1) {
            if v > max {
                best = i;
                max = v;
            }
        }
        let mut sum = 0.0;
        for (pi, &zi) in p.iter_mut().zip(z) {
            *pi = math::exp(zi - max);
            sum += *pi;
        }
        let inv = 1.0 / sum;
        for pi in p.iter_mut() {
            *pi *= inv;
        }
        totals.loss_sum += (math::ln(sum) - (z[label] - max)) as f64;
        totals.correct += (best == label) as u32;
        if let Some(d) = dlogits.as_deref_mut() {
            let d = &mut d[b * CLASSES..(b + 1) * CLASSES];
            for (i, (di, &pi)) in d.iter_mut().zip(p.iter()).enumerate() {
                let target = if i == label { 1.0 } else { 0.0 };
                *di = (pi - target) * inv_batch;
            }
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let logits: Vec<f32> = (0..20)
            .map(|i| ((i * 37) % 11) as f32 * 0.3 - 1.5)
            .collect();
        let labels = [3u8, 7];
        let mut probs = vec![0.0; 20];
        let mut d = vec![0.0; 20];
        softmax_cross_entropy(&logits, &labels, &mut probs, Some(&mut d));
        let mean_loss = |z: &[f32]| {
            let mut p = vec![0.0; 20];
            softmax_cross_entropy(z, &labels, &mut p, None).loss_sum / 2.0
        };
        let eps = 1e-2;
        let mut num = vec![0.0f64; 20];
        for i in 0..20 {
            let mut z = logits.clone();
            z[i] += eps;
            let up = mean_loss(&z);
            z[i] -= 2.0 * eps;
            num[i] = (up - mean_loss(&z)) / (2.0 * eps as f64);
        }
        let e = crate::layers::gradcheck::rel_err(&num, &d);
        assert!(
            e < 1e-3,
            "softmax cross-entropy gradient relative error {e:.2e}"
        );
        let s: f32 = probs[..10].iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
    }
}
