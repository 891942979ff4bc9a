//! The command line: subcommands, and what each runs.

use std::io::IsTerminal;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::options::RunOptions;
use crate::run::{self, Mode};
use crate::{bench, bench_browser, chaos, components, export, pairing};

/// Hearth coordinator: rounds, ledger and aggregation over WebSockets.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Action,
}

/// What to do.
#[derive(Subcommand)]
pub enum Action {
    /// Serve on loopback and train with local `hearth-host` processes.
    Train {
        /// Train once per worker count (e.g. 1,2,4) and plot time per epoch
        /// against workers; each run goes to OUT/workers-N.
        #[arg(long, value_delimiter = ',')]
        sweep: Vec<usize>,
        #[command(flatten)]
        run: RunOptions,
    },
    /// Serve and train with the workers that connect (and the web demo on
    /// the same port).
    Serve {
        /// After training, keep serving the dashboard and the final model
        /// (draw-a-digit) until Ctrl-C instead of exiting.
        #[arg(long)]
        keep_serving: bool,
        #[command(flatten)]
        run: RunOptions,
    },
    /// Browser worker vs wasmtime host training speed (needs Chromium).
    BenchBrowser {
        #[command(flatten)]
        bench: bench_browser::Args,
        #[command(flatten)]
        run: RunOptions,
    },
    /// Train cleanly, then again while killing hosts and the coordinator;
    /// check the ledger and compare the accuracies.
    Chaos(chaos::ChaosArgs),
    /// Pair a device: print its pairing code, the string a host needs and
    /// the link (and QR code) a browser needs.
    Pair(pairing::PairArgs),
    /// List the paired devices.
    Devices(pairing::DeviceArgs),
    /// Revoke a device: it can no longer join or read the API.
    Revoke {
        /// The device's id.
        id: String,
        #[command(flatten)]
        args: pairing::DeviceArgs,
    },
    /// Make the household's component-signing key (HOME/signing.key).
    Keygen(components::KeygenArgs),
    /// Sign a training component (writes FILE.sig).
    Sign(components::SignArgs),
    /// Roll a signed component out to a running coordinator's devices.
    #[command(subcommand)]
    Component(components::ComponentAction),
    /// Write a trained model as ONNX, for appliances.
    Export(export::ExportArgs),
    /// Measure aggregation, framing, round overhead and bytes per epoch.
    Bench {
        #[command(flatten)]
        bench: bench::Args,
        #[command(flatten)]
        run: RunOptions,
    },
}

/// Parses the command line and runs the subcommand.
pub fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let Some((_, sub)) = matches.subcommand() else {
        anyhow::bail!("a subcommand is required");
    };
    match cli.command {
        Action::Train { sweep, run } => {
            let run = run.resolve(sub)?;
            if sweep.is_empty() {
                run::train(run, Mode::Train).map(drop)
            } else {
                run::sweep(run, &sweep)
            }
        }
        Action::Serve { keep_serving, run } => {
            run::train(run.resolve(sub)?, Mode::Serve { keep_serving }).map(drop)
        }
        Action::Chaos(args) => chaos::run(args),
        Action::Keygen(args) => components::keygen(args),
        Action::Sign(args) => components::sign(args),
        Action::Component(action) => components::component(action),
        Action::Pair(args) => pairing::pair(args),
        Action::Export(args) => export::export(args),
        Action::Devices(args) => pairing::list(args),
        Action::Revoke { id, args } => pairing::revoke(&id, args),
        Action::Bench { bench, run } => bench::run(bench, run.resolve(sub)?),
        Action::BenchBrowser { bench, run } => bench_browser::run(bench, run.resolve(sub)?),
    }
}
