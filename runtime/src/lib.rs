//! The wasmtime embedding of Hearth's training component.
//!
//! The API reads like wasmtime's own: one [`Runtime`] (engine, linker and
//! [`Limits`], made once per process) → a [`LoadedComponent`] (compiled,
//! digested) → one [`ComponentModel`] per loaded component, which owns its
//! store and speaks the typed calls that `bindgen!` generates from `wit/`.
//!
//! The component itself is built from `worker-wasm/` by this crate's build
//! script and embedded as [`BUILTIN_COMPONENT`]; it imports nothing.

mod bindings;
pub mod checkpoint;
mod component_model;
pub mod component_store;
mod error;
pub mod files;
mod limits;
mod replicas;
mod runtime;
mod watchdog;

pub use component_model::ComponentModel;
pub use component_store::{ComponentStore, Standing};
pub use error::{Error, Result};
pub use limits::{Limits, OnOverrun};
pub use replicas::Replicas;
pub use runtime::{LoadedComponent, Runtime, signature_path, verify_file};

/// The training component built from `worker-wasm/` (wasm32, simd128).
pub const BUILTIN_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hearth_trainer.wasm"));

pub use hearth_signing::{WIT_PACKAGE, WIT_WORLD, trainer_policy as policy};

/// Hex SHA-256 of component bytes: how hosts and coordinators name a
/// component (the protocol's definition, re-exported).
pub use hearth_protocol::digest;

#[cfg(test)]
mod wit_names {
    /// The names above are the ones `wit/trainer.wit` declares.
    #[test]
    fn the_package_and_world_names_match_the_wit_file() {
        let wit = include_str!("../../wit/trainer.wit");
        assert!(wit.contains(&format!("package {};", super::WIT_PACKAGE)));
        assert!(wit.contains(&format!("world {} {{", super::WIT_WORLD)));
    }
}
