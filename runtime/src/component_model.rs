//! A model living inside one instance of the training component.

use wasmtime::component::ResourceAny;
use wasmtime::{Store, StoreLimitsBuilder};

use hearth_worker::{
    ArchInfo, EvalStats, LayerInfo, ModelConfig, OptimizerConfig, TensorInfo, TrainStats,
};

use crate::bindings::{TrainerComponent, TrainerExports, types as t};
use crate::error::{Error, Result};
use crate::runtime::{CallWatch, EPOCH_TICK, HostState, LoadedComponent, Runtime};

/// One store, one component instance, one model resource.
///
/// Calls mirror [`hearth_worker::Model`]; after an [`Error::Trap`] the
/// instance must not be used again (create a new one from saved parameters).
pub struct ComponentModel {
    store: Store<HostState>,
    bindings: TrainerComponent,
    model: ResourceAny,
    /// Epoch ticks a call may take (`None`: no epoch checks compiled in).
    deadline_ticks: Option<u64>,
    /// The watchdog's clock for each call (when overruns end the process).
    watch: CallWatch,
    arch: ArchInfo,
}

impl ComponentModel {
    /// Instantiates `component` in a fresh store and creates a model in it.
    pub fn new(
        runtime: &Runtime,
        component: &LoadedComponent,
        config: &ModelConfig,
    ) -> Result<Self> {
        let limits = runtime.limits();
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(4)
                .build(),
        };
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        let deadline_ticks = limits
            .call_timeout
            .filter(|_| limits.epoch_checks())
            .map(|t| (t.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64);
        let watch = runtime.call_watch();
        let guard = watch.begin();
        if let Some(ticks) = deadline_ticks {
            store.set_epoch_deadline(ticks);
        }
        let bindings =
            TrainerComponent::instantiate(&mut store, &component.component, &runtime.linker)
                .map_err(Error::Load)?;
        let wit_config = t::ModelConfig {
            arch: config.arch.clone(),
            seed: config.seed,
            optimizer: to_wit_opt(config.optimizer),
        };
        let model = bindings
            .hearth_trainer_trainer()
            .call_create(&mut store, &wit_config)
            .map_err(Error::Trap)?;
        let model = model.map_err(Error::Rejected)?;
        drop(guard);
        let mut this = Self {
            store,
            bindings,
            model,
            deadline_ticks,
            watch,
            arch: placeholder_arch(),
        };
        let wit_arch = this.call(|g, s, m| g.model().call_describe(s, m))?;
        this.arch = from_wit_arch(wit_arch);
        Ok(this)
    }

