//! Errors of the embedding, split by who is at fault.

/// What went wrong running a component.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The component refused the call (bad input): the model is unchanged and usable.
    #[error("component rejected the call: {0}")]
    Rejected(String),
    /// The component trapped, ran out of time or memory: this instance is
    /// unusable and must be re-created from a checkpoint.
    #[error("component trapped: {0:#}")]
    Trap(wasmtime::Error),
    /// The component could not be compiled or instantiated.
    #[error("cannot load component: {0:#}")]
    Load(wasmtime::Error),
    /// A component file (or its signature) could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The component's signature does not vouch for it: it is not run.
    #[error("refused {path}: {refusal}")]
    Refused {
        /// The component file.
        path: String,
        /// Why.
        refusal: hearth_signing::Refusal,
    },
}

/// Result alias of the embedding.
pub type Result<T> = core::result::Result<T, Error>;
