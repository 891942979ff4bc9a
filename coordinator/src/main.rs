//! `hearth-coordinator`: the server of Hearth's distributed training.
//!
//! - `train --local-workers N`: serve on loopback, start N `hearth-host work`
//!   processes, train, write the results (the one-command main job);
//! - `serve`: wait for workers from the household's devices;
//! - `bench`: aggregation time, frame codec, round overhead, bytes per epoch.
//!
//! Outputs in `--out`: `metrics.jsonl` (one line per epoch), `ledger.jsonl`
//! (which batch and which samples each worker trained on, per epoch),
//! `model.safetensors`, `summary.json`.

mod bench;
mod bench_browser;
mod config;
mod dashboard;
mod figures;
mod ledger;
mod session;
mod strategy;
mod training;
mod web;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use hearth_protocol as proto;
use hearth_runtime::{ComponentModel, Limits, Runtime, checkpoint};
use hearth_worker::{LrSchedule, ModelConfig, OptimizerConfig};

use crate::session::Admission;
use crate::strategy::FedAvgM;
use crate::training::{Plan, Trainer};

/// Hearth coordinator: rounds, ledger and aggregation over WebSockets.
#[derive(Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand)]
pub(crate) enum Action {
    /// Serve on loopback and train with N local `hearth-host` processes.
    Train {
        /// Worker processes to start on this machine.
        #[arg(long, default_value_t = 4)]
        local_workers: usize,
        /// Train once per worker count (e.g. 1,2,4) and plot time per epoch
        /// against workers; each run goes to OUT/workers-N.
        #[arg(long, value_delimiter = ',')]
        sweep: Vec<usize>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Serve and train with the workers that connect (and the web demo on
    /// the same port).
    Serve {
        /// After training, keep serving the dashboard and the final model
        /// (draw-a-digit) until Ctrl-C instead of exiting.
        #[arg(long)]
        keep_serving: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Browser worker vs wasmtime host training speed (needs Chromium).
    BenchBrowser {
        #[command(flatten)]
        bench: bench_browser::Args,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Measure aggregation, framing, round overhead and bytes per epoch.
    Bench {
        #[command(flatten)]
        bench: bench::Args,
        #[command(flatten)]
        run: RunArgs,
    },
}

/// Options shared by `train` and `serve`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct RunArgs {
    /// A TOML file with any of these options (flags override it); see hearth.example.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Architecture: lenet5, lenet5-tanh or lenet-mxnet.
    #[arg(long, default_value = "lenet5")]
    arch: String,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Samples per local step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Local steps (batches) per worker per round: 1 is synchronous SGD,
    /// more is FedAvg (fewer rounds, fewer bytes).
    #[arg(long, default_value_t = 4)]
    local_steps: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 0.05)]
    lr: f32,
    /// Learning-rate schedule over the run: cosine or constant.
    #[arg(long, default_value = "cosine")]
    lr_schedule: String,
    /// Momentum, applied on the coordinator (as MXNet's parameter server does).
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// Weight decay (not on biases).
    #[arg(long, default_value_t = 1e-4)]
    wd: f32,
    /// Seed of the initialization and the per-epoch shuffles.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// MNIST directory (default: the bundled copy).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Use only the first N training images.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Address to listen on (`train` defaults to a free loopback port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Shared secret workers must present.
    #[arg(long, default_value = "hearth-local")]
    token: String,
    /// Workers to wait for before the first round.
    #[arg(long, default_value_t = 1)]
    min_workers: usize,
    /// Longest time, in seconds, a worker may take for one round before its
    /// batches are reassigned; once its speed is measured, its deadline is
    /// four times its expected round time plus 5 s, if that is shorter.
    #[arg(long, default_value_t = 120)]
    round_timeout: u64,
    /// Output directory.
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// No progress bars or worker tables.
    #[arg(long)]
    quiet: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let sub = matches.subcommand().map(|(_, m)| m.clone());
    let with_file = |mut run: RunArgs, mut local_workers: usize| -> Result<(RunArgs, usize)> {
        if let (Some(path), Some(sub)) = (run.config.clone(), sub.as_ref()) {
            config::ConfigFile::load(&path)?.apply(sub, &mut run, &mut local_workers);
        }
        Ok((run, local_workers))
    };
    match cli.command {
        Action::Train {
            local_workers,
            sweep,
            run,
        } => {
            let (run, local_workers) = with_file(run, local_workers)?;
            if sweep.is_empty() {
                let min = run.min_workers.max(local_workers.min(1));
                train(
                    RunArgs {
                        min_workers: min,
                        ..run
                    },
                    local_workers,
                    "127.0.0.1:0",
                )
                .map(drop)
            } else {
                run_sweep(run, &sweep)
            }
        }
        Action::Serve { keep_serving, run } => {
            let (run, _) = with_file(run, 0)?;
            let linger = keep_serving.then_some(Linger);
            train_and(run, 0, "127.0.0.1:7070", linger).map(drop)
        }
        Action::Bench { bench, run } => bench::run(bench, run),
        Action::BenchBrowser { bench, run } => bench_browser::run(bench, run),
    }
}

/// Keep serving the dashboard and the final model after training, until Ctrl-C.
struct Linger;

fn train(args: RunArgs, local_workers: usize, default_listen: &str) -> Result<training::Summary> {
    train_and(args, local_workers, default_listen, None)
}

fn train_and(
    args: RunArgs,
    local_workers: usize,
    default_listen: &str,
    linger: Option<Linger>,
) -> Result<training::Summary> {
    let schedule = LrSchedule::parse(&args.lr_schedule).with_context(|| {
        format!(
            "unknown --lr-schedule {:?}: use cosine or constant",
            args.lr_schedule
        )
    })?;
    let dir = args.data.clone().unwrap_or_else(hearth_mnist::bundled_dir);
    let mut data = hearth_mnist::load(&dir)
        .with_context(|| format!("loading MNIST from {}", dir.display()))?;
    if let Some(n) = args.train_limit {
        data.train = data.train.head(n);
    }
    if let Some(n) = args.test_limit {
        data.test = data.test.head(n);
    }
    anyhow::ensure!(
        !data.train.is_empty() && !data.test.is_empty(),
        "empty training or test set"
    );
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");

    let Served {
        evaluator,
        events_rx,
        url,
        rt,
        arch,
        dashboard,
    } = start_server(&args, default_listen, Arc::new(data.test.clone()))?;
    let mut children = spawn_local_workers(local_workers, &url, &args.token)?;
    let plan = Plan {
        epochs: args.epochs,
        batch: args.batch,
        lr: args.lr,
        schedule,
        seed: args.seed,
        min_workers: args.min_workers,
        round_timeout: Duration::from_secs(args.round_timeout.max(1)),
        // Local workers start in seconds; devices of the household may take longer.
        join_timeout: (local_workers > 0).then(|| Duration::from_secs(60)),
        out: args.out.clone(),
        quiet: args.quiet,
    };
    let strategy = Box::new(FedAvgM::new(args.local_steps, args.momentum));
    let start = Instant::now();
    let result = Trainer::new(
        plan,
        data,
        events_rx,
        strategy,
        evaluator,
        dashboard.clone(),
    )
    .and_then(|t| t.run());
    if result.is_err() {
        dashboard.set_phase("failed");
    }
    let outcome = result.and_then(|(summary, params)| {
        let meta = HashMap::from([(
            "test_accuracy".to_string(),
            format!("{:.4}", summary.final_test_accuracy),
        )]);
        checkpoint::save(&args.out.join("model.safetensors"), &arch, &params, meta)?;
        let path = args.out.join("summary.json");
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let curves = figures::Curves {
            label: format!("{local_workers} workers"),
            train: summary.train_accuracy.clone(),
            test: summary.test_accuracy.clone(),
        };
        figures::accuracy(&args.out.join("accuracy.png"), &[curves])?;
        println!(
            "final test accuracy {:.2} % after {} epochs in {:.1} s; wrote {}",
            100.0 * summary.final_test_accuracy,
            args.epochs,
            start.elapsed().as_secs_f64(),
            args.out.display()
        );
        Ok(summary)
    });
    stop_children(&mut children);
    if linger.is_some() && outcome.is_ok() {
        println!(
            "training done; still serving the dashboard and the final model on {} (Ctrl-C to stop)",
            url.trim_end_matches("/ws").replacen("ws://", "http://", 1)
        );
        rt.block_on(tokio::signal::ctrl_c())?;
    }
    outcome
}

/// `train --sweep`: one run per worker count, then the two figures.
fn run_sweep(args: RunArgs, counts: &[usize]) -> Result<()> {
    let mut curves = Vec::new();
    let mut times = Vec::new();
    for &n in counts {
        anyhow::ensure!(n >= 1, "--sweep counts must be at least 1");
        println!("== {n} worker(s)");
        let run = RunArgs {
            out: args.out.join(format!("workers-{n}")),
            min_workers: n,
            ..args.clone()
        };
        let s = train(run, n, "127.0.0.1:0")?;
        let mean = s.epoch_seconds.iter().sum::<f64>() / s.epoch_seconds.len().max(1) as f64;
        times.push((n, mean));
        curves.push(figures::Curves {
            label: format!("{n} workers"),
            train: s.train_accuracy,
            test: s.test_accuracy,
        });
    }
    std::fs::create_dir_all(&args.out)?;
    figures::accuracy(&args.out.join("accuracy.png"), &curves)?;
    figures::epoch_time(&args.out.join("epoch_time.png"), &times)?;
    println!(
        "{:>8} {:>16} {:>16}",
        "workers", "s per epoch", "final test acc"
    );
    for ((n, t), c) in times.iter().zip(&curves) {
        println!(
            "{n:>8} {t:>16.2} {:>15.2}%",
            100.0 * c.test.last().copied().unwrap_or(0.0)
        );
    }
    println!(
        "wrote {} and {}",
        args.out.join("accuracy.png").display(),
        args.out.join("epoch_time.png").display()
    );
    Ok(())
}

/// The running endpoint and the initial global model.
struct Served {
    evaluator: ComponentModel,
    events_rx: std::sync::mpsc::Receiver<session::Event>,
    url: String,
    /// Keeps the server's runtime alive.
    rt: tokio::runtime::Runtime,
    arch: hearth_worker::ArchInfo,
    dashboard: dashboard::Dashboard,
}

/// Builds the global model in the component and starts the WebSocket endpoint.
fn start_server(
    args: &RunArgs,
    default_listen: &str,
    test: Arc<hearth_mnist::Split>,
) -> Result<Served> {
    start_server_with(args, default_listen, test, None)
}

/// [`start_server`], with `POST /api/bench` reports going to `bench_reports`.
fn start_server_with(
    args: &RunArgs,
    default_listen: &str,
    test: Arc<hearth_mnist::Split>,
    bench_reports: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<Served> {
    // The global model lives in the same component the devices run.
    let runtime = Runtime::new(Limits::default())?;
    let component = runtime.load_builtin()?;
    let optimizer = OptimizerConfig {
        learning_rate: args.lr,
        momentum: args.momentum,
        weight_decay: args.wd,
    };
    let config = ModelConfig {
        arch: args.arch.clone(),
        seed: args.seed,
        optimizer,
    };
    let mut evaluator = ComponentModel::new(&runtime, &component, &config)?;
    let arch = evaluator.describe().clone();

    let (events_tx, events_rx) = std::sync::mpsc::channel();
    let admission = Arc::new(Admission {
        events: events_tx,
        token: args.token.clone(),
        component_digest: component.digest().to_string(),
        browser_digest: hearth_runtime::digest(hearth_web_demo::MODULE),
        welcome: proto::Welcome {
            session: 1,
            arch: args.arch.clone(),
            seed: args.seed,
            // Workers step without momentum; the coordinator applies it.
            optimizer: proto::OptimizerParams {
                learning_rate: args.lr,
                momentum: 0.0,
                weight_decay: args.wd,
            },
            heartbeat_ms: 5000,
        },
        next_conn: AtomicU64::new(1),
    });
    let listen: SocketAddr = match args.listen {
        Some(a) => a,
        None => default_listen.parse()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let dashboard = dashboard::Dashboard::new(&args.arch, args.epochs, evaluator.params()?);
    let web_state = Arc::new(web::WebState {
        dashboard: dashboard.clone(),
        test,
        bench_reports,
    });
    let app = axum::Router::new()
        .route("/ws", axum::routing::get(session::upgrade))
        .with_state(admission)
        .merge(web::router(web_state));
    rt.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    let url = format!("ws://{addr}/ws");
    println!(
        "coordinator listening on {url} ({} params, {}); dashboard on http://{addr}/",
        arch.param_count, arch.name
    );
    Ok(Served {
        evaluator,
        events_rx,
        url,
        rt,
        arch,
        dashboard,
    })
}

/// Starts `n` `hearth-host work` processes next to this binary.
fn spawn_local_workers(n: usize, url: &str, token: &str) -> Result<Vec<Child>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let exe = std::env::current_exe()?;
    let host = exe.with_file_name("hearth-host");
    anyhow::ensure!(
        host.is_file(),
        "{} not found: build it with `cargo build --release -p hearth-host`",
        host.display()
    );
    (0..n)
        .map(|i| {
            Command::new(&host)
                .args([
                    "work",
                    "--coordinator",
                    url,
                    "--token",
                    token,
                    "--name",
                    &format!("local-{}", i + 1),
                ])
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", host.display()))
        })
        .collect()
}

/// Waits up to 10 s for the workers to leave after their goodbye, then kills them.
fn stop_children(children: &mut [Child]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for child in children.iter_mut() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
