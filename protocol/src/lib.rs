//! Hearth's wire protocol: one definition for coordinator, host and browser.
//!
//! A frame is one WebSocket binary message:
//!
//! ```text
//! [version u8][kind u8][header_len u32 LE][header: postcard][payload sections]
//! ```
//!
//! Control fields (ids, names, counts, hyper-parameters) are a serde struct
//! encoded with postcard. Bulk data — parameter vectors and image batches —
//! follows as raw little-endian sections whose lengths the header states, so
//! a 61,706-parameter model costs 246,824 bytes plus a few bytes of header.
//!
//! [`decode`] is total: every byte string gives a [`Message`] or a
//! [`ProtocolError`], never a panic; lengths are checked before allocation.

mod codec;
mod error;
mod messages;
pub mod round;

pub use codec::{decode, encode};
pub use error::ProtocolError;
pub use messages::*;

/// Protocol version carried in the first byte of every frame.
pub const VERSION: u8 = 1;

/// Largest frame a peer accepts (64 MiB: a 431,080-parameter model plus a
/// few thousand images fits many times over).
pub const MAX_FRAME: usize = 64 << 20;

/// Bytes per MNIST image.
pub const IMAGE_LEN: usize = 28 * 28;
