//! `hearth-host bench-component`: what taking a new component costs a
//! device, step by step, on this machine: checking its signature, compiling
//! it (or loading its compiled artefact from the cache instead), and the
//! whole preparation a device does before it reports ready (verify, keep,
//! compile, self-test one step on a real MNIST batch).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hearth_protocol::Offer;
use hearth_runtime::{ComponentModel, ComponentStore, Limits, Runtime};
use hearth_signing::{Manifest, SigningKey};
use hearth_worker::ModelConfig;

use crate::component_trainer::{Reference, prepare};

/// Options of `bench-component`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The component (default: the one built in, signed with a throwaway key).
    file: Option<PathBuf>,
    /// Repetitions of each step; the median is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn timed<T>(repeats: usize, mut f: impl FnMut() -> Result<T>) -> Result<Duration> {
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    Ok(median(times))
}

/// Runs the benchmark and prints one line per step.
pub fn run(args: Args) -> Result<()> {
    let bytes = match &args.file {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => hearth_runtime::BUILTIN_COMPONENT.to_vec(),
    };
    let key = SigningKey::from_seed([7; 32]);
    let signed = key.sign(
        &bytes,
        Manifest {
            name: "bench".into(),
            version: "1".into(),
            package: hearth_runtime::WIT_PACKAGE.into(),
            world: hearth_runtime::WIT_WORLD.into(),
            sha256: String::new(),
        },
    );
    let signature = serde_json::to_string(&signed)?;
    let policy = hearth_runtime::policy(vec![key.public()]);
    let runtime = Runtime::new(Limits::default())?;
    let dir = std::env::temp_dir().join(format!("hearth-bench-component-{}", std::process::id()));
    let store = ComponentStore::open(&dir)?;
    let cache = store.compiled_path(&hearth_protocol::digest(&bytes));

    let verify = timed(args.repeats, || {
        policy
            .verify(&bytes, Some(&signature))
            .map_err(anyhow::Error::msg)
    })?;
    let compile = timed(args.repeats, || Ok(runtime.load(&bytes)?))?;
    runtime.load_cached(&bytes, &cache)?;
    let cached = timed(args.repeats, || {
        let (_, hit) = runtime.load_cached(&bytes, &cache)?;
        anyhow::ensure!(hit, "the compiled cache was not used");
        Ok(())
    })?;

    let mnist =
        hearth_mnist::load(&hearth_mnist::bundled_dir()).context("loading bundled MNIST")?;
    let idx: Vec<usize> = (0..64).collect();
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    mnist.train.gather(&idx, &mut pixels, &mut labels);
    let config = ModelConfig {
        arch: "lenet5".into(),
        seed: 1,
        optimizer: Default::default(),
    };
    let mut model = ComponentModel::new(&runtime, &runtime.load(&bytes)?, &config)?;
    let reference = Reference {
        config,
        arch: model.describe().clone(),
        params: model.params()?,
        batch: (pixels, labels),
    };
    let offer = Offer {
        signature,
        component: bytes.clone(),
    };
    let prepared = |cold: bool| {
        if cold {
            let _ = std::fs::remove_file(&cache);
        }
        prepare(
            &runtime,
            &store,
            &policy,
            Duration::from_secs(60),
            &offer,
            Some(&reference),
        )
        .map(|_| ())
        .map_err(anyhow::Error::msg)
    };
    let cold = timed(args.repeats, || prepared(true))?;
    let warm = timed(args.repeats, || prepared(false))?;
    let _ = std::fs::remove_dir_all(&dir);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "component of {} KB, median of {} runs each:",
        bytes.len() / 1024,
        args.repeats
    );
    println!(
        "  verify the signature (SHA-256 + Ed25519)  {:8.2} ms",
        ms(verify)
    );
    println!(
        "  compile (Cranelift)                       {:8.2} ms",
        ms(compile)
    );
    println!(
        "  load from the compiled cache              {:8.2} ms",
        ms(cached)
    );
    println!(
        "  prepare an offer, cold (verify, keep, compile, self-test)  {:8.2} ms",
        ms(cold)
    );
    println!(
        "  prepare an offer, cached artefact                          {:8.2} ms",
        ms(warm)
    );
    Ok(())
}
