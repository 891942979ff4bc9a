//! Where training runs: inside wasmtime (the product) or natively (for comparison).

use anyhow::Result;
use clap::ValueEnum;
use hearth_runtime::{ComponentModel, Limits, LoadedComponent, Runtime};
use hearth_worker::{ArchInfo, EvalStats, Model, ModelConfig, OptimizerConfig, TrainStats};

/// Which implementation runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The training component inside wasmtime.
    Wasmtime,
    /// The same Rust code compiled natively.
    Native,
}

/// A model behind either backend.
pub enum Backend {
    /// In wasmtime; keeps the runtime alive for the model's store.
    Wasmtime {
        /// The model inside its component instance.
        model: Box<ComponentModel>,
        /// Digest of the component.
        digest: String,
        _runtime: Box<Runtime>,
    },
    /// Native.
    Native(Box<Model>),
}

impl Backend {
    /// Builds a model on `kind`, loading the built-in component for wasmtime.
    pub fn new(kind: BackendKind, config: &ModelConfig, limits: Limits) -> Result<Self> {
        Ok(match kind {
            BackendKind::Wasmtime => {
                let runtime = Runtime::new(limits)?;
                let component: LoadedComponent = runtime.load_builtin()?;
                let model = ComponentModel::new(&runtime, &component, config)?;
                Backend::Wasmtime {
                    model: Box::new(model),
                    digest: component.digest().to_string(),
                    _runtime: Box::new(runtime),
                }
            }
            BackendKind::Native => Backend::Native(Box::new(Model::new(config)?)),
        })
    }

    /// Digest of the component, if running one.
    pub fn component_digest(&self) -> Option<&str> {
        match self {
            Backend::Wasmtime { digest, .. } => Some(digest),
            Backend::Native(_) => None,
        }
    }

    /// Architecture description.
    pub fn describe(&self) -> ArchInfo {
        match self {
            Backend::Wasmtime { model, .. } => model.describe().clone(),
            Backend::Native(m) => m.describe(),
        }
    }

    /// One SGD step.
    pub fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<TrainStats> {
        Ok(match self {
            Backend::Wasmtime { model, .. } => model.train_batch(pixels, labels)?,
            Backend::Native(m) => m.train_batch(pixels, labels)?,
        })
    }

    /// Loss and accuracy on a batch.
    pub fn evaluate(&mut self, pixels: &[u8], labels: &[u8]) -> Result<EvalStats> {
        Ok(match self {
            Backend::Wasmtime { model, .. } => model.evaluate(pixels, labels, false)?,
            Backend::Native(m) => m.evaluate(pixels, labels, false)?,
        })
    }

    /// Changes hyper-parameters (keeps momentum).
    pub fn set_optimizer(&mut self, config: OptimizerConfig) -> Result<()> {
        match self {
            Backend::Wasmtime { model, .. } => model.set_optimizer(config)?,
            Backend::Native(m) => m.set_optimizer(config)?,
        }
        Ok(())
    }

    /// Replaces the parameters.
    pub fn set_params(&mut self, params: &[f32]) -> Result<()> {
        match self {
            Backend::Wasmtime { model, .. } => model.set_params(params)?,
            Backend::Native(m) => m.set_params(params)?,
        }
        Ok(())
    }

    /// The flat parameters.
    pub fn params(&mut self) -> Result<Vec<f32>> {
        Ok(match self {
            Backend::Wasmtime { model, .. } => model.params()?,
            Backend::Native(m) => m.params().to_vec(),
        })
    }
}
