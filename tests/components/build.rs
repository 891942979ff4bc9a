//! Builds the test components: `hearth-worker` with one test feature each
//! (componentized like the product's, by the same machinery), and a tiny
//! component of another WIT world made from a hand-built core module.

use std::env;
use std::fs;
use std::path::PathBuf;

use anyhow::Context;

/// Output name and the `hearth-worker` features it is built with.
const VARIANTS: [(&str, &str); 4] = [
    ("v2", "component,variant-v2"),
    ("loop", "component,hostile-loop"),
    ("memory", "component,hostile-memory"),
    ("nan", "component,hostile-nan"),
];

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .context("tests/components sits two levels below the workspace root")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    hearth_build::watch_worker_sources(&root);
    println!("cargo:rerun-if-changed=other-world.wit");
    let target = out_dir.join("wasm-target");
    for (name, features) in VARIANTS {
        let module_path = hearth_build::build_wasm(&root, &target, "hearth-worker", features)?;
        let module =
            fs::read(&module_path).with_context(|| format!("reading {}", module_path.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .with_context(|| format!("the {name} module has no component-type section"))?
            .validate(true)
            .encode()
            .with_context(|| format!("componentizing {name}"))?;
        fs::write(out_dir.join(format!("{name}.wasm")), component)?;
    }
    fs::write(out_dir.join("other-world.wasm"), other_world()?)?;
    Ok(())
}

/// A component of `hearth:other/other-component`: `run` returns 42.
fn other_world() -> anyhow::Result<Vec<u8>> {
    use wasm_encoder::{
        CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction, Module,
        TypeSection, ValType,
    };
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("other-world.wit", include_str!("other-world.wit"))?;
    let world = resolve.select_world(&[package], Some("other-component"))?;
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut exports = ExportSection::new();
    exports.export("run", ExportKind::Func, 0);
    module.section(&exports);
    let mut code = CodeSection::new();
    let mut run = Function::new([]);
    run.instruction(&Instruction::I32Const(42));
    run.instruction(&Instruction::End);
    code.function(&run);
    module.section(&code);
    let mut module = module.finish();
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )?;
    wit_component::ComponentEncoder::default()
        .module(&module)?
        .validate(true)
        .encode()
        .context("componentizing the other world's module")
}
