//! The web demo in a real browser: headless Chromium driven by playwright-core
//! (`tests/browser/demo.mjs`) against a real coordinator and `hearth-host`.
//!
//! Needs Chromium (`/usr/bin/chromium` or `HEARTH_CHROMIUM`), Node.js and
//! `npm ci --prefix tests/browser`; `scripts/test.sh` (the README's test
//! command) installs them. Without them this test says so and passes, unless
//! `HEARTH_BROWSER_TESTS=1` (set by `scripts/test.sh`) makes a missing
//! browser a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hearth_e2e::{assert_each_sample_once, bundled_mnist, serve_lingering, text, worker};
use hearth_runtime::{ComponentModel, Limits, Runtime};
use hearth_worker::{ModelConfig, OptimizerConfig};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Why the browser test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    let chromium = std::env::var("HEARTH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!("no Chromium at {chromium}"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node on PATH".into());
    }
    if !browser_dir().join("node_modules/playwright-core").is_dir() {
        return Some("playwright-core is not installed (npm ci --prefix tests/browser)".into());
    }
    None
}

/// Whether the browser tests can run; without the tools they are skipped
/// (saying why), unless `HEARTH_BROWSER_TESTS=1` makes that a failure.
fn browser_available() -> bool {
    let Some(why) = missing_tools() else {
        return true;
    };
    assert!(
        std::env::var("HEARTH_BROWSER_TESTS").as_deref() != Ok("1"),
        "HEARTH_BROWSER_TESTS=1 but {why}"
    );
    eprintln!("SKIPPED: the browser test needs Chromium, node and playwright-core: {why}");
    false
}

/// SHA-256 of the parameters after three steps on test images 0..63 from
/// seed 7, computed in the wasmtime component.
fn wasmtime_parity_digest() -> (String, Vec<f32>) {
    let data = hearth_mnist::load(&bundled_mnist()).expect("MNIST");
    let test = data.test.head(64);
    let runtime = Runtime::new(Limits::default()).expect("runtime");
    let component = runtime.load_builtin().expect("component");
    let config = ModelConfig {
        arch: "lenet5".into(),
        seed: 7,
        optimizer: OptimizerConfig {
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
        },
    };
    let mut model = ComponentModel::new(&runtime, &component, &config).expect("model");
    let labels = test.labels.as_slice().expect("labels").to_vec();
    let losses = (0..3)
        .map(|_| {
            model
                .train_batch(test.pixels(), &labels)
                .expect("step")
                .loss
        })
        .collect();
    let bytes: Vec<u8> = model
        .params()
        .expect("params")
        .iter()
        .flat_map(|p| p.to_le_bytes())
        .collect();
    (hearth_runtime::digest(&bytes), losses)
}

