//! `hearth-coordinator bench`: what coordination costs, apart from training.
//!
//! - aggregation of 11 workers' updates of LeNet-5 (61,706 parameters);
//! - encoding and decoding of the two bulk frames;
//! - round overhead on loopback: a real coordinator with "null" workers that
//!   answer every assignment at once with a zero update, so each round's wall
//!   time is framing, WebSocket transport, ledger, validation and
//!   aggregation, and no training;
//! - bytes on the wire per epoch of full MNIST for several local-step counts.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use hearth_protocol::{self as proto, Message};

use crate::strategy::{Contribution, FedAvgM, Strategy};
use crate::training::{Plan, Trainer};

use crate::{RunArgs, Served, start_server};

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
pub fn run(args: Args, base: RunArgs) -> Result<()> {
    // Aggregation: 11 workers (the study's largest cluster).
    let contributions: Vec<Contribution> = (0..11)
        .map(|w| Contribution {
            worker: format!("w{w}"),
            samples: 64,
            delta: (0..PARAMS)
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
            strategy.aggregate(&mut global, &contributions);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    println!(
        "aggregation, 11 workers x {PARAMS} parameters: {:.3} ms (median of 101)",
        median(times)
    );

    // Codec of the bulk frames.
    let assign = Message::Assign(proto::Assign {
        round: 1,
        params_version: 1,
        local_steps: 4,
        batch_size: 64,
        learning_rate: 0.05,
        batch_ids: vec![1, 2, 3, 4],
        params: Some(vec![0.5; PARAMS]),
        pixels: vec![7; 256 * proto::IMAGE_LEN],
        labels: vec![3; 256],
    });
    let result = Message::Result(proto::RoundResult {
        round: 1,
        params_version: 1,
        samples: 256,
        loss_sum: 1.0,
        correct: 1,
        kind: proto::UpdateKind::Delta,
        values: vec![0.25; PARAMS],
    });
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

    // Round overhead on loopback with null workers.
    let out = std::env::temp_dir().join(format!("hearth-bench-{}", std::process::id()));
    let batches = (args.rounds * args.workers).min(60_000 / base.batch.max(1));
    let run_args = RunArgs {
        train_limit: Some(batches * base.batch),
        test_limit: Some(256),
        epochs: 1,
        local_steps: 1,
        min_workers: args.workers,
        quiet: true,
        out: out.clone(),
        ..base
    };
    let dir = run_args
        .data
        .clone()
        .unwrap_or_else(hearth_mnist::bundled_dir);
    let mut data = hearth_mnist::load(&dir)?;
    data.train = data.train.head(batches * run_args.batch);
    data.test = data.test.head(256);
    let Served {
        evaluator,
        events_rx,
        url,
        rt: _rt,
        dashboard,
        ..
    } = start_server(&run_args, "127.0.0.1:0", Arc::new(data.test.clone()))?;
    let digest = hearth_runtime::digest(hearth_runtime::BUILTIN_COMPONENT);
    let workers: Vec<_> = (0..args.workers)
        .map(|i| {
            let (url, token, digest) = (url.clone(), run_args.token.clone(), digest.clone());
            std::thread::spawn(move || null_worker(&url, &token, &digest, &format!("null-{i}")))
        })
        .collect();
    let plan = Plan {
        epochs: 1,
        batch: run_args.batch,
        lr: run_args.lr,
        schedule: hearth_worker::LrSchedule::Constant,
        seed: 1,
        min_workers: args.workers,
        round_timeout: std::time::Duration::from_secs(60),
        join_timeout: Some(std::time::Duration::from_secs(60)),
        out: out.clone(),
        quiet: true,
    };
    let trainer = Trainer::new(
        plan,
        data,
        events_rx,
        Box::new(FedAvgM::new(1, 0.9)),
        evaluator,
        dashboard,
    )?;
    let (summary, _) = trainer.run()?;
    for w in workers {
        let _ = w.join();
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl"))?;
    let line: serde_json::Value =
        serde_json::from_str(metrics.lines().next().context("no metrics")?)?;
    let rounds = line["rounds"].as_u64().unwrap_or(1).max(1) as f64;
    let wall = summary.epoch_seconds.first().copied().unwrap_or(0.0);
    println!(
        "round overhead on loopback, {} null workers, {rounds} rounds: {:.2} ms per round ({:.1} MB moved per round)",
        args.workers,
        1e3 * wall / rounds,
        summary.bytes_per_epoch.first().copied().unwrap_or(0) as f64 / rounds / 1e6
    );
    let _ = std::fs::remove_dir_all(&out);

    // Bytes per epoch of full MNIST (938 batches of 64), from the frame sizes.
    let assign_bytes = |k: usize| {
        proto::encode(&Message::Assign(proto::Assign {
            batch_ids: vec![0; k],
            params: Some(vec![0.0; PARAMS]),
            pixels: vec![0; k * 64 * proto::IMAGE_LEN],
            labels: vec![0; k * 64],
            ..match &assign {
                Message::Assign(a) => a.clone(),
                _ => unreachable!(),
            }
        }))
        .len()
    };
    let result_bytes = proto::encode(&result).len();
    println!(
        "bytes per epoch of full MNIST (938 batches), 4 workers; MXNet dist_sync moves 0.46 GB of parameters:"
    );
    for k in [1usize, 2, 4, 8, 16] {
        let rounds = 938usize.div_ceil(4 * k);
        let per_round = 4 * (assign_bytes(k) + result_bytes);
        let images = 60_000 * (proto::IMAGE_LEN + 1);
        let total = rounds * per_round;
        println!(
            "  K = {k:>2}: {rounds:>3} rounds, {:.3} GB total, of which {:.3} GB parameters and {:.3} GB images",
            total as f64 / 1e9,
            (total - images.min(total)) as f64 / 1e9,
            images as f64 / 1e9
        );
    }
    Ok(())
}

/// A worker that answers every assignment immediately with a zero update.
fn null_worker(url: &str, token: &str, digest: &str, name: &str) -> Result<()> {
    use tungstenite::Message as Ws;
    let (mut ws, _) = tungstenite::connect(url)?;
    let hello = Message::Hello(proto::Hello {
        worker_id: name.into(),
        auth_token: token.into(),
        component_digest: digest.into(),
        capabilities: proto::Capabilities {
            kind: proto::WorkerKind::Host,
            architectures: vec!["lenet5".into()],
            threads: 1,
            memory_mib: 64,
            images_per_second: 0.0,
        },
    });
    ws.send(Ws::Binary(proto::encode(&hello).into()))?;
    loop {
        let bytes = match ws.read()? {
            Ws::Binary(b) => b,
            Ws::Close(_) => return Ok(()),
            _ => continue,
        };
        match proto::decode(&bytes)? {
            Message::Assign(a) => {
                let reply = Message::Result(proto::RoundResult {
                    round: a.round,
                    params_version: a.params_version,
                    samples: a.labels.len() as u32,
                    loss_sum: 0.0,
                    correct: 0,
                    kind: proto::UpdateKind::Delta,
                    values: vec![0.0; a.params.as_ref().map_or(PARAMS, Vec::len)],
                });
                ws.send(Ws::Binary(proto::encode(&reply).into()))?;
            }
            Message::Goodbye(_) => return Ok(()),
            _ => {}
        }
    }
}
