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
//! follows as sections whose lengths the header states: vectors in the
//! [`Encoding`] the header names (a 61,706-parameter model is 246,824 bytes
//! in f32, 62,671 in int8), pixels run-length coded ([`pixels`]).
//!
//! [`decode`] is total: every byte string gives a [`Message`] or a
//! [`ProtocolError`], never a panic; lengths are checked before allocation.

pub mod auth;
mod codec;
mod digest;
pub mod encoding;
mod error;
pub mod fuzz;
mod messages;
pub mod pixels;
pub mod samples;

pub use codec::{EncodedParams, decode, decode_within, encode, encode_assign};
pub use digest::{digest, params_digest};
pub use error::ProtocolError;
pub use messages::*;

/// Protocol version carried in the first byte of every frame (12: images
/// may be stocked a round before they are needed; 11: image
/// payloads are deflated after their run-length coding, and a welcome
/// names the initial model's digest; 10: a head
/// start says the worker's share of the round it follows; 9: int4
/// vectors are deflated, and an assignment says how many bytes its
/// parameters take; 8: vectors may be in int4; 7: a worker
/// keeps the samples it was sent, and later messages name them instead of
/// sending them again; 6: images
/// sent ahead may come with a head start, to train before the round's
/// model arrives; 5: vectors
/// in f32, f16 or int8, the model as a change from the worker's copy,
/// run-length-coded pixels; 4: signed
/// components are offered and swapped at round boundaries; 3: no secret
/// on the wire, a challenge-response admits a worker; 2: assignments name
/// their local steps and the kind of update they want back).
pub const VERSION: u8 = 12;

/// Largest frame a peer may send before it is admitted (a hello or a
/// proof is a few hundred bytes; the coordinator stops reading a
/// connection that sends more than this before its welcome).
pub const MAX_JOIN_BYTES: usize = 16 << 10;

/// Largest frame a peer accepts (64 MiB: a 431,080-parameter model plus a
/// few thousand images fits many times over).
pub const MAX_FRAME: usize = 64 << 20;

/// Bytes per image in an assignment (the model's input, defined by the compute crate).
pub use hearth_worker::IMAGE_LEN;
