//! Admitted devices that lie: huge or empty updates, impossible statistics,
//! messages that are not work. Real coordinator, a real honest host, a raw
//! protocol client as the bad device; the run must finish on time with every
//! sample once, the bad device reported and nothing of it in the model.

use hearth_e2e::raw::{connect, dev_key, join_as, next_assignment, result_for, send};
use hearth_e2e::{assert_each_sample_once, serve, wait_success, worker};
use hearth_protocol::{self as proto, Message};

#[test]
fn a_lying_device_is_refused_put_on_probation_and_cannot_hurt_the_model() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let (mut coordinator, url) = serve(&[
        "--min-workers",
        "2",
        "--epochs",
        "1",
        "--train-limit",
        "6000",
        "--test-limit",
        "2000",
        "--local-steps",
        "1",
        "--out",
        dir,
    ]);
    let digest = hearth_runtime::digest(hearth_runtime::BUILTIN_COMPONENT);
    let mut liar = connect(&url);
    let welcome = join_as(&mut liar, "liar", &dev_key("liar"), &digest);
    assert!(matches!(welcome, Some(Message::Welcome(_))));
    let _honest = worker(&url, "honest");
    // Lie in a different way every round until the run ends.
    let mut round = 0u32;
    while let Some(a) = next_assignment(&mut liar) {
        let n = a.params.len();
        let (values, loss_sum, correct) = match round % 4 {
            0 => (vec![1e30; n], 1.0, 0),
            1 => (vec![0.0; n], 1.0, 0),
            2 => (vec![1e-3; n], 1e300, 0),
            _ => (vec![1e-3; n], 1.0, u32::MAX),
        };
        round += 1;
        send(&mut liar, &result_for(&a, values, loss_sum, correct));
    }
    assert!(round >= 4, "the liar was asked {round} times");
    assert!(wait_success(&mut coordinator, 180), "coordinator failed");
    assert_each_sample_once(out.path(), 6_000, 1);
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    let liar = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "liar")
        .expect("the liar in the summary");
    assert_eq!(
        liar["images"], 0,
        "none of its results was credited: {liar}"
    );
    assert!(liar["suspect"].is_string(), "reported: {liar}");
    let metrics = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    let epoch: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let loss = epoch["train_loss"].as_f64().unwrap();
    assert!(
        loss.is_finite() && loss < 3.0,
        "statistics stayed honest: {epoch}"
    );
    let acc = s["final_test_accuracy"].as_f64().unwrap();
    println!("test accuracy with the liar: {acc}");
    assert!(acc > 0.85, "the global model was damaged: {acc}");
}

/// How an adversary answers its assignments.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// Every value 1e30.
    Huge,
    /// Honest-sized values with impossible loss and counts.
    Statistics,
    /// Zero deltas, instantly.
    Zero,
    /// Never answers (stays connected).
    Silent,
    /// Says goodbye right after its first assignment, then comes back.
    Goodbye,
}

/// Plays `lie` against the coordinator at `url` until the run ends.
fn adversary(url: String, lie: Lie, digest: String) {
    loop {
        let mut s = connect(&url);
        let name = format!("{lie:?}").to_lowercase();
        if !matches!(
            join_as(&mut s, &name, &dev_key(&name), &digest),
            Some(Message::Welcome(_))
        ) {
            return;
        }
        while let Some(a) = next_assignment(&mut s) {
            let n = a.params.len();
            let (values, loss_sum, correct) = match lie {
                Lie::Huge => (vec![1e30; n], 1.0, 0),
                Lie::Statistics => (vec![1e-3; n], f64::NAN, u32::MAX),
                Lie::Zero => (vec![0.0; n], 1.0, 0),
                Lie::Silent => continue,
                Lie::Goodbye => {
                    let bye = proto::Goodbye {
                        reason: "cannot build the model".into(),
                    };
                    send(&mut s, &Message::Goodbye(bye));
                    break;
                }
            };
            send(&mut s, &result_for(&a, values, loss_sum, correct));
        }
        if !matches!(lie, Lie::Goodbye) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// One run with two honest hosts and, if given, one adversary; its final
/// test accuracy and wall time.
fn accuracy_with(lie: Option<Lie>, epochs: &str, train: &str) -> (f64, f64) {
    let out = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let (mut coordinator, url) = serve(&[
        "--min-workers",
        "2",
        "--epochs",
        epochs,
        "--train-limit",
        train,
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let digest = hearth_runtime::digest(hearth_runtime::BUILTIN_COMPONENT);
    let bad = lie.map(|l| {
        let (url, digest) = (url.clone(), digest.clone());
        std::thread::spawn(move || adversary(url, l, digest))
    });
    let _a = worker(&url, "honest-1");
    let _b = worker(&url, "honest-2");
    assert!(wait_success(&mut coordinator, 3600), "coordinator failed");
    let n: u64 = train.parse().unwrap();
    assert_each_sample_once(out.path(), n, epochs.parse().unwrap());
    drop(bad);
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    if let Some(l) = lie {
        let name = format!("{l:?}").to_lowercase();
        let w = s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name.as_str());
        eprintln!(
            "{name}: {}",
            w.map_or("not in the summary".into(), |w| w.to_string())
        );
    }
    (
        s["final_test_accuracy"].as_f64().unwrap(),
        start.elapsed().as_secs_f64(),
    )
}

/// The acceptance experiment, full size (run it with `cargo test --release
/// -p hearth-e2e --test intruders -- --ignored --nocapture`;
/// `HEARTH_EXPERIMENT_EPOCHS` and `HEARTH_EXPERIMENT_TRAIN` shrink it).
#[test]
#[ignore = "an experiment: several full training runs"]
fn experiment_each_lie_costs_at_most_0_3_points() {
    let epochs = std::env::var("HEARTH_EXPERIMENT_EPOCHS").unwrap_or_else(|_| "10".into());
    let train = std::env::var("HEARTH_EXPERIMENT_TRAIN").unwrap_or_else(|_| "60000".into());
    let (clean, clean_s) = accuracy_with(None, &epochs, &train);
    println!("clean: {:.2} % in {clean_s:.0} s", 100.0 * clean);
    let mut worst: f64 = 0.0;
    for lie in [
        Lie::Huge,
        Lie::Statistics,
        Lie::Zero,
        Lie::Silent,
        Lie::Goodbye,
    ] {
        let (acc, secs) = accuracy_with(Some(lie), &epochs, &train);
        let drop = 100.0 * (clean - acc);
        worst = worst.max(drop);
        println!(
            "{lie:?}: {:.2} % in {secs:.0} s ({:+.2} pp)",
            100.0 * acc,
            -drop
        );
    }
    assert!(worst <= 0.3, "a lie cost {worst:.2} points");
}