    /// Names of the architectures a component can build (instantiates it once).
    pub fn architectures(runtime: &Runtime, component: &LoadedComponent) -> Result<Vec<String>> {
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(runtime.limits().memory_bytes)
                .build(),
        };
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        if runtime.limits().epoch_checks() {
            store.set_epoch_deadline(1000);
        }
        let _guard = runtime.call_watch().begin();
        let bindings =
            TrainerComponent::instantiate(&mut store, &component.component, &runtime.linker)
                .map_err(Error::Load)?;
        bindings
            .hearth_trainer_trainer()
            .call_architectures(&mut store)
            .map_err(Error::Trap)
    }

    /// Runs one call with a fresh deadline; host-side failures are traps.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&TrainerExports, &mut Store<HostState>, ResourceAny) -> wasmtime::Result<R>,
    ) -> Result<R> {
        if let Some(ticks) = self.deadline_ticks {
            self.store.set_epoch_deadline(ticks);
        }
        let _guard = self.watch.begin();
        f(
            self.bindings.hearth_trainer_trainer(),
            &mut self.store,
            self.model,
        )
        .map_err(Error::Trap)
    }

    /// Gives every later call of this model at most `timeout` (what
    /// happens on an overrun is the runtime's [`crate::OnOverrun`]): a
    /// component on trial gets a tighter budget than a proven one.
    pub fn set_call_timeout(&mut self, timeout: std::time::Duration) {
        if self.deadline_ticks.is_some() {
            self.deadline_ticks =
                Some((timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64);
        }
        self.watch.set_timeout(timeout);
    }

    /// The architecture (layers, tensor layout), as described by the component.
    pub fn describe(&self) -> &ArchInfo {
        &self.arch
    }

    /// A copy of the flat parameter vector.
    pub fn params(&mut self) -> Result<Vec<f32>> {
        self.call(|g, s, m| g.model().call_get_params(s, m))
    }

    /// Replaces the parameters.
    pub fn set_params(&mut self, params: &[f32]) -> Result<()> {
        self.call(|g, s, m| g.model().call_set_params(s, m, params))?
            .map_err(Error::Rejected)
    }

    /// A copy of the optimizer state (momentum buffers).
    pub fn optimizer_state(&mut self) -> Result<Vec<f32>> {
        self.call(|g, s, m| g.model().call_get_optimizer_state(s, m))
    }

    /// Replaces the optimizer state.
    pub fn set_optimizer_state(&mut self, state: &[f32]) -> Result<()> {
        self.call(|g, s, m| g.model().call_set_optimizer_state(s, m, state))?
            .map_err(Error::Rejected)
    }

    /// Current hyper-parameters.
    pub fn optimizer(&mut self) -> Result<OptimizerConfig> {
        let c = self.call(|g, s, m| g.model().call_get_optimizer(s, m))?;
        Ok(from_wit_opt(c))
    }

    /// Changes hyper-parameters (keeps momentum).
    pub fn set_optimizer(&mut self, config: OptimizerConfig) -> Result<()> {
        let c = to_wit_opt(config);
        self.call(|g, s, m| g.model().call_set_optimizer(s, m, c))?
            .map_err(Error::Rejected)
    }

    /// One SGD step on a batch.
    pub fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<TrainStats> {
        let r = self
            .call(|g, s, m| g.model().call_train_batch(s, m, pixels, labels))?
            .map_err(Error::Rejected)?;
        Ok(TrainStats {
            loss: r.loss,
            correct: r.correct,
            count: r.count,
        })
    }

    /// Loss and accuracy on a batch of any size.
    pub fn evaluate(
        &mut self,
        pixels: &[u8],
        labels: &[u8],
        want_predictions: bool,
    ) -> Result<EvalStats> {
        let r = self
            .call(|g, s, m| {
                g.model()
                    .call_evaluate(s, m, pixels, labels, want_predictions)
            })?
            .map_err(Error::Rejected)?;
        Ok(EvalStats {
            loss_sum: r.loss_sum,
            correct: r.correct,
            count: r.count,
            predictions: r.predictions,
        })
    }

    /// Class probabilities, 10 per image.
    pub fn predict(&mut self, pixels: &[u8]) -> Result<Vec<f32>> {
        self.call(|g, s, m| g.model().call_predict(s, m, pixels))?
            .map_err(Error::Rejected)
    }
}

impl Drop for ComponentModel {
    fn drop(&mut self) {
        // Best effort: the store is dropped right after anyway.
        let _ = self.model.resource_drop(&mut self.store);
    }
}

/// The WIT record and the compute's type are the same three numbers; these
/// two functions are the only place they are converted on the host side.
fn from_wit_opt(c: t::OptimizerConfig) -> OptimizerConfig {
    OptimizerConfig {
        learning_rate: c.learning_rate,
        momentum: c.momentum,
        weight_decay: c.weight_decay,
    }
}

fn to_wit_opt(c: OptimizerConfig) -> t::OptimizerConfig {
    t::OptimizerConfig {
        learning_rate: c.learning_rate,
        momentum: c.momentum,
        weight_decay: c.weight_decay,
    }
}

fn to_usize(v: Vec<u32>) -> Vec<usize> {
    v.into_iter().map(|x| x as usize).collect()
}

fn from_wit_arch(a: t::ArchInfo) -> ArchInfo {
    ArchInfo {
        name: a.name,
        input_shape: to_usize(a.input_shape),
        layers: a
            .layers
            .into_iter()
            .map(|l| LayerInfo {
                name: l.name,
                kind: l.kind,
                output_shape: to_usize(l.output_shape),
                param_count: l.param_count as usize,
            })
            .collect(),
        tensors: a
            .tensors
            .into_iter()
            .map(|x| TensorInfo {
                name: x.name,
                shape: to_usize(x.shape),
                offset: x.offset as usize,
                len: x.len as usize,
            })
            .collect(),
        param_count: a.param_count as usize,
        optimizer_state_len: a.optimizer_state_len as usize,
    }
}

fn placeholder_arch() -> ArchInfo {
    ArchInfo {
        name: String::new(),
        input_shape: Vec::new(),
        layers: Vec::new(),
        tensors: Vec::new(),
        param_count: 0,
        optimizer_state_len: 0,
    }
}
