//! `hearth-coordinator bench-browser`: the browser worker's training speed
//! against the wasmtime host's, on this machine.
//!
//! Times training steps (LeNet-5, batch 64, test images 0..639) in the
//! wasmtime component, then serves the demo on loopback and opens
//! `bench.html?report=1` in headless Chromium, where the page runs the same
//! steps on the same batches in a Web Worker and posts its img/s back; prints
//! both and their ratio. Unix only (the browser runs in its own process group).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hearth_runtime::{ComponentModel, Limits, OnOverrun, Runtime};
use hearth_worker::{ModelConfig, OptimizerConfig};

use crate::household::{self, Household};
use crate::options::RunOptions;
use crate::server::{self, Endpoint, Served};

/// Options of `bench-browser`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Chromium (or Chrome) executable.
    #[arg(long, default_value = "/usr/bin/chromium")]
    chromium: PathBuf,
    /// Seconds of measurement per repeat (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Repeats per side; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Longest wait for the browser's report, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Web Workers the tab trains with, one browser run each (a tab shares
    /// each step between that many; more than 1 needs cross-origin
    /// isolation, which the coordinator's pages have).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
}

/// Images the benchmark trains on, in batches of 64.
const IMAGES: usize = 640;

/// Runs both sides and prints the comparison.
pub fn run(args: Args, base: RunOptions) -> Result<()> {
    anyhow::ensure!(
        args.chromium.is_file(),
        "no browser at {} (install Debian's chromium or pass --chromium)",
        args.chromium.display()
    );
    let dir = base.data.clone().unwrap_or_else(hearth_mnist::bundled_dir);
    let data = hearth_mnist::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let test = data.test.head(IMAGES);
    anyhow::ensure!(
        test.len() == IMAGES,
        "the test set has fewer than {IMAGES} images"
    );
    let mut training = base.training.clone();
    training.arch = "lenet5".into();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let household = Household::open(&base.household)?;
    let key = household
        .key_for("bench-page")
        .map_err(anyhow::Error::msg)?;
    let Served { url, rt, .. } = server::start(
        &training,
        Endpoint {
            listen: "127.0.0.1:0".parse()?,
            household,
            limits: base.limits.clone(),
            tls: None,
            component: None,
            test: Arc::new(test.clone()),
            bench_reports: Some(tx),
        },
    )?;
    let page = |workers: usize| {
        household::page_link(
            &format!(
                "{}bench.html?report=1&seconds={}&repeats={}&workers={workers}",
                url.trim_end_matches("ws").replacen("ws://", "http://", 1),
                args.seconds,
                args.repeats.max(1)
            ),
            "bench-page",
            &key,
            None,
        )
    };
    println!("browser: {} {}", args.chromium.display(), page(1));
    // wasmtime first, so nothing of the browser is left running while it is timed.
    let mut host = Vec::new();
    for (label, limits) in [
        (
            "wasmtime host (watchdog timeout, default)",
            Limits {
                on_overrun: OnOverrun::EndProcess(stop_on_overrun),
                ..Limits::default()
            },
        ),
        ("wasmtime host (epoch-check timeout)", Limits::default()),
    ] {
        let (rate, runs) = wasmtime_rate(&test, limits, args.seconds, args.repeats.max(1))?;
        println!(
            "  {label:<42} {rate:>7.0} img/s  (runs: {})",
            runs.join(", ")
        );
        host.push((label, rate));
    }
    let mut browser = Vec::new();
    for &workers in &args.workers {
        let profile = tempfile::tempdir()?;
        let report = browser_report(&args, &page(workers), profile.path(), &rt, &mut rx)?;
        let rate = report["median"]
            .as_f64()
            .context("the browser's report has no median")?;
        let runs: Vec<String> = report["rates"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|x| x.as_f64())
                    .map(|x| format!("{x:.0}"))
                    .collect()
            })
            .unwrap_or_default();
        let used = report["workers"].as_u64().unwrap_or(1);
        let label = format!("browser ({used} Web Worker(s), wasm-bindgen)");
        println!(
            "  {label:<42} {rate:>7.0} img/s  (runs: {})",
            runs.join(", ")
        );
        if browser.is_empty() {
            println!(
                "  {}",
                report["user_agent"].as_str().unwrap_or("unknown browser")
            );
        }
        browser.push((workers, rate));
    }
    if let Some(&(one, browser_rate)) = browser.first() {
        for (label, rate) in &host {
            println!(
                "  browser ({one} worker) / {label} = {:.3}",
                browser_rate / rate.max(f64::MIN_POSITIVE)
            );
        }
        for &(workers, rate) in &browser[1..] {
            println!(
                "  browser {workers} workers / {one} = {:.3}",
                rate / browser_rate.max(f64::MIN_POSITIVE)
            );
        }
    }

    Ok(())
}

/// Opens `page` in headless Chromium and waits for its benchmark report.
fn browser_report(
    args: &Args,
    page: &str,
    profile: &std::path::Path,
    rt: &tokio::runtime::Runtime,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> Result<serde_json::Value> {
    let mut browser = Command::new(&args.chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(page)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so its renderer and helpers stop with it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", args.chromium.display()))?;
    let report = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(args.timeout), rx.recv()).await
    });
    stop_group(&mut browser);
    let report = report
        .ok()
        .flatten()
        .context("the browser did not report within the timeout")?;
    let report: serde_json::Value =
        serde_json::from_str(&report).context("the browser's report is not JSON")?;
    Ok(report)
}

/// Asks the browser's whole process group to stop, then makes sure it has.
fn stop_group(browser: &mut std::process::Child) {
    let group = format!("-{}", browser.id());
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = browser.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = browser.wait();
}

/// Median img/s of training steps in the wasmtime component, timed like the page.
fn wasmtime_rate(
    test: &hearth_mnist::Split,
    limits: Limits,
    seconds: f64,
    repeats: usize,
) -> Result<(f64, Vec<String>)> {
    let runtime = Runtime::new(limits)?;
    let component = runtime.load_builtin()?;
    let config = ModelConfig {
        arch: "lenet5".into(),
        seed: 1,
        optimizer: OptimizerConfig::default(),
    };
    let mut model = ComponentModel::new(&runtime, &component, &config)?;
    let labels = test.labels.as_slice().context("labels not contiguous")?;
    let pixels = test.pixels();
    let batches = IMAGES / 64;
    let mut step = 0usize;
    let mut measure = |d: Duration| -> Result<f64> {
        let start = Instant::now();
        let mut images = 0usize;
        while start.elapsed() < d {
            let b = step % batches;
            model.train_batch(
                &pixels[b * 64 * 784..(b + 1) * 64 * 784],
                &labels[b * 64..(b + 1) * 64],
            )?;
            images += 64;
            step += 1;
        }
        Ok(images as f64 / start.elapsed().as_secs_f64())
    };
    measure(Duration::from_secs(1))?;
    let mut rates: Vec<f64> = (0..repeats)
        .map(|_| measure(Duration::from_secs_f64(seconds)))
        .collect::<Result<_>>()?;
    rates.sort_by(f64::total_cmp);
    let runs = rates.iter().map(|r| format!("{r:.0}")).collect();
    Ok((rates[rates.len() / 2], runs))
}

/// Watchdog action of the timed wasmtime model, as on a host: a call that
/// overruns its limit stops the benchmark.
fn stop_on_overrun(limit: Duration) -> ! {
    eprintln!("error: a component call ran longer than {limit:?}");
    std::process::exit(75)
}
