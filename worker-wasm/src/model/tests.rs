//! Whole networks: gradients against the float64 reference, training steps, errors.

use super::*;
use crate::layers::gradcheck;

fn config(arch: &str) -> ModelConfig {
    ModelConfig {
        arch: arch.into(),
        seed: 42,
        optimizer: OptimizerConfig::default(),
    }
}

/// Tiny deterministic "images" (not MNIST: unit tests only).
fn batch(n: usize, seed: u32) -> (Vec<u8>, Vec<u8>) {
    let v = gradcheck::values(n * IMAGE_LEN, seed);
    let pixels = v.iter().map(|x| ((x + 1.0) * 127.5) as u8).collect();
    let labels = (0..n).map(|i| ((i as u32 * 7 + seed) % 10) as u8).collect();
    (pixels, labels)
}

fn mean_loss(m: &mut Model, px: &[u8], lb: &[u8]) -> f64 {
    m.evaluate(px, lb, false).unwrap().loss_sum / lb.len() as f64
}

/// Whole-network gradient check. For every tensor and a random direction
/// `d` over it, the analytic directional derivative `∇L·d` of the float32
/// model must match the central difference `(L(w+εd) − L(w−εd)) / 2ε`
/// taken on the float64 reference implementation (ε = 1e-6), within a
/// relative error of 1e-3. In float32 alone no ε works for the ReLU and
/// max-pool networks: a large ε crosses kinks, a small one drowns in
/// rounding noise (the smooth `lenet5-tanh` is also checked that way below).
#[test]
fn whole_network_gradients_match_finite_differences() {
    for arch in crate::ARCHITECTURES {
        let mut m = Model::new(&config(arch)).unwrap();
        let (px, lb) = batch(2, 5);
        let stats = m.compute_gradient(&px, &lb).unwrap();
        let params: Vec<f64> = m.params().iter().map(|&w| w as f64).collect();
        let ref_loss = crate::reference::mean_loss(arch, &params, &px, &lb);
        assert!(
            (stats.loss as f64 - ref_loss).abs() < 1e-5,
            "{arch}: loss {} vs reference {ref_loss}",
            stats.loss
        );
        for (k, t) in m.describe().tensors.into_iter().enumerate() {
            let d = gradcheck::values(t.len, 100 + k as u32);
            let eps = 1e-6;
            let at = |sign: f64| {
                let mut p = params.clone();
                for (w, di) in p[t.offset..t.offset + t.len].iter_mut().zip(&d) {
                    *w += sign * eps * *di as f64;
                }
                crate::reference::mean_loss(arch, &p, &px, &lb)
            };
            let num = (at(1.0) - at(-1.0)) / (2.0 * eps);
            let ana: f64 = m.gradient()[t.offset..t.offset + t.len]
                .iter()
                .zip(&d)
                .map(|(g, di)| *g as f64 * *di as f64)
                .sum();
            let e = (num - ana).abs() / num.abs().max(ana.abs()).max(1e-9);
            assert!(
                e < 1e-3,
                "{arch} {}: ∇L·d = {ana:.6e}, finite difference {num:.6e}, relative error {e:.2e}",
                t.name
            );
        }
    }
}

/// The smooth network is also checked purely in float32 (ε = 1e-3).
#[test]
fn smooth_network_passes_a_float32_gradient_check() {
    let mut m = Model::new(&config("lenet5-tanh")).unwrap();
    let (px, lb) = batch(4, 5);
    m.compute_gradient(&px, &lb).unwrap();
    let grad = m.gradient().to_vec();
    let params = m.params().to_vec();
    let eps = 1e-3f32;
    for (k, t) in m.describe().tensors.into_iter().enumerate() {
        let d = gradcheck::values(t.len, 100 + k as u32);
        let mut at = |sign: f32| {
            let mut p = params.clone();
            for (w, di) in p[t.offset..t.offset + t.len].iter_mut().zip(&d) {
                *w += sign * eps * di;
            }
            m.set_params(&p).unwrap();
            mean_loss(&mut m, &px, &lb)
        };
        let num = (at(1.0) - at(-1.0)) / (2.0 * eps as f64);
        let ana: f64 = grad[t.offset..t.offset + t.len]
            .iter()
            .zip(&d)
            .map(|(g, di)| *g as f64 * *di as f64)
            .sum();
        let e = (num - ana).abs() / num.abs().max(ana.abs()).max(1e-9);
        assert!(e < 1e-3, "lenet5-tanh {}: relative error {e:.2e}", t.name);
    }
}

#[test]
fn same_seed_same_model_and_training_lowers_loss() {
    let (px, lb) = batch(16, 1);
    let mut a = Model::new(&config("lenet5")).unwrap();
    let b = Model::new(&config("lenet5")).unwrap();
    assert_eq!(a.params(), b.params());
    let other = Model::new(&ModelConfig {
        seed: 43,
        ..config("lenet5")
    })
    .unwrap();
    assert_ne!(a.params(), other.params());
    let before = mean_loss(&mut a, &px, &lb);
    for _ in 0..60 {
        a.train_batch(&px, &lb).unwrap();
    }
    let after = mean_loss(&mut a, &px, &lb);
    assert!(after < before * 0.5, "loss {before} -> {after}");
    assert!(a.optimizer_state().iter().any(|&v| v != 0.0));
}

