//! One training run from start to finish (`train`, `serve`, each run of a
//! `--sweep`): data, endpoint, local workers, engine, observers, outputs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use hearth_mnist::Mnist;
use hearth_runtime::checkpoint;

use crate::driver::Driver;
use crate::engine::{Engine, RunState};
use crate::figures;
use crate::household::Household;
use crate::observe::{Log, Progress, RunFiles, Summary, SummaryRecorder};
use crate::options::RunOptions;
use crate::server::{self, Endpoint, LocalWorkers};
use crate::strategy::FedAvgM;

/// Which command the run serves, and so its defaults.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `train`: a free loopback port, 4 local workers, give up after 60 s
    /// without enough workers.
    Train,
    /// `serve`: 127.0.0.1:7070, the household's devices, wait for them forever.
    Serve {
        /// Keep serving the dashboard and the final model after training.
        keep_serving: bool,
    },
}

impl Mode {
    /// `opts` with this mode's defaults for what was not given.
    fn apply(self, mut opts: RunOptions) -> RunOptions {
        let (listen, workers) = match self {
            Mode::Train => ("127.0.0.1:0", 4),
            Mode::Serve { .. } => ("127.0.0.1:7070", 0),
        };
        let local = *opts.local_workers.get_or_insert(workers);
        opts.listen = opts.listen.or(listen.parse::<SocketAddr>().ok());
        let t = &mut opts.training;
        if local > 0 {
            // Local workers start in seconds; devices of the household may take longer.
            t.join_timeout = t.join_timeout.or(Some(60));
            t.min_workers = t.min_workers.max(1);
        }
        opts
    }
}

/// Loads MNIST as the options say (bundled copy, limits).
pub fn load_data(opts: &RunOptions) -> Result<Mnist> {
    let dir = opts.data.clone().unwrap_or_else(hearth_mnist::bundled_dir);
    let mut data = hearth_mnist::load(&dir)
        .with_context(|| format!("loading MNIST from {}", dir.display()))?;
    if let Some(n) = opts.training.train_limit {
        data.train = data.train.head(n);
    }
    if let Some(n) = opts.training.test_limit {
        data.test = data.test.head(n);
    }
    anyhow::ensure!(
        !data.train.is_empty() && !data.test.is_empty(),
        "empty training or test set"
    );
    Ok(data)
}

/// Trains as `opts` say and writes the results to `opts.out`.
pub fn train(opts: RunOptions, mode: Mode) -> Result<Summary> {
    let mut opts = mode.apply(opts);
    // A resumed run trains as it was saved, in its own directory.
    let resumed = match opts.resume.clone() {
        Some(dir) => {
            let (files, state) = RunFiles::resume(&dir)?;
            anyhow::ensure!(
                state.phase != crate::engine::Phase::Finished,
                "the run in {} is finished: nothing to resume",
                dir.display()
            );
            opts.out = dir;
            opts.training = state.options.clone();
            Some((files, state))
        }
        None => None,
    };
    let t = &opts.training;
    t.validate()?;
    let data = load_data(&opts)?;
    let listen = opts.listen.context("no address to listen on")?;
    let household = Household::open(&opts.household)?;
    anyhow::ensure!(
        listen.ip().is_loopback() || !household.is_dev(),
        "refusing to listen on {listen} with the public development secret: anyone on the \
         network could join. Run `hearth-coordinator pair --name DEVICE` once (it makes a \
         household secret in {}) or pass --secret",
        household.home().display()
    );
    let tls = crate::tls::server(&opts.tls, household.home())?;
    let component = match &opts.component {
        Some(path) => Some((
            path.clone(),
            crate::components::household_public_key(household.home())?,
        )),
        None => None,
    };
    let server::Served {
        mut evaluator,
        events,
        url,
        rt,
        arch,
        mut dashboard,
        catalog,
        component: started_on,
        kept,
    } = server::start(
        t,
        Endpoint {
            listen,
            household: household.clone(),
            limits: opts.limits.clone(),
            tls: tls.clone(),
            component: component.clone(),
            test: Arc::new(data.test.clone()),
            bench_reports: None,
        },
    )?;
    let local = opts.local_workers.unwrap_or(0);
    let fingerprint = tls.as_ref().map(|(_, fp)| fp.as_str());
    let workers = LocalWorkers::spawn(local, &url, &household, fingerprint, component.as_ref())?;
    let start = Instant::now();
    let strategy = Box::new(
        FedAvgM::new(t.local_steps, t.momentum)
            .with_early_local_steps(t.early_local_steps)
            .with_aggregate(t.aggregate)
            .with_momentum_on(t.momentum_on)
            .with_split(t.split_steps)
            .with_scaling(
                t.lr_scaling,
                f64::from(t.warmup_epochs) * data.train.len() as f64,
            ),
    );
    let train = Arc::new(data.train);
    let (mut files, mut engine) = open_run(
        &opts,
        resumed,
        train,
        strategy,
        &dashboard,
        evaluator.params()?,
    )?;
    let config = hearth_worker::ModelConfig {
        arch: t.arch.clone(),
        seed: t.seed,
        optimizer: t.optimizer(),
    };
    let saved_on = engine.view().component.digest.clone();
    if saved_on != started_on.digest && catalog.admits(&saved_on) {
        // A resumed run goes on with the component it had rolled out.
        evaluator = catalog.model(&saved_on, &config)?;
        if let Some(info) = catalog.info(&saved_on) {
            println!("resuming on {} ({})", info.label(), info.digest);
        }
    } else {
        let builtin = hearth_runtime::digest(hearth_runtime::BUILTIN_COMPONENT);
        let settled = started_on.digest != builtin && catalog.offer(&started_on.digest).is_some();
        engine = engine.with_component(started_on);
        if settled {
            // Started on a rolled-out component: hosts that join on another get it.
            engine.settle(builtin);
        }
    }
    for info in kept {
        engine.know(info);
    }
    let (mut log, mut progress) = (Log, Progress::new(opts.quiet));
    let mut summary = SummaryRecorder::resumed(&engine.view().history);
    let clock = engine.view().clock;
    let result = Driver {
        events: &events,
        evaluator: &mut evaluator,
        catalog: &catalog,
        config,
        test: &data.test,
        observers: vec![
            &mut log,
            &mut files,
            &mut progress,
            &mut dashboard,
            &mut summary,
        ],
        clock,
    }
    .run(&mut engine);
    drop(workers);
    if let Err(e) = result {
        dashboard.set_phase("failed");
        return Err(e);
    }
    let summary = summary.summary;
    write_results(&opts, &arch, engine.global(), &summary, local)?;
    println!(
        "final test accuracy {:.2} % after {} epochs in {:.1} s; wrote {}",
        100.0 * summary.final_test_accuracy,
        t.epochs,
        start.elapsed().as_secs_f64(),
        opts.out.display()
    );
    if let Mode::Serve { keep_serving: true } = mode {
        println!(
            "training done; still serving the dashboard and the final model on {} (Ctrl-C to stop)",
            url.trim_end_matches("/ws").replacen("ws://", "http://", 1)
        );
        rt.block_on(tokio::signal::ctrl_c())?;
    }
    Ok(summary)
}

