//! Why a frame could not be decoded.

/// A frame that is not a valid message of this protocol version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Fewer bytes than the fixed prefix or than the header says.
    #[error("truncated frame: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        have: usize,
    },
    /// A frame from another protocol version.
    #[error("protocol version {found} is not supported (this peer speaks {supported})")]
    Version {
        /// Version byte of the frame.
        found: u8,
        /// Version this peer speaks.
        supported: u8,
    },
    /// An unknown message kind byte.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The header does not decode as the kind's control fields.
    #[error("malformed {kind} header: {reason}")]
    Header {
        /// Message kind name.
        kind: &'static str,
        /// Decoder's explanation.
        reason: String,
    },
    /// Payload length differs from what the header declares.
    #[error("{kind} payload is {found} bytes, header declares {expected}")]
    PayloadLength {
        /// Message kind name.
        kind: &'static str,
        /// Bytes the header implies.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// A payload whose bytes do not decode as the header says.
    #[error("malformed {kind} payload: {reason}")]
    Payload {
        /// Message kind name.
        kind: &'static str,
        /// Decoder's explanation.
        reason: String,
    },
    /// Frame larger than [`crate::MAX_FRAME`] or a declared size that overflows.
    #[error("frame too large: {0} bytes")]
    TooLarge(usize),
    /// A label outside 0..=9 in an image batch.
    #[error("label {value} at index {index} is not a digit")]
    BadLabel {
        /// Sample index.
        index: usize,
        /// The value.
        value: u8,
    },
}
