//! How rounds are planned and results combined: a small trait with the phases
//! of a federated strategy (Flower's `configure_fit` / `aggregate_fit`), so
//! strategies are interchangeable and testable without sockets.

/// A connected worker as a strategy sees it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// Worker name.
    pub name: String,
    /// Measured training throughput (0 until its first result).
    pub images_per_second: f64,
}

/// One worker's validated result of a round.
#[derive(Debug, Clone)]
pub struct Contribution {
    /// Worker name.
    pub worker: String,
    /// Samples it trained on.
    pub samples: u32,
    /// Its parameters after the round minus the round's global parameters.
    pub delta: Vec<f32>,
}

/// A federated training strategy.
pub trait Strategy: Send {
    /// Short name for logs and the run summary.
    fn name(&self) -> String;
    /// Starts from these global parameters.
    fn initialize(&mut self, params: &[f32]);
    /// Phase 1: how many batches each worker gets this round (same order as
    /// `workers`), given how many are pending.
    fn configure_round(&mut self, workers: &[WorkerView], pending: usize) -> Vec<usize>;
    /// Phase 2: folds the round's contributions into `global`. Failed or
    /// rejected workers are simply absent from `contributions`.
    fn aggregate(&mut self, global: &mut [f32], contributions: &[Contribution]);
}

/// Why a result cannot be aggregated.
pub fn validate(delta: &[f32], expected_len: usize) -> Result<(), String> {
    if delta.len() != expected_len {
        return Err(format!(
            "update has {} values, the model has {expected_len}",
            delta.len()
        ));
    }
    if let Some(i) = delta.iter().position(|x| !x.is_finite()) {
        return Err(format!(
            "update has a non-finite value ({}) at index {i}",
            delta[i]
        ));
    }
    Ok(())
}

/// FedAvg with server momentum (FedAvgM).
///
/// Workers run `local_steps` momentum-free SGD steps from the global
/// parameters and return the change. The server averages the changes
/// weighted by samples, `Δ̄`, then applies momentum like MXNet's parameter
/// server: `v ← m·v + Δ̄; w ← w + v`. With one local step `Δ̄` is exactly
/// `−lr·(ḡ + wd·w)` for the mean gradient `ḡ` of all samples of the round, so
/// the update is synchronous SGD with momentum over the round's global batch.
pub struct FedAvgM {
    local_steps: usize,
    momentum: f32,
    velocity: Vec<f32>,
}

impl FedAvgM {
    /// `local_steps` batches per worker per round (scaled by speed), server momentum `momentum`.
    pub fn new(local_steps: usize, momentum: f32) -> Self {
        Self {
            local_steps: local_steps.max(1),
            momentum,
            velocity: Vec::new(),
        }
    }
}

impl Strategy for FedAvgM {
    fn name(&self) -> String {
        format!(
            "fedavgm(local_steps={}, momentum={})",
            self.local_steps, self.momentum
        )
    }

    fn initialize(&mut self, params: &[f32]) {
        self.velocity = vec![0.0; params.len()];
    }

    fn configure_round(&mut self, workers: &[WorkerView], pending: usize) -> Vec<usize> {
        if workers.is_empty() {
            return Vec::new();
        }
        let total = (self.local_steps * workers.len()).min(pending);
        let speeds: Vec<f64> = workers
            .iter()
            .map(|w| w.images_per_second.max(0.0))
            .collect();
        let sum: f64 = speeds.iter().sum();
        let mut shares: Vec<usize> = if sum <= 0.0 || speeds.contains(&0.0) {
            vec![self.local_steps; workers.len()]
        } else {
            // In proportion to speed, at least one batch each.
            speeds
                .iter()
                .map(|s| ((total as f64 * s / sum).round() as usize).max(1))
                .collect()
        };
        // Never hand out more than is pending; trim from the largest share.
        while shares.iter().sum::<usize>() > pending {
            let Some(i) = (0..shares.len())
                .filter(|&i| shares[i] > 0)
                .max_by_key(|&i| shares[i])
            else {
                break;
            };
            shares[i] -= 1;
        }
        shares
    }

