//! Epochs, assignments, joins, leaves and deadlines.

use std::collections::BTreeSet;
use std::time::Duration;

use hearth_protocol::{self as proto, Message, UpdateKind};

use super::*;

#[test]
fn two_epochs_use_every_sample_once_and_everyone_is_told_goodbye() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
    assert!(h.failed.is_none());
    assert!(
        ws.iter()
            .all(|w| w.phase() == hearth_session::Phase::Finished)
    );
    assert_eq!(h.closed, BTreeSet::from([1, 2]));
    let epochs = epoch_metrics(&h);
    assert_eq!(epochs.len(), 2);
    // 13 batches of 4 (the last has 2), 2 workers × 2 local steps per
    // round; the last batch (a quarter of a round) joins the third.
    assert_eq!(epochs[0].rounds, 3);
    assert_eq!(
        epochs[0].train_accuracy,
        25.0 / 50.0,
        "labels 0-4 count as right"
    );
    // Every epoch counts the frames both ways (more than its 50 labels
    // went down).
    assert!(
        epochs
            .iter()
            .all(|e| e.bytes_sent > 50 && e.bytes_received > 0),
        "{epochs:?}"
    );
    assert_ne!(h.engine.global(), &[0.25; PARAMS], "the model moved");
}

#[test]
fn the_first_synchronous_epochs_train_their_own_local_steps() {
    let mut o = options();
    (o.train_ahead_after, o.early_local_steps) = (1, 1);
    let mut h = Harness::new(o, 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
    let rounds: Vec<u64> = epoch_metrics(&h).iter().map(|m| m.rounds).collect();
    // 13 batches: 2 a round (one each) in the first epoch, the last one
    // joining the sixth; then 4 a round (2 each), as above.
    assert_eq!(rounds, vec![6, 3]);
}

#[test]
fn the_last_steps_of_a_cosine_schedule_move_nothing_and_still_count() {
    // 400 rounds: the last learning rate is about 4e-6 of the peak, and the
    // fake model's f32 parameters stop moving (an honest delta of exactly 0).
    let mut o = options();
    (o.epochs, o.local_steps, o.batch, o.min_workers) = (1, 1, 1, 1);
    let mut h = Harness::new(o, 400);
    let mut ws = workers(&mut h, &["a"]);
    run_to_end(&mut h, &mut ws);
    assert!(h.finished && h.failed.is_none());
    every_sample_once(&h, 400, 1);
    let refused = h
        .notices
        .iter()
        .filter(|n| matches!(n, Notice::Refused { .. }))
        .count();
    assert_eq!(refused, 0, "honest steps too small for f32 are not refused");
}

#[test]
fn assignments_follow_the_ledger_the_schedule_and_the_strategy() {
    let mut h = Harness::new(options(), 50);
    workers(&mut h, &["a", "b"]);
    let assigns: Vec<proto::Assign> = [1, 2]
        .into_iter()
        .flat_map(|c| h.take(c))
        .filter_map(|m| match m {
            Message::Assign(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(assigns.len(), 2, "one each in round 1");
    for a in &assigns {
        assert_eq!(
            (a.round, a.params_version, a.reply),
            (1, 0, UpdateKind::Delta)
        );
        assert_eq!(a.steps, vec![4, 4], "local_steps batches of 4");
        assert_eq!(
            a.learning_rate, 0.5,
            "the cosine schedule starts at the peak"
        );
        assert_eq!(a.params, vec![0.25; PARAMS]);
    }
    let Some(Message::Welcome(w)) = session_welcome(&mut h) else {
        panic!("a welcome first")
    };
    assert_eq!(
        (w.arch.as_str(), w.seed, w.optimizer.momentum),
        ("toy", 7, 0.0)
    );
}

/// The welcome a newly joined connection gets.
fn session_welcome(h: &mut Harness) -> Option<Message> {
    h.join(9, "late");
    h.take(9).into_iter().next()
}

#[test]
fn a_worker_joining_mid_epoch_trains_from_the_next_round() {
    let mut o = options();
    o.min_workers = 1;
    let mut h = Harness::new(o, 50);
    let mut a = workers(&mut h, &["a"]).remove(0);
    // Round 1 goes to a alone.
    let mut b = session("b");
    hello(&mut b);
    h.join(2, "b");
    let first = h.take(2);
    assert!(
        matches!(first.as_slice(), [Message::Welcome(_)]),
        "{first:?}"
    );
    b.handle(&proto::encode(&first[0]));
    h.exchange(1, &mut a);
    // Round 2: both.
    let round2: Vec<u64> = [1, 2]
        .into_iter()
        .flat_map(|c| {
            h.inbox
                .get(&c)
                .into_iter()
                .flatten()
                .filter_map(|f| match proto::decode(f) {
                    Ok(Message::Assign(a)) => Some(a.round),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(round2, vec![2, 2]);
    let mut ws = vec![a, b];
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
}

#[test]
fn a_worker_leaving_mid_round_by_close_or_goodbye_gives_its_batches_back() {
    for goodbye in [false, true] {
        let mut h = Harness::new(options(), 50);
        let mut ws = workers(&mut h, &["a", "b"]);
        // b takes its assignment and leaves without answering.
        h.take(2);
        if goodbye {
            let bye = Message::Goodbye(proto::Goodbye {
                reason: "cannot build".into(),
            });
            h.frame(2, &bye);
            assert!(h.closed.contains(&2), "a goodbye closes the connection");
        } else {
            h.feed(Input::Left { conn: 2 });
        }
        assert_eq!(h.requeues(), vec![("b".into(), 2, Requeue::Left)]);
        h.exchange(1, &mut ws[0]);
        let mut ws = vec![ws.remove(0)];
        run_to_end(&mut h, &mut ws);
        every_sample_once(&h, 50, 2);
    }
}

#[test]
fn a_newcomer_that_never_answers_holds_a_round_for_seconds_once_another_answered() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "silent"]);
    assert_eq!(h.engine.next_deadline(), Some(Duration::from_secs(10)));
    h.now = Duration::from_millis(10);
    h.exchange(1, &mut ws[0]);
    let deadline = h.engine.next_deadline().unwrap();
    // a trained its 8 images in 10 ms (800 img/s): silent's 8 may take
    // 4 times what 80 img/s predicts, plus 5 s, instead of the round timeout.
    assert_eq!(deadline, Duration::from_millis(5_400));
    h.now = deadline;
    h.feed(Input::Tick);
    assert!(matches!(
        &h.requeues()[..],
        [(w, 2, Requeue::MissedDeadline { .. })] if w == "silent"
    ));
}

#[test]
fn a_missed_deadline_requeues_and_the_late_result_is_not_averaged() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "slow"]);
    h.exchange(1, &mut ws[0]);
    let late = h.inbox.remove(&2).unwrap();
    let deadline = h.engine.next_deadline().unwrap();
    assert_eq!(
        deadline,
        Duration::from_secs(10),
        "speed unknown: the round timeout"
    );
    h.now = deadline;
    h.feed(Input::Tick);
    let requeued = h.requeues();
    assert!(
        matches!(&requeued[..], [(w, 2, Requeue::MissedDeadline { .. })] if w == "slow"),
        "{requeued:?}"
    );
    let version = h.engine.state().version;
    // The round closed with a's result; the next rounds go to a alone.
    let next: Vec<Message> = h.take(2);
    assert!(
        next.is_empty(),
        "a silent worker gets nothing new: {next:?}"
    );
    // Its late answer is refused, not averaged, and brings it back.
    for f in late {
        if let Some(reply) = ws[1].handle(&f) {
            h.frame(2, &proto::decode(&reply).unwrap());
        }
    }
    assert_eq!(
        h.engine.state().version,
        version,
        "the late result changed nothing"
    );
    assert!(h.refusals().iter().any(|r| r.contains("not given")));
    assert!(
        h.notices
            .iter()
            .any(|n| matches!(n, Notice::Back { worker } if worker == "slow"))
    );
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
}

#[test]
fn int8_sends_only_changes_from_the_model_each_device_built_and_trains_like_f32() {
    let mut o = options();
    o.encoding = proto::Encoding::Int8;
    let mut h = Harness::new(o, 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    let mut sent = Vec::new();
    run_until(&mut h, &mut ws, |h| {
        h.inbox.get(&1).is_some_and(|frames| !frames.is_empty())
    });
    for _ in 0..3 {
        let frames = h.inbox.get(&1).cloned().unwrap_or_default();
        for f in &frames {
            if let Ok(Message::Assign(a)) = proto::decode(f) {
                if sent.is_empty() {
                    assert!(a.params.iter().all(|&p| p == 0.0), "{:?}", a.params);
                }
                sent.push((a.params_encoding, a.params_base, a.reply_encoding));
            }
        }
        h.now += Duration::from_millis(10);
        for (i, w) in ws.iter_mut().enumerate() {
            h.exchange(i as ConnId + 1, w);
        }
    }
    // The first round: the change from the initial model the welcome
    // named and the device built (nothing), not the whole model.
    assert_eq!(
        sent.first(),
        Some(&(proto::Encoding::Int8, Some(0), proto::Encoding::Int8)),
    );
    assert!(
        sent.iter()
            .all(|s| s.0 == proto::Encoding::Int8 && s.1.is_some()),
        "{sent:?}"
    );
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
    assert!(h.refusals().is_empty(), "{:?}", h.refusals());
    let int8 = h.engine.global().to_vec();

    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    run_to_end(&mut h, &mut ws);
    let f32 = h.engine.global();
    let worst = int8
        .iter()
        .zip(f32)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 0.02, "int8 and f32 runs differ by {worst}");
}

#[test]
fn a_device_that_built_another_initial_model_gets_the_whole_model_after_one_failed_round() {
    let mut o = options();
    o.encoding = proto::Encoding::Int8;
    let mut h = Harness::new(o, 50);
    let mut ws = workers(&mut h, &["a", "b-other"]);
    let welcomes: Vec<Option<String>> = [1, 2]
        .into_iter()
        .flat_map(|c| sent_to(&h, c))
        .filter_map(|m| match m {
            Message::Welcome(w) => Some(w.initial),
            _ => None,
        })
        .collect();
    let digest = proto::params_digest(&[0.25; PARAMS]);
    assert_eq!(welcomes, vec![Some(digest.clone()), Some(digest)]);
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
    let bases: Vec<Option<u64>> = sent_to(&h, 2)
        .into_iter()
        .filter_map(|m| match m {
            Message::Assign(a) => Some(a.params_base),
            _ => None,
        })
        .collect();
    assert_eq!(bases[..2], [Some(0), None], "{bases:?}");
    assert!(bases[2..].iter().all(Option::is_some), "{bases:?}");
    let failed: Vec<_> = h
        .requeues()
        .into_iter()
        .filter(|(w, _, _)| w == "b-other")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    // A device that joins once a round has changed the model is named no
    // initial model.
    let mut o = options();
    o.encoding = proto::Encoding::Int8;
    let mut h = Harness::new(o, 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    run_until(&mut h, &mut ws, |h| rounds_finished(h) >= 1);
    h.join(9, "late");
    let late = h.take(9);
    assert!(
        matches!(late.first(), Some(Message::Welcome(w)) if w.initial.is_none()),
        "{late:?}"
    );
}

#[test]
fn a_worker_that_lost_its_copy_gets_the_whole_model_again() {
    let mut o = options();
    o.encoding = proto::Encoding::Int8;
    let mut h = Harness::new(o, 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    // A round or two, then worker a forgets its copy (a restarted process
    // on the same connection would): its next round fails, then it is
    // sent the whole model and trains on.
    run_until(&mut h, &mut ws, |h| rounds_finished(h) >= 2);
    let mut fresh = session("a");
    hello(&mut fresh);
    // Only its copy is gone: it is welcomed as the engine welcomed a.
    let welcome = h
        .log
        .iter()
        .find_map(|o| match o {
            Output::Send { conn: 1, frame }
                if matches!(proto::decode(frame), Ok(Message::Welcome(_))) =>
            {
                Some(frame.clone())
            }
            _ => None,
        })
        .expect("a's welcome");
    assert!(fresh.handle(&welcome).is_none());
    ws[0] = fresh;
    let before = h.requeues().len();
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 2);
    let failed: Vec<_> = h.requeues()[before..]
        .iter()
        // It holds the initial model it built again, not the copy named.
        .filter(|r| matches!(&r.2, Requeue::Failed(why) if why.contains("holds version 0")))
        .cloned()
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "one failed round, then the whole model: {failed:?}"
    );
}

#[test]
fn rounds_grow_when_devices_wait_and_only_after_the_synchronous_epochs() {
    let mut o = options();
    (o.epochs, o.train_ahead_after, o.max_local_steps) = (3, 1, 8);
    // Never with server momentum (it overshoots on many local steps).
    let mut h = Harness::new(o.clone(), 200);
    let mut ws = workers(&mut h, &["a", "b"]);
    run_to_end(&mut h, &mut ws);
    assert!(!h.notices.iter().any(|n| matches!(n, Notice::Paced { .. })));
    o.momentum_on = crate::strategy::MomentumOn::Workers;
    let mut h = Harness::new(o, 200);
    let mut ws = workers(&mut h, &["a", "b"]);
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 200, 3);
    // The fake devices report no training time: they look idle, so the
    // local steps double once a window of rounds is over (2, 4, then 8).
    let paced: Vec<usize> = h
        .notices
        .iter()
        .filter_map(|n| match n {
            Notice::Paced {
                local_steps,
                more,
                busy,
            } => {
                assert!(*busy < 0.8 && *more);
                Some(*local_steps)
            }
            _ => None,
        })
        .collect();
    assert_eq!(paced.first(), Some(&4), "{paced:?}");
    assert!(paced.iter().all(|&k| k <= 8), "{paced:?}");
    // The first epoch's rounds keep 2 batches of 4 per device.
    let sizes: Vec<usize> = sent_to(&h, 1)
        .iter()
        .filter_map(|m| match m {
            Message::Assign(a) => Some(a.labels.len()),
            _ => None,
        })
        .collect();
    assert!(sizes.iter().take(5).all(|&n| n <= 8), "{sizes:?}");
    assert!(sizes.iter().any(|&n| n > 8), "{sizes:?}");
}

/// The metrics of every epoch `h` was told had finished.
fn epoch_metrics(h: &Harness) -> Vec<EpochMetrics> {
    h.notices
        .iter()
        .filter_map(|n| match n {
            Notice::EpochFinished(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// Epochs whose metrics `h` was told of.
fn finished_epochs(h: &Harness) -> Vec<usize> {
    epoch_metrics(h).iter().map(|m| m.epoch).collect()
}

/// Rounds `h` was told had finished.
fn rounds_finished(h: &Harness) -> usize {
    h.notices
        .iter()
        .filter(|n| matches!(n, Notice::RoundFinished(_)))
        .count()
}

#[test]
fn the_next_epoch_trains_while_the_last_one_is_scored() {
    let mut h = Harness::new(options(), 50);
    h.hold_evaluations = true;
    let mut ws = workers(&mut h, &["a", "b"]);
    // Epoch 2 has rounds done while epoch 1's score is still awaited.
    run_until(&mut h, &mut ws, |h| {
        h.engine.state().epoch == 2
            && h.engine
                .state()
                .current
                .as_ref()
                .is_some_and(|c| c.ledger.pending() + 4 < c.ledger.batches())
    });
    assert_eq!(h.held.len(), 1);
    assert_eq!(h.held[0].0, 1);
    assert!(
        finished_epochs(&h).is_empty(),
        "no metrics before the score"
    );
    let scored = h.held[0].1.clone();
    h.release();
    assert_eq!(finished_epochs(&h), vec![1]);
    let m = &h.engine.state().history[0];
    assert_eq!(m.test_accuracy, score(&scored).correct as f64 / 100.0);
    assert!(m.train_accuracy > 0.0 && m.wall_seconds > 0.0);
    // The last epoch's rounds end; the run waits for its score, saved
    // with the state, and a restored engine asks for it again.
    run_until(&mut h, &mut ws, |h| !h.held.is_empty());
    assert!(!h.finished, "the run ends with its last score");
    let saved = RunState::from_bytes(&h.engine.state().to_bytes().unwrap()).unwrap();
    assert_eq!(saved.evaluations.len(), 1);
    let engine = Engine::restore(saved.resumed(), data(50), Box::new(FedAvgM::new(2, 0.9)));
    let mut twin = Harness::around(engine.unwrap());
    twin.hold_evaluations = true;
    twin.feed(Input::Tick);
    assert_eq!(twin.held, h.held, "asked again, for the same parameters");
    h.release();
    assert!(h.finished);
    assert_eq!(finished_epochs(&h), vec![1, 2]);
    every_sample_once(&h, 50, 2);
}

#[test]
fn the_first_epoch_is_timed_from_its_first_round_not_from_the_wait_for_the_household() {
    let mut h = Harness::new(options(), 50);
    let mut a = session("a");
    hello(&mut a);
    h.join(1, "a");
    // The second device takes 30 s to start (its component compiling).
    h.now += Duration::from_secs(30);
    h.feed(Input::Tick);
    let mut b = session("b");
    hello(&mut b);
    h.join(2, "b");
    let mut ws = vec![a, b];
    run_to_end(&mut h, &mut ws);
    let walls: Vec<f64> = epoch_metrics(&h).iter().map(|m| m.wall_seconds).collect();
    assert_eq!(walls.len(), 2);
    // Each epoch's rounds take well under a second of the harness's clock.
    assert!(walls.iter().all(|&w| w > 0.0 && w < 5.0), "{walls:?}");
}