#[test]
fn evaluation_is_independent_of_chunking_and_batch_buffers() {
    let mut m = Model::new(&config("lenet5")).unwrap();
    let (px, lb) = batch(EVAL_CHUNK + 3, 2);
    let all = m.evaluate(&px, &lb, true).unwrap();
    let one = m.evaluate(&px[..IMAGE_LEN], &lb[..1], true).unwrap();
    assert_eq!(all.count as usize, EVAL_CHUNK + 3);
    assert_eq!(all.predictions.len(), EVAL_CHUNK + 3);
    assert_eq!(one.predictions[0], all.predictions[0]);
    let probs = m.predict(&px[..2 * IMAGE_LEN]).unwrap();
    assert_eq!(probs.len(), 20);
    assert!((probs[..10].iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut m = Model::new(&config("lenet5")).unwrap();
    let (px, lb) = batch(2, 3);
    let n = m.params().len();
    assert!(matches!(
        m.set_params(&vec![0.0; n - 1]),
        Err(Error::WrongLength {
            expected: 61_706,
            got: 61_705,
            ..
        })
    ));
    let mut nan = m.params().to_vec();
    nan[7] = f32::NAN;
    assert!(matches!(
        m.set_params(&nan),
        Err(Error::NonFinite { index: 7, .. })
    ));
    assert!(m.set_optimizer_state(&vec![0.0; n + 1]).is_err());
    assert!(
        matches!(m.train_batch(&px, &[1, 10]), Err(Error::InvalidBatch(e)) if e.contains("label 10"))
    );
    assert!(matches!(
        m.train_batch(&px[1..], &lb),
        Err(Error::InvalidBatch(_))
    ));
    assert!(matches!(
        m.train_batch(&[], &[]),
        Err(Error::InvalidBatch(_))
    ));
    assert!(m.evaluate(&px, &lb[..1], false).is_err());
    assert!(m.predict(&px[..100]).is_err());
    assert!(matches!(
        Model::new(&ModelConfig {
            arch: "vgg".into(),
            ..config("lenet5")
        }),
        Err(Error::UnknownArchitecture { .. })
    ));
    let bad_lr = OptimizerConfig {
        learning_rate: f32::NAN,
        ..OptimizerConfig::default()
    };
    assert!(m.set_optimizer(bad_lr).is_err());
    // The model is intact after all of that.
    assert!(m.params().iter().all(|x| x.is_finite()));
    m.train_batch(&px, &lb).unwrap();
}

#[test]
fn describe_lays_out_the_flat_vector() {
    let m = Model::new(&config("lenet-mxnet")).unwrap();
    let d = m.describe();
    assert_eq!(d.param_count, 431_080);
    assert_eq!(d.optimizer_state_len, 431_080);
    let mut next = 0;
    for t in &d.tensors {
        assert_eq!(t.offset, next);
        assert_eq!(t.len, t.shape.iter().product::<usize>());
        next += t.len;
    }
    assert_eq!(next, d.param_count);
    assert_eq!(d.tensors[0].name, "conv1.weight");
    assert_eq!(d.layers.last().unwrap().output_shape, vec![10]);
}

/// What a tab's helper workers do: gradients of shares of a batch, averaged
/// by share size and applied once, equal one step on the whole batch (to
/// float tolerance); a wrong or non-finite gradient is refused.
#[test]
fn a_step_from_share_gradients_equals_a_step_on_the_whole_batch() {
    let (px, lb) = batch(10, 3);
    let mut whole = Model::new(&config("lenet5")).unwrap();
    let mut shared = Model::new(&config("lenet5")).unwrap();
    let mut helper = Model::new(&config("lenet5")).unwrap();
    for _ in 0..3 {
        let full = whole.train_batch(&px, &lb).unwrap();
        helper.set_params(shared.params()).unwrap();
        let split = 6;
        let a = shared
            .compute_gradient(&px[..split * IMAGE_LEN], &lb[..split])
            .unwrap();
        let b = helper
            .compute_gradient(&px[split * IMAGE_LEN..], &lb[split..])
            .unwrap();
        let (wa, wb) = (split as f32 / 10.0, (10 - split) as f32 / 10.0);
        let mean: Vec<f32> = shared
            .gradient()
            .iter()
            .zip(helper.gradient())
            .map(|(x, y)| wa * x + wb * y)
            .collect();
        shared.apply_gradient(&mean).unwrap();
        assert_eq!(a.correct + b.correct, full.correct);
        assert!((wa * a.loss + wb * b.loss - full.loss).abs() < 1e-5);
    }
    for (x, y) in whole.params().iter().zip(shared.params()) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
    assert!(shared.apply_gradient(&[0.0; 3]).is_err());
    let mut nan = vec![0.0; shared.params().len()];
    nan[9] = f32::NAN;
    assert!(shared.apply_gradient(&nan).is_err());
}