#[test]
fn a_browser_tab_trains_survives_a_reload_and_classifies_a_drawn_digit() {
    if !browser_available() {
        return;
    }
    let out = tempfile::tempdir().expect("temp dir");
    let dir = out.path().to_str().expect("utf-8 path");
    let (train_n, epochs) = (19_200u64, 3u64);
    // Two workers before the first round: the host and the browser tab.
    let (_coordinator, url) = serve_lingering(&[
        "--min-workers",
        "2",
        "--epochs",
        &epochs.to_string(),
        "--train-limit",
        &train_n.to_string(),
        "--test-limit",
        "2000",
        // Long enough rounds that the reload lands inside one.
        "--local-steps",
        "8",
        "--out",
        dir,
    ]);
    let _host = worker(&url, "host-1");
    let http = url.trim_end_matches("ws").replacen("ws://", "http://", 1);
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("browser-artifacts");
    let run = Command::new("node")
        .arg(browser_dir().join("demo.mjs"))
        .arg(hearth_e2e::paired_page(&http, "tab-1"))
        .arg(&artifacts)
        .output()
        .expect("start node");
    assert!(run.status.success(), "{}", text(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("demo.mjs printed no JSON ({e}): {}", text(&run)));
    eprintln!("{seen:#}");

    // Bit-identical training step in Chromium's wasm and in wasmtime.
    let (digest, losses) = wasmtime_parity_digest();
    assert_eq!(
        seen["parity"]["digest"].as_str(),
        Some(digest.as_str()),
        "browser and wasmtime parameters differ after the same 3 steps (wasmtime losses {losses:?})"
    );

    // The ledger credits the tab, and nothing was lost to the reload.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !out.path().join("summary.json").exists() {
        assert!(Instant::now() < deadline, "the run did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_each_sample_once(out.path(), train_n, epochs);
    let requeued = hearth_e2e::requeued_batches(out.path());
    assert!(
        requeued >= 1,
        "the reload was meant to interrupt a round, but no batch went back to the queue"
    );
    let name = seen["name"].as_str().expect("tab name");
    let ledger = std::fs::read_to_string(out.path().join("ledger.jsonl")).expect("ledger");
    let credited = ledger
        .lines()
        .filter(|l| l.contains(&format!("\"worker\":\"{name}\"")))
        .count();
    assert!(
        credited >= 3,
        "the ledger credits {name} with {credited} batches"
    );
    let tab = seen["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == name))
        .expect("the tab in the dashboard's worker list");
    assert_eq!(tab["kind"], "browser");

    // The dashboard showed accuracy, and it moved up.
    let accs: Vec<f64> = seen["epoch_test_accuracy"]
        .as_array()
        .expect("accuracies")
        .iter()
        .filter_map(|a| a.as_f64())
        .collect();
    assert_eq!(accs.len() as u64, epochs);
    assert!(
        accs[accs.len() - 1] >= 0.93 && accs[accs.len() - 1] > accs[0],
        "test accuracy per epoch {accs:?}"
    );
    assert!(
        seen["final_shown_test_accuracy"]
            .as_str()
            .is_some_and(|s| s.ends_with('%')),
        "{seen}"
    );

    // Digits drawn on the canvas are classified as the model classifies the
    // original image, and mostly right (the model of this short run is about
    // 95 % accurate). A digit whose ink box is not exactly 20 pixels is
    // rescaled on the way, which may flip a borderline case: one may differ.
    let digits = seen["digits"].as_array().expect("digits");
    let right = digits
        .iter()
        .filter(|d| d["label"] == d["predicted"])
        .count();
    let same = digits
        .iter()
        .filter(|d| d["direct"] == d["predicted"])
        .count();
    assert!(
        digits[0]["label"] == digits[0]["predicted"] && right >= 8 && same >= 9,
        "drawn digits: {digits:?}"
    );
    assert!(artifacts.join("web-demo.png").is_file());
}

/// The tab's worker reconnects by itself when the coordinator goes away and a
/// new one comes up on the same address, and trains for the new one.
#[test]
fn a_browser_tab_reconnects_to_a_restarted_coordinator() {
    use std::io::{BufRead, Write};
    if !browser_available() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let (first_out, second_out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let coordinator = |out: &Path, epochs: &str| {
        serve_lingering(&[
            "--listen",
            &listen,
            "--epochs",
            epochs,
            "--train-limit",
            "3200",
            "--test-limit",
            "500",
            "--out",
            out.to_str().expect("utf-8 path"),
        ])
    };
    let (first, url) = coordinator(first_out.path(), "100");
    let http = url.trim_end_matches("ws").replacen("ws://", "http://", 1);
    let mut node = Command::new("node")
        .arg(browser_dir().join("reconnect.mjs"))
        .arg(hearth_e2e::paired_page(&http, "tab-1"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start node");
    let mut stdin = node.stdin.take().expect("stdin");
    let mut lines = std::io::BufReader::new(node.stdout.take().expect("stdout")).lines();
    let joined = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    assert_eq!(
        joined, "JOINED",
        "the tab never trained for the first coordinator"
    );
    drop(first); // killed: the tab's connection drops
    // Long enough that the tab is still training when the script looks.
    let (_second, second_url) = coordinator(second_out.path(), "100");
    writeln!(stdin, "restarted").expect("tell node");
    let report = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    drop(stdin);
    let status = node.wait().expect("node");
    assert!(status.success(), "reconnect.mjs failed: {report}");
    let seen: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    let name = seen["name"].as_str().expect("name");
    // The second coordinator credits the tab with rounds (its dashboard API
    // counts rounds the ledger completed; the epoch is not over yet).
    let credited = hearth_e2e::rounds_of(&second_url, name);
    assert!(
        credited >= 1,
        "the new coordinator credits {name} with {credited} rounds"
    );
}

/// `tests/browser/swap.mjs` driving one paired tab.
struct SwapScript {
    node: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl SwapScript {
    /// Opens `page`, joins, and waits until the tab has trained a round;
    /// its report comes after `rounds` more (8 if `None`).
    fn start(page: &str, digest: &str, rounds: Option<u32>) -> Self {
        use std::io::BufRead;
        let mut node = Command::new("node")
            .arg(browser_dir().join("swap.mjs"))
            .arg(page)
            .arg(digest)
            .arg(rounds.unwrap_or(8).to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start node");
        let stdin = node.stdin.take();
        let mut lines = std::io::BufReader::new(node.stdout.take().expect("stdout")).lines();
        let joined = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        assert_eq!(joined, "JOINED", "the tab never trained");
        Self { node, stdin, lines }
    }

    /// Tells the script to go on; what the tab showed once it trained on.
    fn report(mut self) -> serde_json::Value {
        use std::io::Write;
        if let Some(mut stdin) = self.stdin.take() {
            writeln!(stdin, "go on").expect("tell node");
        }
        let report = self.lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let status = self.node.wait().expect("node");
        assert!(status.success(), "swap.mjs failed: {report}");
        let seen: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
        eprintln!("{seen:#}");
        assert_eq!(seen["loadedOnce"], true, "the page was loaded again");
        assert_eq!(seen["navigations"], 1);
        seen
    }
}

/// A coordinator in `household` training a long run with `local` hosts and
/// one tab, and the tab's paired page (trusting the household's key; with
/// `?trial=SECONDS` if given).
fn tab_household(
    household: &hearth_e2e::household::TestHousehold,
    out: &Path,
    local: usize,
    trial: Option<u32>,
) -> (hearth_e2e::Reaped, String, String) {
    let (local, min) = (local.to_string(), (local + 1).to_string());
    let (coordinator, url) = household.serve(
        &[
            "--local-workers",
            &local,
            "--min-workers",
            &min,
            "--keep-serving",
            "--epochs",
            "100",
            "--train-limit",
            "3200",
            "--test-limit",
            "500",
            "--local-steps",
            "1",
            "--out",
            out.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    let http = url.trim_end_matches("ws").replacen("ws://", "http://", 1);
    let http = match trial {
        Some(s) => format!("{http}?trial={s}"),
        None => http,
    };
    let page = format!(
        "{}&trust={}",
        hearth_e2e::paired_page(&http, "tab-1"),
        household.public_key
    );
    (coordinator, url, page)
}

/// Hot-reload in a tab: a component pushed while the tab trains reaches it
/// (after the host canary proved it), is verified with the household key
/// from the pairing link, run by the browser's own engine, and trained on
/// without a page reload; the ledger credits the tab's rounds on it.
#[test]
fn a_browser_tab_swaps_to_a_pushed_component_without_a_reload() {
    if !browser_available() {
        return;
    }
    let household = hearth_e2e::household::TestHousehold::new();
    let files = tempfile::tempdir().expect("temp dir");
    let v2 = household.signed(files.path(), "v2.wasm", hearth_test_components::V2, "2");
    let v2_digest = hearth_protocol::digest(hearth_test_components::V2);
    let out = tempfile::tempdir().expect("temp dir");
    let (coordinator, url, page) = tab_household(&household, out.path(), 1, None);
    let tab = SwapScript::start(&page, &v2_digest, None);
    let pushed = household.push(&url, &v2);
    assert!(pushed.status.success(), "push failed: {}", text(&pushed));
    let seen = tab.report();
    assert_eq!(seen["restarts"], 0, "the tab's worker was restarted");
    assert_eq!(seen["tab"]["component_label"], "hearth-trainer 2");
    assert!(
        seen["shown"]
            .as_str()
            .is_some_and(|s| s.contains("hearth-trainer 2")),
        "{seen}"
    );
    // The ledger: the tab's rounds before the swap on its own module, then
    // on v2, never back; the host swapped first (it is the canary).
    let ledger = hearth_e2e::household::ledger_components(out.path());
    let tab: Vec<&(String, u64, String)> = ledger.iter().filter(|(w, _, _)| w == "tab-1").collect();
    let first = tab
        .iter()
        .position(|(_, _, c)| *c == v2_digest)
        .unwrap_or_else(|| panic!("the ledger credits no round of the tab on v2: {tab:?}"));
    assert!(first > 0, "the tab ran v2 from its first round");
    assert!(
        tab[first..].iter().all(|(_, _, c)| *c == v2_digest),
        "{tab:?}"
    );
    assert!(tab.len() - first >= 3, "{} rounds on v2", tab.len() - first);
    let host_first = ledger
        .iter()
        .filter(|(w, _, c)| w == "local-1" && *c == v2_digest)
        .map(|(_, r, _)| *r)
        .min()
        .expect("the host ran v2");
    assert!(host_first < tab[first].1, "the host canary swaps first");
    let events = hearth_e2e::household::component_events(&url);
    assert!(
        events
            .iter()
            .any(|(e, d, w)| e == "swapped" && *d == v2_digest && w == "tab-1"),
        "{events:?}"
    );
    drop(coordinator);
}

/// Hostile components in a tab (the tab is the canary: no host): NaN
/// parameters fail the self-test, a memory bomb hits the tab's cap and
/// traps, an endless loop is stopped by the page's watchdog (the Web
/// Worker is replaced, not the page). Each is rolled back or refused, the
/// rollout halts, and the tab trains on with its own code.
#[test]
fn hostile_components_cannot_take_a_browser_tab_down() {
    if !browser_available() {
        return;
    }
    use hearth_e2e::household::{component_events, wait_for};
    let household = hearth_e2e::household::TestHousehold::new();
    let files = tempfile::tempdir().expect("temp dir");
    let out = tempfile::tempdir().expect("temp dir");
    let (coordinator, url, page) = tab_household(&household, out.path(), 0, Some(3));
    let tab = SwapScript::start(&page, "-", None);
    for (name, bytes, outcome) in [
        ("nan", hearth_test_components::NAN, "refused"),
        ("memory", hearth_test_components::MEMORY, "rolled back"),
        ("loop", hearth_test_components::LOOP, "rolled back"),
    ] {
        let file = household.signed(files.path(), &format!("{name}.wasm"), bytes, name);
        let pushed = household.push(&url, &file);
        assert!(pushed.status.success(), "push failed: {}", text(&pushed));
        let d = hearth_protocol::digest(bytes);
        wait_for(120, &format!("the rollout of {name} to halt"), || {
            component_events(&url)
                .iter()
                .any(|(e, dd, _)| e == "rollout halted" && *dd == d)
        });
        let events = component_events(&url);
        assert!(
            events
                .iter()
                .any(|(e, dd, w)| e == outcome && *dd == d && w == "tab-1"),
            "{name}: {events:?}"
        );
    }
    let seen = tab.report();
    assert_eq!(seen["restarts"], 1, "only the loop needed the watchdog");
    assert_eq!(seen["tab"]["component_label"], "built in");
    assert_eq!(seen["tab"]["phase"], "training");
    // The loop and the bomb behave for one call (so they pass the
    // self-test): at most that round of each is credited; NaN never runs.
    let ledger = hearth_e2e::household::ledger_components(out.path());
    for (bytes, most) in [
        (hearth_test_components::NAN, 0),
        (hearth_test_components::MEMORY, 1),
        (hearth_test_components::LOOP, 1),
    ] {
        let d = hearth_protocol::digest(bytes);
        let credited = ledger.iter().filter(|(_, _, c)| *c == d).count();
        assert!(credited <= most, "{credited} rounds of {d} credited");
    }
    drop(coordinator);
}

/// A tab on two cores: a helper Web Worker computes half of each step's
/// gradient (shared memory; the coordinator's pages are cross-origin
/// isolated), the coordinator still sees one device, and the model learns.
#[test]
fn a_browser_tab_trains_with_two_web_workers() {
    if !browser_available() {
        return;
    }
    let out = tempfile::tempdir().expect("temp dir");
    let (_coordinator, url) = serve_lingering(&[
        "--min-workers",
        "1",
        "--epochs",
        "2",
        "--train-limit",
        "6400",
        "--test-limit",
        "1000",
        "--out",
        out.path().to_str().expect("utf-8 path"),
    ]);
    let http = url.trim_end_matches("ws").replacen("ws://", "http://", 1);
    let page = hearth_e2e::paired_page(&format!("{http}?workers=2"), "tab-1");
    // The tab trains the whole run, then reports.
    let tab = SwapScript::start(&page, "-", Some(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !out.path().join("summary.json").exists() {
        assert!(Instant::now() < deadline, "the run did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = tab.report();
    assert_eq!(seen["tab"]["threads"], 2, "{seen}");
    assert_each_sample_once(out.path(), 6400, 2);
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).expect("summary"))
            .expect("JSON");
    let accuracy = s["final_test_accuracy"].as_f64().unwrap_or(0.0);
    assert!(
        accuracy > 0.9,
        "test accuracy {accuracy} after 2 epochs on two workers"
    );
}
