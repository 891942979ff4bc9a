//! `hearth-host`: the device binary.
//!
//! Runs Hearth's training component inside wasmtime. Subcommands:
//! - `work`: join a coordinator (`--coordinator ws://…/ws`) and train the
//!   rounds it assigns, reconnecting with backoff;
//! - `train-local`: train on this device alone, print per-epoch figures,
//!   write `results.json` and `model.safetensors`;
//! - `bench`: training-step throughput, native vs inside wasmtime;
//! - `describe`: the layers and parameter layout of an architecture;
//! - `evaluate`: score a saved `model.safetensors` on the test set;
//! - `verify`: check a component's signature (`FILE.sig`) against trusted keys.
//!
//! Run `hearth-host --help` for the options.

mod backend;
mod bench;
mod bench_component;
mod component_trainer;
mod config;
mod describe;
mod evaluate;
mod overrun;
mod selftest;
mod tls;
mod train_local;
mod verify;
mod work;

use clap::{Parser, Subcommand};

/// Hearth device binary: in-home training on a WebAssembly component.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join a coordinator and train the rounds it assigns.
    Work(work::Args),
    /// Train on this device alone (the study's single-board run).
    TrainLocal(train_local::Args),
    /// Measure training-step throughput natively and inside wasmtime.
    Bench(bench::Args),
    /// Measure what taking a new component costs: verify, compile, cache, self-test.
    BenchComponent(bench_component::Args),
    /// Print the layers and parameter layout of an architecture.
    Describe(describe::Args),
    /// Score a saved model (model.safetensors) on the MNIST test set.
    Evaluate(evaluate::Args),
    /// Train a few steps and print the parameters' digest (the same bits on every machine).
    Selftest(selftest::Args),
    /// Check a component's signature as a device would before running it.
    Verify(verify::Args),
}

/// The command line, with `work`'s settings file's flags first (flags
/// given on the command line come after them, so they win), when it has
/// one: `--config FILE`, `HEARTH_CONFIG`, or /etc/hearth/host.toml
/// (`HEARTH_CONFIG=""`: none).
fn with_settings(
    mut argv: Vec<std::ffi::OsString>,
) -> anyhow::Result<(Vec<std::ffi::OsString>, Option<std::path::PathBuf>)> {
    let Some(at) = argv.iter().position(|a| a == "work").map(|i| i + 1) else {
        return Ok((argv, None));
    };
    let named = argv[at..].iter().enumerate().find_map(|(i, a)| {
        let a = a.to_str()?;
        match a.strip_prefix("--config=") {
            Some(path) => Some(std::path::PathBuf::from(path)),
            None if a == "--config" => argv.get(at + i + 1).map(std::path::PathBuf::from),
            None => None,
        }
    });
    let from_env = std::env::var_os("HEARTH_CONFIG");
    if named.is_none() && from_env.as_ref().is_some_and(|v| v.is_empty()) {
        // HEARTH_CONFIG="": no settings file at all.
        return Ok((argv, None));
    }
    let path = match named.or_else(|| from_env.map(Into::into)) {
        Some(path) => path,
        None if std::path::Path::new(config::DEFAULT_PATH).is_file() => config::DEFAULT_PATH.into(),
        None => return Ok((argv, None)),
    };
    let settings = config::flags(&path)?;
    argv.splice(at..at, settings);
    Ok((argv, Some(path)))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let (argv, settings) = with_settings(std::env::args_os().collect())?;
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| {
        let _ = e.print();
        if let Some(path) = settings {
            eprintln!("(with the settings of {})", path.display());
        }
        std::process::exit(e.exit_code())
    });
    match cli.command {
        Command::Work(args) => work::run(args),
        Command::TrainLocal(args) => train_local::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchComponent(args) => bench_component::run(args),
        Command::Describe(args) => describe::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Selftest(args) => selftest::run(args),
    }
}
