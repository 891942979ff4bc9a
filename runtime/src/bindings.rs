//! Typed bindings generated from `wit/trainer.wit`.

wasmtime::component::bindgen!({ path: "../wit", world: "trainer-component" });

pub use exports::hearth::trainer::trainer::Guest as TrainerExports;
pub use hearth::trainer::types;
