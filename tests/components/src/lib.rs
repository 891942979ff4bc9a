//! Training components for the hot-reload tests, built by this crate's
//! build script from `worker-wasm/` with one test feature each, and from a
//! hand-built module for another WIT world. None of them is signed: tests
//! sign them with a household key of their own.

/// The trainer, v2: steps with Nesterov momentum (identical results when
/// momentum is 0, as on FedAvgM workers), so only its digest and version
/// tell it apart in a run.
pub const V2: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/v2.wasm"));

/// Loops forever in its second `train-batch` call of an instance (its
/// self-test passes; the rounds after the swap do not return).
pub const LOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/loop.wasm"));

/// Allocates without end in its second `train-batch` call of an instance
/// (until the memory cap traps it).
pub const MEMORY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/memory.wasm"));

/// Returns NaN parameters once it has trained (the self-test sees them).
pub const NAN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nan.wasm"));

/// A component of another WIT world (`hearth:other/other-component`).
pub const OTHER_WORLD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/other-world.wasm"));
