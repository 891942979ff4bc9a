//! Writes the built-in component as wasmtime compiles it for this machine,
//! for reading the generated code:
//!
//! `cargo run --release -p hearth-runtime --example jit_dump -- OUT.cwasm [--epoch-checks]`
//! then `objdump -d OUT.cwasm | less` (functions keep their Rust names).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: jit_dump OUT.cwasm [--epoch-checks]")?;
    let epoch_checks = args.next().is_some_and(|a| a == "--epoch-checks");
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .wasm_simd(true)
        .wasm_relaxed_simd(false)
        .epoch_interruption(epoch_checks);
    let engine = wasmtime::Engine::new(&config)?;
    let compiled = engine.precompile_component(hearth_runtime::BUILTIN_COMPONENT)?;
    std::fs::write(&out, compiled)?;
    println!("wrote {out} (epoch checks: {epoch_checks})");
    Ok(())
}
