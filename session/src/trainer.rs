//! What a worker's model must do for the session.

use hearth_protocol::Offer;
use hearth_worker::ModelConfig;

/// A model a worker trains locally: the component in wasmtime on a device,
/// the same Rust in a browser tab, or a stand-in in tests and benchmarks.
///
/// The hot-reload methods (`prepare` … `pending_rollback`) have defaults for
/// a trainer whose code cannot change: it refuses every offer.
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

    /// Starts getting an offered component ready: verify its signature,
    /// compile it and self-test it, on another thread where there is one.
    /// The outcome comes from [`poll_ready`](Self::poll_ready), also when
    /// the component is at fault and that is known at once. An `Err` says
    /// this worker cannot take components at all (it trusts no key, its
    /// code cannot change): the coordinator tries another device.
    fn prepare(&mut self, offer: Offer) -> Result<(), String> {
        drop(offer);
        Err("this worker cannot change its training code".into())
    }
    /// A preparation that finished: the component's digest, and `Ok` if it
    /// is ready to swap to.
    fn poll_ready(&mut self) -> Option<(String, Result<(), String>)> {
        None
    }
    /// Trains with the ready component `digest` from now on, on the model
    /// of the welcome (the round sets its parameters; optimizer state the
    /// contract keeps is carried across).
    fn swap(&mut self, digest: &str) -> Result<(), String> {
        Err(format!("no component {digest} is ready"))
    }
    /// The component swapped to passed its watched rounds: it is the one
    /// to run from now on, also after a restart.
    fn commit(&mut self) {}
    /// The component swapped to failed (`reason`): back to the previous
    /// one, and never take this one again.
    fn roll_back(&mut self, reason: &str) -> Result<(), String> {
        Err(format!("cannot roll back ({reason})"))
    }
    /// A component that failed before this session began (it ended the
    /// process while on trial), with why: reported once, after the welcome.
    fn pending_rollback(&mut self) -> Option<(String, String)> {
        None
    }
}
