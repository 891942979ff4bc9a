//! Components rolled out canary-first, swapped at round boundaries, and
//! rolled back (the real worker session around the fake trainer).

use hearth_protocol as proto;

use super::*;
use crate::engine::{CANARY_ROUNDS, ComponentEvent, ComponentInfo, Stage};

const SAMPLES: usize = 400;

fn start() -> ComponentInfo {
    ComponentInfo {
        digest: "c".repeat(64),
        name: "trainer".into(),
        version: "1".into(),
    }
}

/// Three workers on the start component, a few rounds in.
fn running() -> (Harness, Vec<WorkerSession<FakeTrainer>>) {
    running_as(&["a", "b", "c"])
}

/// Workers `names` on the start component, a few rounds in.
fn running_as(names: &[&str]) -> (Harness, Vec<WorkerSession<FakeTrainer>>) {
    let o = TrainingOptions {
        local_steps: 1,
        min_workers: 3,
        ..options()
    };
    let strategy = Box::new(FedAvgM::new(o.local_steps, o.momentum));
    let engine =
        Engine::new(o, data(SAMPLES), strategy, vec![0.25; PARAMS]).with_component(start());
    let mut h = Harness::around(engine);
    let mut ws = workers(&mut h, names);
    run_until(&mut h, &mut ws, |h| h.engine.view().round >= 3);
    (h, ws)
}

/// The rollout stopped.
fn halted(h: &Harness) -> bool {
    h.engine
        .view()
        .rollout
        .as_ref()
        .is_some_and(|r| matches!(r.stage, Stage::Halted(_)))
}

fn push(h: &mut Harness, bytes: &[u8], version: &str) -> String {
    let digest = proto::digest(bytes);
    h.catalog.insert(digest.clone(), bytes.to_vec());
    let info = ComponentInfo {
        digest: digest.clone(),
        name: "trainer".into(),
        version: version.into(),
    };
    h.feed(Input::Component { info });
    digest
}

/// (worker, event) of every component notice about `digest`.
fn events(h: &Harness, digest: &str) -> Vec<(Option<String>, ComponentEvent)> {
    h.notices
        .iter()
        .filter_map(|n| match n {
            Notice::Component {
                worker,
                digest: d,
                event,
                ..
            } if d == digest => Some((worker.clone(), *event)),
            _ => None,
        })
        .collect()
}

/// The workers offered `digest`, in order.
fn offered(h: &Harness, digest: &str) -> Vec<String> {
    events(h, digest)
        .into_iter()
        .filter(|(_, e)| *e == ComponentEvent::Offered)
        .map(|(w, _)| w.unwrap_or_default())
        .collect()
}

/// The first round `worker` trained on `digest`, from the ledger.
fn first_round_on(h: &Harness, worker: &str, digest: &str) -> Option<u64> {
    h.notices
        .iter()
        .filter_map(|n| match n {
            Notice::Completed(entries) => Some(entries),
            _ => None,
        })
        .flatten()
        .filter(|e| e.worker == worker && e.component == digest)
        .map(|e| e.round)
        .min()
}

#[test]
fn a_pushed_component_reaches_one_canary_then_everyone_at_round_boundaries() {
    let (mut h, mut ws) = running();
    let v2 = push(&mut h, b"v2 trainer", "2");
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, SAMPLES as u32, 2);

    let offered = offered(&h, &v2);
    assert_eq!(offered, ["a", "b", "c"], "the canary first, once each");
    let canary = first_round_on(&h, "a", &v2).expect("the canary swapped");
    for w in ["b", "c"] {
        let swapped = first_round_on(&h, w, &v2).expect("everyone swapped");
        assert!(
            swapped >= canary + CANARY_ROUNDS,
            "{w} swapped in round {swapped}, before the canary's {CANARY_ROUNDS} rounds from {canary}"
        );
    }
    // Nothing before the swap ran on v2, nothing after it on the old one.
    for e in h
        .notices
        .iter()
        .filter_map(|n| match n {
            Notice::Completed(es) => Some(es),
            _ => None,
        })
        .flatten()
    {
        let swap = first_round_on(&h, &e.worker, &v2).unwrap_or(u64::MAX);
        let expected = if e.round >= swap {
            &v2
        } else {
            &start().digest
        };
        assert_eq!(&e.component, expected, "{} round {}", e.worker, e.round);
    }
    assert_eq!(
        h.used,
        std::slice::from_ref(&v2),
        "the evaluator swaps once, after the canary"
    );
    let state = h.engine.view();
    assert_eq!(state.component.digest, v2);
    assert_eq!(
        state.rollout.as_ref().map(|r| r.stage.clone()),
        Some(Stage::Done)
    );
    assert!(state.workers.values().all(|w| w.component == v2));
    let history = &state.history;
    assert_eq!(history[0].components, ["trainer 1", "trainer 2"]);
    assert_eq!(history[1].components, ["trainer 2"]);
    for w in &ws {
        assert_eq!(w.running(), v2);
        assert_eq!(w.trainer().committed, std::slice::from_ref(&v2));
    }
    assert!(h.banned.is_empty());
}

