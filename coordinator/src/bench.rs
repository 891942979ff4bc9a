//! `hearth-coordinator bench`: what coordination costs, apart from training.
//!
//! - aggregation of 11 workers' updates of LeNet-5 (61,706 parameters);
//! - encoding and decoding of the two bulk frames;
//! - round overhead on loopback: a real coordinator with "null" workers that
//!   answer every assignment at once with a tiny update, so each round's wall
//!   time is framing, WebSocket transport, ledger, validation and
//!   aggregation, and no training; and the same rounds through the engine
//!   alone, in process (no sockets), to separate the engine's cost;
//! - bytes per epoch per device through the coordinator's link for each
//!   vector encoding, with real MNIST pixels.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use hearth_protocol::auth::DeviceKey;
use hearth_protocol::{self as proto, Message};
use hearth_session::{Identity, Trainer, WorkerSession};
use hearth_worker::ModelConfig;

mod bytes;

use crate::driver::Driver;
use crate::engine::{Admitted, Engine, Evaluation, Input, Output};
use crate::household::Household;
use crate::observe::{Observer, SummaryRecorder};
use crate::options::RunOptions;
use crate::run::load_data;
use crate::server::{self, Endpoint};
use crate::strategy::{FedAvgM, FitResult, Strategy};

/// Options of `bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Null workers in the round-overhead measurement.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Rounds in the round-overhead measurement (at most what MNIST holds).
    #[arg(long, default_value_t = 200)]
    rounds: usize,
}

const PARAMS: usize = 61_706;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs all measurements and prints them.
pub fn run(args: Args, base: RunOptions) -> Result<()> {
    aggregation();
    codec();
    let data = load_data(&base)?;
    round_overhead(&args, base)?;
    bytes::bytes_per_epoch(&data)?;
    Ok(())
}

/// An assignment of `k` batches of 64 with LeNet-5's parameters.
fn sample_assign(k: usize) -> Message {
    Message::Assign(proto::Assign {
        round: 1,
        params_version: 1,
        learning_rate: 0.05,
        steps: vec![64; k],
        reply: proto::UpdateKind::Delta,
        params: vec![0.5; PARAMS],
        params_encoding: proto::Encoding::F32,
        params_base: None,
        reply_encoding: proto::Encoding::F32,
        shift: 0,
        prefetched: false,
        pixels: vec![7; k * 64 * proto::IMAGE_LEN],
        labels: vec![3; k * 64],
        cache: None,
        component: String::new(),
    })
}

/// A result of 256 samples with LeNet-5's delta.
fn sample_result() -> Message {
    Message::Result(proto::RoundResult {
        round: 1,
        params_version: 1,
        samples: 256,
        loss_sum: 1.0,
        correct: 1,
        kind: proto::UpdateKind::Delta,
        values: vec![0.25; PARAMS],
        encoding: proto::Encoding::F32,
        compute_seconds: 0.0,
    })
}

