//! The WebAssembly component: exports `wit/trainer.wit` around [`Model`].
//!
//! Every fallible call returns a WIT `result` with the error's message; the
//! component never traps on bad input.

use core::cell::RefCell;

use crate::model::{
    ArchInfo as NArch, EvalStats as NEval, Model, ModelConfig as NConfig, TrainStats as NTrain,
};
use crate::optimizer::OptimizerConfig as NOpt;

wit_bindgen::generate!({
    path: "../wit",
    world: "trainer-component",
});

use exports::hearth::trainer::trainer::{self as wit, Guest, GuestModel};
use hearth::trainer::types as t;

struct Component;

/// A model behind a WIT resource (calls take `&self`, hence the `RefCell`).
struct ModelResource(RefCell<Model>);

fn to_u32(v: &[usize]) -> Vec<u32> {
    v.iter().map(|&x| x as u32).collect()
}

impl From<t::OptimizerConfig> for NOpt {
    fn from(c: t::OptimizerConfig) -> Self {
        Self {
            learning_rate: c.learning_rate,
            momentum: c.momentum,
            weight_decay: c.weight_decay,
        }
    }
}

impl From<NOpt> for t::OptimizerConfig {
    fn from(c: NOpt) -> Self {
        Self {
            learning_rate: c.learning_rate,
            momentum: c.momentum,
            weight_decay: c.weight_decay,
        }
    }
}

impl From<NArch> for t::ArchInfo {
    fn from(a: NArch) -> Self {
        Self {
            name: a.name,
            input_shape: to_u32(&a.input_shape),
            layers: a
                .layers
                .into_iter()
                .map(|l| t::LayerInfo {
                    name: l.name,
                    kind: l.kind,
                    output_shape: to_u32(&l.output_shape),
                    param_count: l.param_count as u32,
                })
                .collect(),
            tensors: a
                .tensors
                .into_iter()
                .map(|x| t::TensorInfo {
                    name: x.name,
                    shape: to_u32(&x.shape),
                    offset: x.offset as u32,
                    len: x.len as u32,
                })
                .collect(),
            param_count: a.param_count as u32,
            optimizer_state_len: a.optimizer_state_len as u32,
        }
    }
}

impl From<NTrain> for t::TrainStats {
    fn from(s: NTrain) -> Self {
        Self {
            loss: s.loss,
            correct: s.correct,
            count: s.count,
        }
    }
}

impl From<NEval> for t::EvalStats {
    fn from(s: NEval) -> Self {
        Self {
            loss_sum: s.loss_sum,
            correct: s.correct,
            count: s.count,
            predictions: s.predictions,
        }
    }
}

impl Guest for Component {
    type Model = ModelResource;

    fn architectures() -> Vec<String> {
        crate::ARCHITECTURES.iter().map(|s| s.to_string()).collect()
    }

    fn create(config: t::ModelConfig) -> Result<wit::Model, String> {
        let cfg = NConfig {
            arch: config.arch,
            seed: config.seed,
            optimizer: config.optimizer.into(),
        };
        let model = Model::new(&cfg).map_err(|e| e.to_string())?;
        Ok(wit::Model::new(ModelResource(RefCell::new(model))))
    }
}

impl GuestModel for ModelResource {
    fn describe(&self) -> t::ArchInfo {
        self.0.borrow().describe().into()
    }

    fn get_params(&self) -> Vec<f32> {
        let params = self.0.borrow().params().to_vec();
        #[cfg(feature = "hostile-nan")]
        let params = crate::hostile::poison(params);
        params
    }

    fn set_params(&self, params: Vec<f32>) -> Result<(), String> {
        self.0
            .borrow_mut()
            .set_params(&params)
            .map_err(|e| e.to_string())
    }

    fn get_optimizer_state(&self) -> Vec<f32> {
        self.0.borrow().optimizer_state().to_vec()
    }

    fn set_optimizer_state(&self, state: Vec<f32>) -> Result<(), String> {
        self.0
            .borrow_mut()
            .set_optimizer_state(&state)
            .map_err(|e| e.to_string())
    }

    fn get_optimizer(&self) -> t::OptimizerConfig {
        self.0.borrow().optimizer().into()
    }

    fn set_optimizer(&self, config: t::OptimizerConfig) -> Result<(), String> {
        self.0
            .borrow_mut()
            .set_optimizer(config.into())
            .map_err(|e| e.to_string())
    }

    fn train_batch(&self, pixels: Vec<u8>, labels: Vec<u8>) -> Result<t::TrainStats, String> {
        #[cfg(any(
            feature = "hostile-loop",
            feature = "hostile-memory",
            feature = "hostile-nan"
        ))]
        crate::hostile::misbehave();
        self.0
            .borrow_mut()
            .train_batch(&pixels, &labels)
            .map(Into::into)
            .map_err(|e| e.to_string())
    }

    fn evaluate(
        &self,
        pixels: Vec<u8>,
        labels: Vec<u8>,
        want_predictions: bool,
    ) -> Result<t::EvalStats, String> {
        self.0
            .borrow_mut()
            .evaluate(&pixels, &labels, want_predictions)
            .map(Into::into)
            .map_err(|e| e.to_string())
    }

    fn predict(&self, pixels: Vec<u8>) -> Result<Vec<f32>, String> {
        self.0
            .borrow_mut()
            .predict(&pixels)
            .map_err(|e| e.to_string())
    }
}

export!(Component);
