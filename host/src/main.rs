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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
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
