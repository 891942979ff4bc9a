//! Bad, stale, duplicate and failed results.

use std::time::Duration;

use hearth_protocol::{self as proto, Message, UpdateKind};

use super::*;

#[test]
fn bad_results_are_refused_named_and_never_aggregated() {
    type Spoil = fn(&mut proto::RoundResult);
    let cases: [(Spoil, &str); 5] = [
        (|r| r.values.truncate(PARAMS - 1), "4 values"),
        (|r| r.values[2] = f32::NAN, "non-finite"),
        (|r| r.kind = UpdateKind::Params, "deltas"),
        (|r| r.samples += 1, "samples"),
        (|r| r.params_version += 1, "version"),
    ];
    // What the round gives when mallory's batches simply go back.
    let reference = {
        let mut h = Harness::new(options(), 50);
        let mut ws = workers(&mut h, &["a", "mallory"]);
        h.feed(Input::Left { conn: 2 });
        h.exchange(1, &mut ws[0]);
        h.engine.global().to_vec()
    };
    for (spoil, needle) in cases {
        let mut h = Harness::new(options(), 50);
        let mut ws = workers(&mut h, &["a", "mallory"]);
        let a = assignment(&mut h, 2);
        let mut r = result(&a, vec![1e-3; PARAMS]);
        spoil(&mut r);
        h.frame(2, &Message::Result(r));
        let replies = h.take(2);
        assert!(
            replies
                .iter()
                .any(|m| matches!(m, Message::Error(e) if e.reason.contains(needle) && e.round == Some(a.round))),
            "{needle}: {replies:?}"
        );
        assert!(
            h.refusals().iter().any(|r| r.contains(needle)),
            "{needle}: logged"
        );
        assert_eq!(
            h.requeues(),
            vec![("mallory".into(), 2, Requeue::Rejected)],
            "{needle}"
        );
        h.exchange(1, &mut ws[0]);
        assert_eq!(
            h.engine.global(),
            &reference[..],
            "{needle}: only a's result counts"
        );
        run_to_end(&mut h, &mut ws);
        every_sample_once(&h, 50, 2);
    }
}

#[test]
fn results_for_another_round_or_twice_are_refused() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    let a = assignment(&mut h, 2);
    let mut other = result(&a, vec![0.0; PARAMS]);
    other.round += 1000;
    h.frame(2, &Message::Result(other));
    assert!(h.refusals().iter().any(|r| r.contains("round 1001")));
    assert!(h.requeues().is_empty(), "its own round is still open");
    let good = Message::Result(result(&a, vec![1e-3; PARAMS]));
    h.frame(2, &good);
    h.frame(2, &good);
    assert!(
        h.refusals().iter().any(|r| r.contains("not given")),
        "the duplicate"
    );
    let credited_b = h
        .notices
        .iter()
        .filter(|n| matches!(n, Notice::Completed(e) if e.iter().all(|e| e.worker == "b")))
        .count();
    assert_eq!(credited_b, 1, "credited once");
    let mut ws = vec![ws.remove(0)];
    h.feed(Input::Left { conn: 2 });
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
}

#[test]
fn a_failed_round_reported_by_the_worker_goes_back_at_once() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    let a = assignment(&mut h, 2);
    h.frame(
        2,
        &Message::Error(proto::ErrorReport {
            round: Some(a.round),
            reason: "trap".into(),
        }),
    );
    assert_eq!(
        h.requeues(),
        vec![("b".into(), 2, Requeue::Failed("trap".into()))]
    );
    h.exchange(1, &mut ws[0]);
    let mut ws = vec![ws.remove(0)];
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
}

#[test]
fn the_run_waits_for_min_workers_and_gives_up_after_the_join_timeout() {
    let mut o = options();
    o.min_workers = 2;
    o.join_timeout = Some(30);
    let mut h = Harness::new(o, 50);
    h.join(1, "a");
    assert!(
        h.take(1).iter().all(|m| !matches!(m, Message::Assign(_))),
        "waits for 2"
    );
    assert!(
        h.notices
            .iter()
            .any(|n| matches!(n, Notice::Waiting { needed: 2, .. }))
    );
    assert_eq!(h.engine.next_deadline(), Some(Duration::from_secs(30)));
    h.now = Duration::from_secs(31);
    h.feed(Input::Tick);
    assert!(
        h.failed.as_deref().unwrap_or("").contains("only 1 of 2"),
        "{:?}",
        h.failed
    );
}

#[test]
fn a_device_sending_huge_or_empty_updates_goes_on_probation_and_the_run_finishes() {
    for bad in [1e30f32, 0.0] {
        let mut h = Harness::new(options(), 50);
        let mut ws = workers(&mut h, &["a", "mallory"]);
        let mut given = Vec::new();
        for _ in 0..10_000 {
            if h.finished {
                break;
            }
            h.now += Duration::from_millis(10);
            h.exchange(1, &mut ws[0]);
            for m in h.take(2) {
                if let Message::Assign(a) = m {
                    given.push(a.steps.len());
                    h.frame(2, &Message::Result(result(&a, vec![bad; PARAMS])));
                }
            }
        }
        assert!(h.finished, "the run finishes");
        every_sample_once(&h, 50, 2);
        let reasons = h.refusals();
        let needle = if bad == 0.0 { "nothing" } else { "bound" };
        assert!(reasons.iter().all(|r| r.contains(needle)), "{reasons:?}");
        assert!(
            h.notices
                .iter()
                .any(|n| matches!(n, Notice::Suspect { worker, .. } if worker == "mallory"))
        );
        assert!(
            given.iter().skip(3).all(|&n| n == 1),
            "on probation after 3 strikes: one batch a round ({given:?})"
        );
        let report = h.engine.state().reports();
        let m = report.iter().find(|r| r.name == "mallory").unwrap();
        assert_eq!(m.images, 0, "nothing of mallory's was credited");
        assert!(m.suspect.is_some(), "reported");
        assert!(
            h.engine.global().iter().all(|x| x.abs() < 100.0),
            "the model is intact"
        );
    }
}

#[test]
fn out_of_range_statistics_are_refused() {
    let mut h = Harness::new(options(), 50);
    let _ws = workers(&mut h, &["a", "b"]);
    let a = assignment(&mut h, 2);
    let mut r = result(&a, vec![1e-3; PARAMS]);
    r.loss_sum = 1e300;
    h.frame(2, &Message::Result(r));
    assert!(h.refusals().iter().any(|r| r.contains("loss sum")));
    assert_eq!(h.requeues(), vec![("b".into(), 2, Requeue::Rejected)]);
}

#[test]
fn only_a_result_brings_a_silent_worker_back() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "silent"]);
    h.exchange(1, &mut ws[0]);
    h.take(2);
    h.now = h.engine.next_deadline().unwrap();
    h.feed(Input::Tick);
    let alive = Message::Error(proto::ErrorReport {
        round: None,
        reason: "still here".into(),
    });
    for _ in 0..5 {
        h.frame(2, &alive);
        h.exchange(1, &mut ws[0]);
    }
    assert!(
        h.take(2).iter().all(|m| !matches!(m, Message::Assign(_))),
        "messages that are not results do not count as work"
    );
    assert!(!h.notices.iter().any(|n| matches!(n, Notice::Back { .. })));
}
