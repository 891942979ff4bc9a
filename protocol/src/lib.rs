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
mod digest;
mod error;
mod messages;

pub use codec::{decode, encode};
pub use digest::digest;
pub use error::ProtocolError;
pub use messages::*;

/// Protocol version carried in the first byte of every frame (2: assignments
/// name their local steps and the kind of update they want back; no
/// heartbeats).
pub const VERSION: u8 = 2;

/// Largest frame a peer accepts (64 MiB: a 431,080-parameter model plus a
/// few thousand images fits many times over).
pub const MAX_FRAME: usize = 64 << 20;

/// Bytes per image in an assignment (the model's input, defined by the compute crate).
pub use hearth_worker::IMAGE_LEN;