#[test]
fn a_component_that_fails_on_the_canary_is_rolled_back_halted_and_never_offered_again() {
    let (mut h, mut ws) = running();
    let bad = push(&mut h, b"nan trainer", "3");
    run_until(&mut h, &mut ws, halted);
    assert_eq!(ws[0].trainer().rolled_back, std::slice::from_ref(&bad));
    assert_eq!(
        ws[0].running(),
        "",
        "the canary is back on what it started on"
    );
    assert_eq!(h.banned, std::slice::from_ref(&bad));
    let requeued = h.requeues().into_iter().any(|(w, _, why)| {
        w == "a" && matches!(why, Requeue::Failed(r) if r.contains("rolled back"))
    });
    assert!(requeued, "the failed round's batches go back");
    // Pushed again, it is not rolled out again.
    push(&mut h, b"nan trainer", "3");
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, SAMPLES as u32, 2);
    let evs = events(&h, &bad);
    assert_eq!(
        evs.iter()
            .filter(|(_, e)| *e == ComponentEvent::Offered)
            .count(),
        1,
        "offered to the canary only: {evs:?}"
    );
    assert!(evs.contains(&(None, ComponentEvent::Ignored)));
    assert!(h.used.is_empty(), "the evaluator never ran it");
    let state = h.engine.view();
    assert_eq!(state.component.digest, start().digest);
    assert!(
        state
            .workers
            .values()
            .all(|w| w.component == start().digest)
    );
    assert!(state.failed_components.contains_key(&bad));
    assert!(
        h.engine.global().iter().all(|p| p.is_finite()),
        "no NaN reached the model"
    );
}

#[test]
fn a_canary_that_refuses_halts_the_rollout_and_a_stray_status_is_refused() {
    let (mut h, mut ws) = running();
    let refused = push(&mut h, b"refuse this", "4");
    run_until(&mut h, &mut ws, halted);
    assert_eq!(h.banned, std::slice::from_ref(&refused));
    assert!(h.used.is_empty());
    // A status for a component nobody offered it.
    let stray = Message::ComponentStatus(proto::ComponentStatus {
        digest: "e".repeat(64),
        state: proto::ComponentState::Ready,
        round: None,
        reason: String::new(),
    });
    h.frame(2, &stray);
    assert!(h.refusals().iter().any(|r| r.contains("not offered")));
    // A rollback of a component it never had cannot halt anything.
    let refusals = h.refusals().len();
    let lie = Message::ComponentStatus(proto::ComponentStatus {
        digest: "e".repeat(64),
        state: proto::ComponentState::RolledBack,
        round: None,
        reason: "NaN".into(),
    });
    h.frame(3, &lie);
    assert_eq!(h.refusals().len(), refusals + 1);
    assert_eq!(h.banned.len(), 1, "only the refused component is banned");
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, SAMPLES as u32, 2);
}

#[test]
fn a_canary_that_cannot_take_components_hands_the_rollout_to_another_device() {
    let (mut h, mut ws) = running_as(&["a-no-trust", "b", "c"]);
    let v2 = push(&mut h, b"v2 trainer", "2");
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, SAMPLES as u32, 2);
    let evs = events(&h, &v2);
    assert!(evs.contains(&(Some("a-no-trust".into()), ComponentEvent::Unable)));
    assert!(h.banned.is_empty(), "nothing is held against the component");
    assert!(first_round_on(&h, "a-no-trust", &v2).is_none());
    let canary = first_round_on(&h, "b", &v2).expect("b tried it next");
    let other = first_round_on(&h, "c", &v2).expect("then everyone");
    assert!(other >= canary + CANARY_ROUNDS);
    assert_eq!(h.used, std::slice::from_ref(&v2));
}

#[test]
fn a_device_that_joins_after_the_rollout_is_offered_the_component_too() {
    let (mut h, mut ws) = running();
    let v2 = push(&mut h, b"v2 trainer", "2");
    run_until(&mut h, &mut ws, |h| {
        h.engine
            .view()
            .rollout
            .as_ref()
            .is_some_and(|r| r.stage == Stage::Done)
    });
    let mut late = session("d");
    hello(&mut late);
    h.join(4, "d");
    ws.push(late);
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, SAMPLES as u32, 2);
    assert!(
        first_round_on(&h, "d", &v2).is_some(),
        "the newcomer runs v2"
    );
    assert_eq!(ws[3].running(), v2);
}

#[test]
fn tabs_are_offered_after_a_host_canary_and_one_that_cannot_take_it_holds_nothing_up() {
    // "a-tab" sorts first, but a host is the canary.
    let (mut h, mut ws) = running_as(&["a-tab", "b", "c-tab-no-trust"]);
    let v2 = push(&mut h, b"v2 trainer", "2");
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, SAMPLES as u32, 2);
    let offered = offered(&h, &v2);
    assert_eq!(offered[0], "b", "the host first: {offered:?}");
    let canary = first_round_on(&h, "b", &v2).expect("the canary swapped");
    let tab = first_round_on(&h, "a-tab", &v2).expect("the tab swapped");
    assert!(tab >= canary + CANARY_ROUNDS);
    assert!(first_round_on(&h, "c-tab-no-trust", &v2).is_none());
    assert_eq!(ws[0].running(), v2);
    assert!(
        events(&h, &v2).contains(&(None, ComponentEvent::Done)),
        "a device that cannot take components does not keep the rollout open"
    );
}
