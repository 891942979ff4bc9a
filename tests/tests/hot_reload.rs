//! Hot-reload with real processes: a coordinator and its local hosts, a
//! household signing key, components pushed while training runs.

use std::collections::BTreeMap;

use hearth_e2e::household::{
    TestHousehold, component_events, ledger_components, progress, timed_component_events, wait_for,
};
use hearth_e2e::{assert_each_sample_once, requeued_batches, text, wait_success};
use hearth_protocol::digest;

const BUILTIN: &[u8] = hearth_runtime::BUILTIN_COMPONENT;

fn summary_accuracy(out: &std::path::Path) -> f64 {
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
            .expect("summary is JSON");
    s["final_test_accuracy"].as_f64().unwrap_or(0.0)
}

fn epoch_accuracies(out: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|m| m["test_accuracy"].as_f64().unwrap_or(0.0))
        .collect()
}

#[test]
fn v2_pushed_mid_run_reaches_three_hosts_at_round_boundaries_and_a_restart_comes_back_on_it() {
    let household = TestHousehold::new();
    let files = tempfile::tempdir().unwrap();
    let v2 = household.signed(files.path(), "v2.wasm", hearth_test_components::V2, "2");
    let (v2_digest, builtin) = (digest(hearth_test_components::V2), digest(BUILTIN));
    let out = tempfile::tempdir().unwrap();
    let (mut coordinator, url) = household.serve(
        &[
            "--local-workers",
            "3",
            "--epochs",
            "4",
            "--train-limit",
            "12000",
            "--test-limit",
            "2000",
            "--local-steps",
            "1",
            // The recipe whose first epoch is steady at one local step on
            // 12,000 samples (momentum on the devices varies from 55 to 94 %
            // there, see the README): this test is about swaps.
            "--momentum-on",
            "server",
            "--lr-scaling",
            "none",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    );
    // Mid-run: one epoch done on the built-in component.
    wait_for(120, "the first epoch", || progress(&url).1 >= 1);
    let pushed = household.push(&url, &v2);
    assert!(pushed.status.success(), "push failed: {}", text(&pushed));
    assert!(wait_success(&mut coordinator, 240), "coordinator failed");

    assert_each_sample_once(out.path(), 12_000, 4);
    assert_eq!(
        requeued_batches(out.path()),
        0,
        "no round was lost: no host restarted or dropped its connection"
    );
    // Each host: built-in rounds, then v2 rounds, never back.
    let mut by_worker: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for (worker, round, component) in ledger_components(out.path()) {
        by_worker
            .entry(worker)
            .or_default()
            .push((round, component));
    }
    assert_eq!(by_worker.len(), 3, "{:?}", by_worker.keys());
    let mut swaps = Vec::new();
    for (worker, mut rounds) in by_worker {
        rounds.sort();
        let first_v2 = rounds
            .iter()
            .position(|(_, c)| *c == v2_digest)
            .unwrap_or_else(|| panic!("{worker} never ran v2"));
        assert!(first_v2 > 0, "{worker} ran v2 from its first round");
        assert!(
            rounds[..first_v2].iter().all(|(_, c)| *c == builtin),
            "{worker}: before its swap, only the built-in component"
        );
        assert!(
            rounds[first_v2..].iter().all(|(_, c)| *c == v2_digest),
            "{worker}: after its swap, only v2"
        );
        swaps.push((rounds[first_v2].0, worker.clone()));
        let events: Vec<String> = household
            .audit(&worker)
            .into_iter()
            .filter(|(_, d, _)| *d == v2_digest)
            .map(|(e, _, _)| e)
            .collect();
        assert_eq!(
            events,
            ["offered", "ready", "swapped", "committed"],
            "{worker}"
        );
    }
    swaps.sort();
    assert!(
        swaps[1].0 >= swaps[0].0 + hearth_session::WATCH_ROUNDS as u64,
        "the others swap after the canary's watched rounds: {swaps:?}"
    );
    // Accuracy goes on from where it was: no reset at the swap.
    let accuracies = epoch_accuracies(out.path());
    assert!(accuracies[0] > 0.85, "{accuracies:?}");
    for pair in accuracies.windows(2) {
        assert!(
            pair[1] > pair[0] - 0.03,
            "accuracy fell across the swap: {accuracies:?}"
        );
    }
    assert!(summary_accuracy(out.path()) > 0.95);

    // The hosts restart (a new run): they come back on v2 from their
    // compiled cache, and the coordinator admits it (kept since the push).
    let again = tempfile::tempdir().unwrap();
    let (mut coordinator, _) = household.serve(
        &[
            "--local-workers",
            "3",
            "--epochs",
            "1",
            "--train-limit",
            "3000",
            "--test-limit",
            "500",
            "--out",
            again.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(wait_success(&mut coordinator, 240), "second run failed");
    assert!(
        ledger_components(again.path())
            .iter()
            .all(|(_, _, c)| *c == v2_digest),
        "after a restart every host runs v2"
    );
    let metrics = std::fs::read_to_string(again.path().join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"components\":[\"hearth-trainer 2\"]"),
        "the coordinator went on with the household's current component: {metrics}"
    );
    for n in 1..=3 {
        let last = household
            .audit(&format!("local-{n}"))
            .pop()
            .unwrap_or_default();
        assert_eq!(last.0, "started", "local-{n}: {last:?}");
        assert!(last.2.contains("compiled cache"), "local-{n}: {last:?}");
    }
}

#[test]
fn tampered_unsigned_foreign_and_other_world_components_are_refused_while_training_goes_on() {
    let household = TestHousehold::new();
    let files = tempfile::tempdir().unwrap();
    let v2 = household.signed(files.path(), "v2.wasm", hearth_test_components::V2, "2");

    let tampered = files.path().join("tampered.wasm");
    let mut bytes = hearth_test_components::V2.to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&tampered, &bytes).unwrap();
    std::fs::copy(
        hearth_runtime::signature_path(&v2),
        hearth_runtime::signature_path(&tampered),
    )
    .unwrap();

    let unsigned = files.path().join("unsigned.wasm");
    std::fs::write(&unsigned, hearth_test_components::V2).unwrap();
    std::fs::write(hearth_runtime::signature_path(&unsigned), "").unwrap();

    let stranger = TestHousehold::new();
    let foreign = stranger.signed(
        files.path(),
        "foreign.wasm",
        hearth_test_components::V2,
        "2",
    );

    // `sign` will not sign a component of another world; sign it by hand,
    // once saying so and once claiming to be a trainer.
    let key = household.signing_key();
    let other = files.path().join("other.wasm");
    let lying = files.path().join("lying.wasm");
    for (path, package, world) in [
        (&other, "hearth:other@0.1.0", "other-component"),
        (
            &lying,
            hearth_runtime::WIT_PACKAGE,
            hearth_runtime::WIT_WORLD,
        ),
    ] {
        std::fs::write(path, hearth_test_components::OTHER_WORLD).unwrap();
        let signed = key.sign(
            hearth_test_components::OTHER_WORLD,
            hearth_signing::Manifest {
                name: "other".into(),
                version: "1".into(),
                package: package.into(),
                world: world.into(),
                sha256: String::new(),
            },
        );
        std::fs::write(
            hearth_runtime::signature_path(path),
            serde_json::to_string(&signed).unwrap(),
        )
        .unwrap();
    }

    let out = tempfile::tempdir().unwrap();
    let (mut coordinator, url) = household.serve(
        &[
            "--local-workers",
            "2",
            "--epochs",
            "3",
            "--train-limit",
            "6000",
            "--test-limit",
            "1000",
            "--local-steps",
            "1",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    );
    wait_for(120, "training to start", || progress(&url).0 >= 3);
    for (file, reason) in [
        (&tampered, "tampered"),
        (&unsigned, "unsigned"),
        (&foreign, "does not trust"),
        (&other, "implements hearth:other@0.1.0/other-component"),
        (&lying, "does not work as a training component"),
    ] {
        let pushed = household.push(&url, file);
        assert!(!pushed.status.success(), "{} was accepted", file.display());
        let said = text(&pushed);
        assert!(said.contains("422"), "{said}");
        assert!(said.contains(reason), "expected {reason:?}: {said}");
    }
    assert!(wait_success(&mut coordinator, 240), "coordinator failed");
    assert_each_sample_once(out.path(), 6_000, 3);
    let builtin = digest(BUILTIN);
    assert!(
        ledger_components(out.path())
            .iter()
            .all(|(_, _, c)| *c == builtin),
        "nothing but the built-in component trained"
    );
    assert!(
        household.audit("local-1").is_empty(),
        "no device was offered anything"
    );
}

#[test]
fn hostile_components_are_stopped_on_the_canary_the_rollout_halts_and_none_is_retried() {
    let household = TestHousehold::new();
    let files = tempfile::tempdir().unwrap();
    let hostile = [
        ("nan", hearth_test_components::NAN),
        ("loop", hearth_test_components::LOOP),
        ("memory", hearth_test_components::MEMORY),
    ];
    let out = tempfile::tempdir().unwrap();
    let (_coordinator, url) = household.serve(
        &[
            "--local-workers",
            "2",
            // Long enough for all three; the test stops it when done.
            "--epochs",
            "60",
            "--train-limit",
            "6000",
            "--test-limit",
            "500",
            "--local-steps",
            "1",
            // One local step on 6,000 samples is erratic with momentum on
            // the devices (README: a known weakness; one CI run in five
            // diverged here); MXNet's way is steady, and this test is about
            // the components, not the recipe.
            "--momentum-on",
            "server",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[
            // A looping call ends the canary's process after 3 s, not 30.
            ("HEARTH_TRIAL_CALL_TIMEOUT", "3"),
            ("HEARTH_MEMORY_MIB", "128"),
        ],
    );
    wait_for(120, "training to start", || progress(&url).0 >= 3);
    let mut digests = Vec::new();
    for (name, bytes) in hostile {
        let file = household.signed(files.path(), &format!("{name}.wasm"), bytes, name);
        let d = digest(bytes);
        let pushed = household.push(&url, &file);
        assert!(pushed.status.success(), "{name}: {}", text(&pushed));
        wait_for(120, &format!("the {name} rollout to halt"), || {
            component_events(&url)
                .iter()
                .any(|(e, dd, _)| e == "rollout halted" && *dd == d)
        });
        let offered: Vec<String> = component_events(&url)
            .into_iter()
            .filter(|(e, dd, _)| e == "offered" && *dd == d)
            .map(|(_, _, w)| w)
            .collect();
        assert_eq!(offered, ["local-1"], "{name}: the canary only");
        // Not retried: pushed again, it is refused at once.
        let again = household.push(&url, &file);
        assert!(!again.status.success(), "{name} was accepted twice");
        assert!(
            text(&again).contains("failed on a device before"),
            "{}",
            text(&again)
        );
        digests.push((name, d));
    }
    // Training goes on after all three.
    let (round, _) = progress(&url);
    wait_for(120, "training to go on", || progress(&url).0 >= round + 10);
    let standing: serde_json::Value = serde_json::from_slice(
        &std::fs::read(household.device("local-1").join("standing.json")).unwrap(),
    )
    .unwrap();
    let audit = household.audit("local-1");
    for (name, d) in &digests {
        assert!(
            standing["failed"][d].is_string(),
            "{name} is recorded as failed: {standing}"
        );
        let expected = if *name == "nan" {
            "refused"
        } else {
            "rolled-back"
        };
        assert!(
            audit.iter().any(|(e, dd, _)| e == expected && dd == d),
            "{name}: {audit:?}"
        );
    }
    assert!(
        household.audit("local-2").is_empty(),
        "the other device was never offered them"
    );
    // The loop and the memory bomb behave for one call per instance: the
    // canary's first round on them is honest and counts; nothing after it.
    let ledger = ledger_components(out.path());
    for (name, d) in &digests {
        let credited = ledger.iter().filter(|(_, _, c)| c == d).count();
        let most = if *name == "nan" { 0 } else { 1 };
        assert!(credited <= most, "{name}: {credited} results credited");
    }
    let accuracies = epoch_accuracies(out.path());
    let last = accuracies.last().copied().unwrap_or(0.0);
    assert!(last > 0.8, "the model kept learning: {accuracies:?}");
}

/// Push to four local hosts, three times: the time from `component push` to
/// every host on v2, and its steps. Run it with `cargo test --release -p
/// hearth-e2e --test hot_reload -- --ignored --nocapture experiment`.
#[test]
#[ignore = "an experiment that prints figures"]
fn experiment_push_to_four_hosts() {
    for run in 1..=3 {
        let household = TestHousehold::new();
        let files = tempfile::tempdir().unwrap();
        let v2 = household.signed(files.path(), "v2.wasm", hearth_test_components::V2, "2");
        let d = digest(hearth_test_components::V2);
        let out = tempfile::tempdir().unwrap();
        let (_coordinator, url) = household.serve(
            &[
                "--local-workers",
                "4",
                "--epochs",
                "30",
                "--train-limit",
                "12000",
                "--test-limit",
                "500",
                "--out",
                out.path().to_str().unwrap(),
            ],
            &[],
        );
        wait_for(120, "training to start", || progress(&url).0 >= 20);
        let start = std::time::Instant::now();
        let pushed = household.push(&url, &v2);
        assert!(pushed.status.success(), "{}", text(&pushed));
        let push_s = start.elapsed().as_secs_f64();
        wait_for(120, "every host on v2", || {
            component_events(&url)
                .iter()
                .any(|(e, dd, _)| e == "every device runs it" && *dd == d)
        });
        let wall = start.elapsed().as_secs_f64();
        let events = timed_component_events(&url);
        let at = |event: &str| {
            events
                .iter()
                .find(|(e, dd, _, _)| e == event && *dd == d)
                .map_or(f64::NAN, |e| e.3)
        };
        let arrived = at("arrived");
        println!(
            "run {run}: push to all 4 hosts on v2 {wall:.2} s (the push command, with the \
             coordinator's own check, {push_s:.2} s); after arrival: canary ready {:.2} s, \
             canary swapped {:.2} s, canary proved {:.2} s, all swapped {:.2} s",
            at("ready") - arrived,
            at("swapped") - arrived,
            at("canary passed, rolling out to every device") - arrived,
            at("every device runs it") - arrived,
        );
    }
}

#[test]
fn a_push_to_a_tls_coordinator_trusts_only_the_household_certificate() {
    let household = TestHousehold::new();
    let files = tempfile::tempdir().unwrap();
    let v2 = household.signed(files.path(), "v2.wasm", hearth_test_components::V2, "2");
    let out = tempfile::tempdir().unwrap();
    let (mut coordinator, url) = household.serve(
        &[
            "--tls",
            "--local-workers",
            "1",
            "--epochs",
            "3",
            "--train-limit",
            "6000",
            "--test-limit",
            "500",
            "--local-steps",
            "1",
            "--out",
            out.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(url.starts_with("wss://"), "{url}");
    // Plain HTTP to the TLS port gets no answer it can use.
    let plain = household.push(&url.replacen("wss://", "ws://", 1), &v2);
    assert!(!plain.status.success(), "a plain push went through");
    let pushed = household.push(&url, &v2);
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert!(wait_success(&mut coordinator, 240), "coordinator failed");
    let d = digest(hearth_test_components::V2);
    assert!(
        ledger_components(out.path())
            .iter()
            .any(|(w, _, c)| w == "local-1" && *c == d),
        "the host trained on the component pushed over TLS"
    );
}