/// The run's files and engine: a resumed run's (checked against the data),
/// or a new one's from the initial parameters.
fn open_run(
    opts: &RunOptions,
    resumed: Option<(RunFiles, RunState)>,
    train: Arc<hearth_mnist::Split>,
    strategy: Box<FedAvgM>,
    dashboard: &crate::dashboard::Dashboard,
    initial: Vec<f32>,
) -> Result<(RunFiles, Engine)> {
    Ok(match resumed {
        Some((files, state)) => {
            let saved = state.current.as_ref().map(|c| c.ledger.samples_total());
            anyhow::ensure!(
                saved.is_none_or(|n| n == train.len()),
                "the saved run trains on {} samples, this one would on {} (same --data and --train-limit?)",
                saved.unwrap_or(0),
                train.len()
            );
            let state = state.resumed();
            for m in &state.history {
                dashboard.record_epoch(crate::dashboard::EpochPoint::from(m));
            }
            println!(
                "resuming {} at epoch {}, round {} ({} epochs done)",
                opts.out.display(),
                state.epoch,
                state.round,
                state.history.len()
            );
            let engine = Engine::restore(state, train, strategy).map_err(anyhow::Error::msg)?;
            (files, engine)
        }
        None => {
            let (files, moved) = RunFiles::create(&opts.out)?;
            if let Some(aside) = moved {
                println!(
                    "{} held a previous run: moved it to {}",
                    opts.out.display(),
                    aside.display()
                );
            }
            let engine = Engine::new(opts.training.clone(), train, strategy, initial);
            (files, engine)
        }
    })
}

/// Writes the model, `summary.json` and `accuracy.png` to `opts.out`.
fn write_results(
    opts: &RunOptions,
    arch: &hearth_worker::ArchInfo,
    global: &[f32],
    summary: &Summary,
    workers: usize,
) -> Result<()> {
    let meta = HashMap::from([(
        "test_accuracy".to_string(),
        format!("{:.4}", summary.final_test_accuracy),
    )]);
    checkpoint::save(&opts.out.join("model.safetensors"), arch, global, meta)?;
    let path = opts.out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let curves = figures::Curves {
        label: format!("{workers} workers"),
        train: summary.train_accuracy.clone(),
        test: summary.test_accuracy.clone(),
    };
    figures::accuracy(&opts.out.join("accuracy.png"), &[curves])
}

/// `train --sweep`: one run per worker count, then the two figures.
pub fn sweep(opts: RunOptions, counts: &[usize]) -> Result<()> {
    let mut curves = Vec::new();
    let mut times = Vec::new();
    for &n in counts {
        anyhow::ensure!(n >= 1, "--sweep counts must be at least 1");
        println!("== {n} worker(s)");
        let mut run = opts.clone();
        run.out = opts.out.join(format!("workers-{n}"));
        run.local_workers = Some(n);
        run.training.min_workers = n;
        let s = train(run, Mode::Train)?;
        let mean = s.epoch_seconds.iter().sum::<f64>() / s.epoch_seconds.len().max(1) as f64;
        times.push((n, mean));
        curves.push(figures::Curves {
            label: format!("{n} workers"),
            train: s.train_accuracy,
            test: s.test_accuracy,
        });
    }
    std::fs::create_dir_all(&opts.out)?;
    figures::accuracy(&opts.out.join("accuracy.png"), &curves)?;
    figures::epoch_time(&opts.out.join("epoch_time.png"), &times, "workers")?;
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
        opts.out.join("accuracy.png").display(),
        opts.out.join("epoch_time.png").display()
    );
    Ok(())
}
