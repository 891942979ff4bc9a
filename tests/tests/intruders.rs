//! Admitted devices that lie: huge or empty updates, impossible statistics,
//! messages that are not work. Real coordinator, a real honest host, a raw
//! protocol client as the bad device; the run must finish on time with every
//! sample once, the bad device reported and nothing of it in the model.

use hearth_e2e::raw::{connect, dev_key, join_as, next_assignment, send};
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
        let result = proto::RoundResult {
            round: a.round,
            params_version: a.params_version,
            samples: a.labels.len() as u32,
            loss_sum,
            correct,
            kind: a.reply,
            values,
        };
        send(&mut liar, &Message::Result(result));
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
