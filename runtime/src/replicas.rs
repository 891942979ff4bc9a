//! Every core of a device on one model: `T` instances of the component (one
//! store each) split each training step's batch, step in parallel from the
//! same parameters, and are averaged back into one model, weighted by their
//! share of the batch. For SGD on a mean loss that is the step one
//! instance takes on the whole batch (to float rounding): the gradient of
//! the mean is the weighted mean of the shards' gradients, and the update,
//! weight decay and momentum included, is linear in it.

use hearth_worker::{ArchInfo, ModelConfig, OptimizerConfig, TrainStats};

use crate::{ComponentModel, LoadedComponent, Result, Runtime};

/// `T` instances of one model, kept equal between steps.
///
/// Parameters (and momentum) meant for every instance are pushed lazily:
/// each instance takes them on its own thread at the start of the next
/// step, so the copies into the instances run in parallel too.
pub struct Replicas {
    models: Vec<ComponentModel>,
    /// Parameters every instance must take before its next step.
    pending_params: Option<Vec<f32>>,
    /// Momentum every instance must take before its next step.
    pending_state: Option<Vec<f32>>,
}

impl Replicas {
    /// `threads` instances (at least one) of the model `config` describes.
    pub fn new(
        runtime: &Runtime,
        component: &LoadedComponent,
        config: &ModelConfig,
        threads: usize,
    ) -> Result<Self> {
        let mut models = Vec::with_capacity(threads.max(1));
        for _ in 0..threads.max(1) {
            models.push(ComponentModel::new(runtime, component, config)?);
        }
        Ok(Self {
            models,
            pending_params: None,
            pending_state: None,
        })
    }

    /// How many instances train.
    pub fn threads(&self) -> usize {
        self.models.len()
    }

    /// Pushes what is pending into every instance.
    fn sync(&mut self) -> Result<()> {
        let (p, v) = (self.pending_params.take(), self.pending_state.take());
        for m in &mut self.models {
            if let Some(p) = &p {
                m.set_params(p)?;
            }
            if let Some(v) = &v {
                m.set_optimizer_state(v)?;
            }
        }
        Ok(())
    }

    /// See [`ComponentModel::set_call_timeout`].
    pub fn set_call_timeout(&mut self, timeout: std::time::Duration) {
        self.models
            .iter_mut()
            .for_each(|m| m.set_call_timeout(timeout));
    }

    /// The architecture.
    pub fn describe(&self) -> &ArchInfo {
        self.models[0].describe()
    }

    /// The parameters.
    pub fn params(&mut self) -> Result<Vec<f32>> {
        match &self.pending_params {
            Some(p) => Ok(p.clone()),
            None => self.models[0].params(),
        }
    }

    /// Replaces the parameters of every instance.
    pub fn set_params(&mut self, params: &[f32]) -> Result<()> {
        if params.len() != self.describe().param_count {
            // Let the component say what is wrong with it.
            return self.models[0].set_params(params);
        }
        self.pending_params = Some(params.to_vec());
        Ok(())
    }

    /// The optimizer state (momentum buffers).
    pub fn optimizer_state(&mut self) -> Result<Vec<f32>> {
        match &self.pending_state {
            Some(v) => Ok(v.clone()),
            None => self.models[0].optimizer_state(),
        }
    }

    /// Replaces the optimizer state of every instance.
    pub fn set_optimizer_state(&mut self, state: &[f32]) -> Result<()> {
        self.sync()?;
        self.models
            .iter_mut()
            .try_for_each(|m| m.set_optimizer_state(state))
    }

    /// The hyper-parameters.
    pub fn optimizer(&mut self) -> Result<OptimizerConfig> {
        self.models[0].optimizer()
    }

    /// Changes the hyper-parameters of every instance.
    pub fn set_optimizer(&mut self, config: OptimizerConfig) -> Result<()> {
        self.models
            .iter_mut()
            .try_for_each(|m| m.set_optimizer(config))
    }

    /// One SGD step on the batch, its samples split between the instances.
    pub fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<TrainStats> {
        let n = labels.len();
        let shards = self.models.len().min(n).max(1);
        if shards == 1 {
            self.sync()?;
            return self.models[0].train_batch(pixels, labels);
        }
        let image = pixels.len() / n.max(1);
        let bounds: Vec<(usize, usize)> = (0..shards)
            .map(|i| (i * n / shards, (i + 1) * n / shards))
            .collect();
        let momentum = self.models[0].optimizer()?.momentum != 0.0;
        let (pending_p, pending_v) = (self.pending_params.take(), self.pending_state.take());
        let (pending_p, pending_v) = (pending_p.as_deref(), pending_v.as_deref());
        // Instances past the shards take the pending values too.
        for m in &mut self.models[shards..] {
            if let Some(p) = pending_p {
                m.set_params(p)?;
            }
            if let Some(v) = pending_v {
                m.set_optimizer_state(v)?;
            }
        }
        let shard = |m: &mut ComponentModel, (a, b): (usize, usize)| {
            if let Some(p) = pending_p {
                m.set_params(p)?;
            }
            if let Some(v) = pending_v {
                m.set_optimizer_state(v)?;
            }
            let stats = m.train_batch(&pixels[a * image..b * image], &labels[a..b])?;
            let v = if momentum {
                m.optimizer_state()?
            } else {
                Vec::new()
            };
            Ok((stats, m.params()?, v))
        };
        let (head, rest) = self.models[..shards].split_at_mut(1);
        let outcomes: Vec<Result<Shard>> = std::thread::scope(|s| {
            let handles: Vec<_> = rest
                .iter_mut()
                .zip(&bounds[1..])
                .map(|(m, &range)| s.spawn(move || shard(m, range)))
                .collect();
            // The calling thread trains the first shard.
            let mut all = vec![shard(&mut head[0], bounds[0])];
            all.extend(handles.into_iter().map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(crate::Error::Rejected("a training thread panicked".into()))
                })
            }));
            all
        });
        let mut params = Vec::new();
        let mut velocity = Vec::new();
        let (mut loss, mut correct) = (0.0f64, 0u32);
        for (outcome, &(a, b)) in outcomes.into_iter().zip(&bounds) {
            let (stats, p, v) = outcome?;
            let w = (b - a) as f32 / n as f32;
            loss += f64::from(stats.loss) * (b - a) as f64;
            correct += stats.correct;
            accumulate(&mut params, &p, w);
            accumulate(&mut velocity, &v, w);
        }
        self.pending_params = Some(params);
        if momentum {
            self.pending_state = Some(velocity);
        }
        Ok(TrainStats {
            loss: (loss / n as f64) as f32,
            correct,
            count: n as u32,
        })
    }
}

/// What one instance's step gave: its statistics, parameters and momentum.
type Shard = (TrainStats, Vec<f32>, Vec<f32>);

/// `sum += w · x` (`sum` starts empty).
fn accumulate(sum: &mut Vec<f32>, x: &[f32], w: f32) {
    if sum.is_empty() {
        sum.resize(x.len(), 0.0);
    }
    for (s, v) in sum.iter_mut().zip(x) {
        *s += w * v;
    }
}