    fn aggregate(&mut self, global: &mut [f32], contributions: &[Contribution]) {
        let total: f64 = contributions.iter().map(|c| c.samples as f64).sum();
        if total <= 0.0 {
            return;
        }
        if self.velocity.len() != global.len() {
            self.velocity = vec![0.0; global.len()];
        }
        let mut mean = vec![0.0f32; global.len()];
        for c in contributions {
            let weight = (c.samples as f64 / total) as f32;
            for (m, d) in mean.iter_mut().zip(&c.delta) {
                *m += weight * d;
            }
        }
        for ((w, v), d) in global.iter_mut().zip(self.velocity.iter_mut()).zip(&mean) {
            *v = self.momentum * *v + d;
            *w += *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_worker::{IMAGE_LEN, Model, ModelConfig, OptimizerConfig};

    fn view(name: &str, speed: f64) -> WorkerView {
        WorkerView {
            name: name.into(),
            images_per_second: speed,
        }
    }

    #[test]
    fn rounds_are_shared_by_speed_and_never_exceed_the_queue() {
        let mut s = FedAvgM::new(4, 0.9);
        assert_eq!(
            s.configure_round(&[view("a", 0.0), view("b", 0.0)], 100),
            vec![4, 4]
        );
        assert_eq!(
            s.configure_round(&[view("pi3", 1000.0), view("laptop", 3000.0)], 100),
            vec![2, 6]
        );
        assert_eq!(
            s.configure_round(&[view("a", 1.0), view("b", 1.0)], 3)
                .iter()
                .sum::<usize>(),
            3
        );
        assert!(s.configure_round(&[], 10).is_empty());
    }

    #[test]
    fn invalid_updates_are_named() {
        assert!(validate(&[1.0, 2.0], 2).is_ok());
        assert!(validate(&[1.0], 2).unwrap_err().contains("1 values"));
        assert!(
            validate(&[1.0, f32::NAN], 2)
                .unwrap_err()
                .contains("index 1")
        );
    }

    /// Deterministic MNIST-shaped bytes (unit test: no accuracy is claimed).
    fn batch(n: usize) -> (Vec<u8>, Vec<u8>) {
        let px = (0..n * IMAGE_LEN)
            .map(|i| ((i * 37 + i / 97) % 256) as u8)
            .collect();
        let lb = (0..n).map(|i| (i % 10) as u8).collect();
        (px, lb)
    }

    /// The mathematical check of synchronous SGD: with one local step, N
    /// workers each given b/N samples give the same new global parameters as
    /// one worker given all b — and as plain SGD with momentum on b.
    #[test]
    fn split_batch_equals_one_worker_and_plain_sgd_with_momentum() {
        let opt = OptimizerConfig {
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
        };
        let cfg = ModelConfig {
            arch: "lenet5".into(),
            seed: 3,
            optimizer: opt,
        };
        let worker_cfg = ModelConfig {
            optimizer: OptimizerConfig {
                momentum: 0.0,
                ..opt
            },
            ..cfg.clone()
        };
        let mut reference = Model::new(&cfg).unwrap();
        let w0 = reference.params().to_vec();
        let (px, lb) = batch(64);

        let run = |splits: usize, global: &mut Vec<f32>, strategy: &mut FedAvgM, step: usize| {
            let per = 64 / splits;
            let contributions: Vec<Contribution> = (0..splits)
                .map(|i| {
                    let mut m = Model::new(&worker_cfg).unwrap();
                    m.set_params(global).unwrap();
                    let r = i * per..(i + 1) * per;
                    m.train_batch(&px[r.start * IMAGE_LEN..r.end * IMAGE_LEN], &lb[r.clone()])
                        .unwrap();
                    let delta = m
                        .params()
                        .iter()
                        .zip(global.iter())
                        .map(|(a, b)| a - b)
                        .collect();
                    Contribution {
                        worker: format!("w{i}.{step}"),
                        samples: per as u32,
                        delta,
                    }
                })
                .collect();
            strategy.aggregate(global, &contributions);
        };
        let (mut one, mut four) = (w0.clone(), w0.clone());
        let (mut s1, mut s4) = (FedAvgM::new(1, 0.9), FedAvgM::new(1, 0.9));
        s1.initialize(&one);
        s4.initialize(&four);
        for step in 0..3 {
            run(1, &mut one, &mut s1, step);
            run(4, &mut four, &mut s4, step);
            reference.train_batch(&px, &lb).unwrap();
        }
        let max_diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        let moved = max_diff(&one, &w0);
        assert!(moved > 1e-3, "parameters moved by {moved}");
        // Float tolerance: the same sums in a different order.
        assert!(
            max_diff(&one, &four) < 1e-5,
            "1 vs 4 workers differ by {}",
            max_diff(&one, &four)
        );
        assert!(
            max_diff(&one, reference.params()) < 1e-5,
            "vs plain SGD: {}",
            max_diff(&one, reference.params())
        );
    }
}
