//! What a worker's model must do for the session.

use hearth_worker::ModelConfig;

/// A model a worker trains locally: the component in wasmtime on a device,
/// the same Rust in a browser tab, or a stand-in in tests and benchmarks.
pub trait Trainer {
    /// The trainer's error (shown to people and sent in error reports).
    type Error: std::fmt::Display;
    /// Architecture names it can build (announced in the hello).
    fn architectures(&mut self) -> Result<Vec<String>, Self::Error>;
    /// Builds the model the coordinator's welcome describes, replacing any
    /// earlier one.
    fn build(&mut self, config: &ModelConfig) -> Result<(), Self::Error>;
    /// Replaces the parameters.
    fn set_params(&mut self, params: &[f32]) -> Result<(), Self::Error>;
    /// The current parameters.
    fn params(&mut self) -> Result<Vec<f32>, Self::Error>;
    /// Sets the learning rate of the following steps.
    fn set_learning_rate(&mut self, lr: f32) -> Result<(), Self::Error>;
    /// One SGD step; returns the batch's mean loss and correct count before it.
    fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<(f32, u32), Self::Error>;
}