/// Aggregation of 11 workers' updates (the study's largest cluster).
fn aggregation() {
    let contributions: Vec<FitResult> = (0..11)
        .map(|w| FitResult {
            worker: format!("w{w}"),
            samples: 64,
            update: (0..PARAMS)
                .map(|i| ((i * 31 + w * 7) % 97) as f32 * 1e-5)
                .collect(),
        })
        .collect();
    let mut strategy = FedAvgM::new(1, 0.9);
    let mut global = vec![0.0f32; PARAMS];
    strategy.initialize(&global);
    let times: Vec<f64> = (0..101)
        .map(|_| {
            let t = Instant::now();
            strategy.aggregate_fit(&mut global, &contributions, &[]);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    println!(
        "aggregation, 11 workers x {PARAMS} parameters: {:.3} ms (median of 101)",
        median(times)
    );
}

/// Encoding and decoding of the two bulk frames.
fn codec() {
    let (assign, result) = (sample_assign(4), sample_result());
    for (name, m) in [
        ("assign (params + 256 images)", &assign),
        ("result (delta)", &result),
    ] {
        let bytes = proto::encode(m);
        let enc = median(
            (0..51)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(proto::encode(m));
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect(),
        );
        let dec = median(
            (0..51)
                .map(|_| {
                    let t = Instant::now();
                    let _ = std::hint::black_box(proto::decode(&bytes));
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect(),
        );
        println!(
            "frame {name}: {} bytes, encode {enc:.0} us, decode {dec:.0} us",
            bytes.len()
        );
    }
}

/// Round overhead: the engine alone, then a real coordinator on loopback
/// with null workers.
fn round_overhead(args: &Args, base: RunOptions) -> Result<()> {
    let mut opts = base;
    let batches = (args.rounds * args.workers).min(60_000 / opts.training.batch.max(1));
    opts.training.train_limit = Some(batches * opts.training.batch);
    opts.training.test_limit = Some(256);
    opts.training.epochs = 1;
    opts.training.local_steps = 1;
    opts.training.min_workers = args.workers;
    opts.training.join_timeout = Some(60);
    opts.training.round_timeout = 60;
    let data = load_data(&opts)?;
    let (rounds, wall) = engine_rounds(&opts, &data, args.workers)?;
    println!(
        "round engine alone (no sockets, time inside the engine), {} instant workers, {rounds} rounds: {:.3} ms per round",
        args.workers,
        1e3 * wall / rounds.max(1) as f64
    );
    let household = Household::open(&opts.household)?;
    let served = server::start(
        &opts.training,
        Endpoint {
            listen: "127.0.0.1:0".parse()?,
            household: household.clone(),
            limits: opts.limits.clone(),
            tls: None,
            component: None,
            test: Arc::new(data.test.clone()),
            bench_reports: None,
        },
    )?;
    let digest = hearth_runtime::digest(hearth_runtime::BUILTIN_COMPONENT);
    let workers: Vec<_> = (0..args.workers)
        .map(|i| {
            let name = format!("null-{i}");
            let key = household.key_for(&name).map_err(anyhow::Error::msg);
            let (url, digest) = (served.url.clone(), digest.clone());
            std::thread::spawn(move || null_worker(&url, key?, &digest, &name))
        })
        .collect();
    let strategy = Box::new(FedAvgM::new(1, 0.9));
    let mut evaluator = served.evaluator;
    let mut engine = Engine::new(
        opts.training.clone(),
        Arc::new(data.train.clone()),
        strategy,
        evaluator.params()?,
    );
    let mut summary = SummaryRecorder::default();
    let mut counter = RoundCounter::default();
    let config = hearth_worker::ModelConfig {
        arch: opts.training.arch.clone(),
        seed: opts.training.seed,
        optimizer: opts.training.optimizer(),
    };
    Driver {
        events: &served.events,
        evaluator: &mut evaluator,
        catalog: &served.catalog,
        config,
        test: &data.test,
        observers: vec![&mut summary, &mut counter],
        clock: std::time::Duration::ZERO,
    }
    .run(&mut engine)?;
    for w in workers {
        let _ = w.join();
    }
    let summary = summary.summary;
    let rounds = counter.rounds.max(1) as f64;
    let wall = summary.epoch_seconds.first().copied().unwrap_or(0.0);
    println!(
        "round overhead on loopback, {} null workers, {rounds} rounds: {:.2} ms per round ({:.1} MB moved per round)",
        args.workers,
        1e3 * wall / rounds,
        summary.bytes_per_epoch.first().copied().unwrap_or(0) as f64 / rounds / 1e6
    );

    Ok(())
}

/// Counts the rounds of a run.
#[derive(Default)]
struct RoundCounter {
    rounds: u64,
}

impl Observer for RoundCounter {
    fn notice(&mut self, notice: &crate::engine::Notice) -> Result<()> {
        if let crate::engine::Notice::RoundFinished(_) = notice {
            self.rounds += 1;
        }
        Ok(())
    }
}

/// One epoch through the engine alone with `n` workers that answer every
/// assignment at once with a tiny update; returns the rounds and the
/// seconds spent inside the engine (the stand-in workers' own decoding and
/// encoding is not counted).
fn engine_rounds(opts: &RunOptions, data: &hearth_mnist::Mnist, n: usize) -> Result<(u64, f64)> {
    let global = vec![0.0f32; PARAMS];
    let strategy = Box::new(FedAvgM::new(1, 0.9));
    let mut engine = Engine::new(
        opts.training.clone(),
        Arc::new(data.train.clone()),
        strategy,
        global,
    );
    let mut queue: std::collections::VecDeque<Output> = Default::default();
    let start = Instant::now();
    let now = || start.elapsed();
    let mut inside = std::time::Duration::ZERO;
    let mut timed = |engine: &mut Engine, input: Input| {
        let t = Instant::now();
        let out = engine.handle(now(), input);
        inside += t.elapsed();
        out
    };
    for conn in 1..=n as u64 {
        let worker = Admitted {
            name: format!("null-{conn}"),
            kind: proto::WorkerKind::Host,
            component: String::new(),
            encodings: proto::encoding::ENCODINGS.to_vec(),
            sample_cache: 0,
            proof: Vec::new(),
        };
        queue.extend(timed(&mut engine, Input::Joined { conn, worker }));
    }
    let mut rounds = 0;
    while let Some(output) = queue.pop_front() {
        match output {
            Output::Send { conn, frame } => {
                if let Ok(Message::Assign(a)) = proto::decode(&frame) {
                    let reply = Message::Result(proto::RoundResult {
                        round: a.round,
                        params_version: a.params_version,
                        samples: a.labels.len() as u32,
                        loss_sum: 0.0,
                        correct: 0,
                        kind: a.reply,
                        // Small but not nothing (a zero update is refused).
                        values: vec![1e-6; a.params.len()],
                        encoding: proto::Encoding::F32,
                        compute_seconds: 0.0,
                    });
                    let bytes = proto::encode(&reply);
                    let message = proto::decode(&bytes)?;
                    let input = Input::Frame {
                        conn,
                        bytes: bytes.len(),
                        message,
                    };
                    queue.extend(timed(&mut engine, input));
                }
            }
            Output::Notice(crate::engine::Notice::RoundFinished(_)) => rounds += 1,
            Output::Evaluate { epoch, .. } => {
                let score = Evaluation {
                    loss_sum: 0.0,
                    correct: 0,
                    count: 1,
                };
                timed(&mut engine, Input::Evaluated { epoch, score });
                return Ok((rounds, inside.as_secs_f64()));
            }
            Output::Failed(reason) => anyhow::bail!("{reason}"),
            _ => {}
        }
    }
    anyhow::bail!("the engine stopped before the epoch ended")
}

/// A trainer that does next to nothing: each step moves every parameter by
/// 1e-6 (a zero update would be refused as no training).
struct NullTrainer {
    params: Vec<f32>,
}

impl Trainer for NullTrainer {
    type Error = String;
    fn architectures(&mut self) -> Result<Vec<String>, String> {
        Ok(vec!["lenet5".into()])
    }
    fn build(&mut self, _: &ModelConfig) -> Result<(), String> {
        Ok(())
    }
    fn set_params(&mut self, params: &[f32]) -> Result<(), String> {
        self.params.clear();
        self.params.extend_from_slice(params);
        Ok(())
    }
    fn params(&mut self) -> Result<Vec<f32>, String> {
        Ok(self.params.clone())
    }
    fn set_learning_rate(&mut self, _: f32) -> Result<(), String> {
        Ok(())
    }
    fn train_batch(&mut self, _: &[u8], _: &[u8]) -> Result<(f32, u32), String> {
        self.params.iter_mut().for_each(|p| *p += 1e-6);
        Ok((0.0, 0))
    }
}

/// A worker that answers every assignment immediately with a tiny update
/// (the same session code as a real host, with a trainer that does nothing).
fn null_worker(url: &str, key: DeviceKey, digest: &str, name: &str) -> Result<()> {
    use tungstenite::Message as Ws;
    let (mut ws, _) = tungstenite::connect(url)?;
    let identity = Identity {
        worker_id: name.into(),
        key,
        component_digest: digest.into(),
        kind: proto::WorkerKind::Host,
        threads: 1,
        memory_mib: 64,
        sample_cache: 0,
    };
    let mut session = WorkerSession::new(identity, NullTrainer { params: Vec::new() });
    ws.send(Ws::Binary(
        session
            .hello(crate::household::nonce()?)
            .map_err(anyhow::Error::msg)?
            .into(),
    ))?;
    loop {
        let bytes = match ws.read()? {
            Ws::Binary(b) => b,
            Ws::Close(_) => return Ok(()),
            _ => continue,
        };
        if let Some(reply) = session.handle(&bytes) {
            ws.send(Ws::Binary(reply.into()))?;
        }
        if session.phase().is_final() {
            return Ok(());
        }
    }
}
