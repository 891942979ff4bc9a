//! Hearth's training compute: LeNet layers, forward and backward passes, SGD.
//!
//! One source of math for three targets:
//! - a **WebAssembly component** exporting `wit/trainer.wit` (feature
//!   `component`, built for `wasm32-unknown-unknown` with `simd128` by the
//!   `hearth-runtime` build script), run by wasmtime on each device;
//! - the **browser**, through wasm-bindgen (the `hearth-browser` crate wraps
//!   this one; same code, same bits);
//! - a **native library**, for tests, gradient checks and benchmarks.
//!
//! Design: activations are `batch × per-sample` buffers that [`Model`] owns
//! and reuses; convolutions are im2col + register-blocked GEMM ([`gemm`]) on
//! a 4-lane vector type ([`simd::F32x4`]) whose operations are plain IEEE adds
//! and multiplies, so every target computes bit-identical results.

pub mod arch;
pub mod augment;
pub mod drawing;
pub mod error;
pub mod gemm;
pub mod layers;
pub mod loss;
pub mod math;
pub mod model;
pub mod optimizer;
#[cfg(test)]
mod reference;
pub mod schedule;
pub mod simd;

#[cfg(feature = "component")]
mod component;
#[cfg(any(
    feature = "hostile-loop",
    feature = "hostile-memory",
    feature = "hostile-nan"
))]
mod hostile;

pub use arch::{ARCHITECTURES, CLASSES, IMAGE_LEN};
pub use error::{Error, Result};
pub use model::{ArchInfo, EvalStats, LayerInfo, Model, ModelConfig, TensorInfo, TrainStats};
pub use optimizer::OptimizerConfig;
pub use schedule::LrSchedule;
