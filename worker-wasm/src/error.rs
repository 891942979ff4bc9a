//! Errors the training core reports instead of panicking.

/// Everything that can go wrong with caller-supplied input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The architecture name is not one of [`crate::ARCHITECTURES`].
    #[error("unknown architecture {name:?}; this component knows: {known}")]
    UnknownArchitecture {
        /// The name asked for.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// A parameter or optimizer-state vector of the wrong length.
    #[error("{what} has {got} values but {arch} needs {expected}")]
    WrongLength {
        /// "parameter vector" or "optimizer state".
        what: &'static str,
        /// Architecture name.
        arch: String,
        /// Required length.
        expected: usize,
        /// Supplied length.
        got: usize,
    },
    /// A NaN or infinity where finite numbers are required.
    #[error("{what} has a non-finite value ({value}) at index {index}")]
    NonFinite {
        /// What was being set.
        what: &'static str,
        /// First offending index.
        index: usize,
        /// The value there.
        value: f32,
    },
    /// A batch whose pixels, labels or size are inconsistent.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// Hyper-parameters out of range.
    #[error("invalid optimizer config: {0}")]
    InvalidOptimizer(String),
}

/// Result alias of the training core.
pub type Result<T> = core::result::Result<T, Error>;
