//! Images sent ahead, head starts and kept samples.

use std::time::Duration;

use hearth_protocol::{self as proto, Message};

use super::*;

/// A run of two workers on `n` samples to its end, with every sample used
/// once per epoch and nothing refused.
fn two_workers_to_the_end(
    o: TrainingOptions,
    n: usize,
) -> (Harness, Vec<WorkerSession<FakeTrainer>>) {
    let epochs = o.epochs;
    let mut h = Harness::new(o, n);
    let mut ws = workers(&mut h, &["a", "b"]);
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, n as u32, epochs);
    assert!(h.refusals().is_empty(), "{:?}", h.refusals());
    (h, ws)
}

#[test]
fn with_prefetch_images_go_ahead_and_every_sample_is_still_used_once() {
    let mut o = options();
    o.prefetch = true;
    let (h, _) = two_workers_to_the_end(o, 50);
    let sent = sent_to(&h, 1);
    let ahead = sent
        .iter()
        .filter(|m| matches!(m, Message::Prefetch(_)))
        .count();
    let used = sent
        .iter()
        .filter(|m| matches!(m, Message::Assign(a) if a.prefetched && a.pixels.is_empty()))
        .count();
    assert!(ahead >= 2 && used >= 2, "{ahead} prefetches, {used} used");
    // The same model as without prefetch would be too much to ask (rounds
    // are cut differently), but the same samples, each once, are.
}

#[test]
fn a_worker_leaving_with_images_sent_ahead_gives_them_back() {
    let mut o = options();
    o.prefetch = true;
    let mut h = Harness::new(o, 50);
    let mut ws = workers(&mut h, &["a", "b", "c"]);
    run_until(&mut h, &mut ws, |h| {
        h.engine
            .state()
            .workers
            .get(&3)
            .is_some_and(|w| w.prefetched.is_some())
    });
    h.feed(Input::Left { conn: 3 });
    let mut rest: Vec<_> = ws.drain(..2).collect();
    run_to_end(&mut h, &mut rest);
    every_sample_once(&h, 50, 2);
}

#[test]
fn trained_ahead_rounds_are_kept_and_every_sample_is_still_used_once() {
    let mut o = options();
    o.prefetch = true;
    o.train_ahead = true;
    o.momentum_on = crate::strategy::MomentumOn::Workers;
    let (h, ws) = two_workers_to_the_end(o, 50);
    // Every head start is what the round's assignment then says.
    let sent = sent_to(&h, 1);
    let mut starts = BTreeMap::new();
    for m in &sent {
        match m {
            Message::Prefetch(p) => {
                let start = p
                    .head_start
                    .clone()
                    .expect("a head start with each prefetch");
                starts.insert(p.round, start);
            }
            Message::Assign(a) if a.prefetched => {
                let start = &starts[&a.round];
                assert_eq!(
                    (a.learning_rate, &a.steps, a.shift),
                    (start.learning_rate, &start.steps, start.shift)
                );
            }
            _ => {}
        }
    }
    let ahead: u64 = ws.iter().map(|w| w.stats().steps_ahead).sum();
    assert!(ahead >= 2, "{ahead} steps trained ahead");
    // Each says the worker's share of the round before: the two shares of
    // a round in which both trained add up to the whole.
    let mut shares: BTreeMap<u64, Vec<f32>> = BTreeMap::new();
    for conn in [1, 2] {
        for m in sent_to(&h, conn) {
            if let Message::Prefetch(p) = m
                && let Some(start) = p.head_start
            {
                assert!(start.own_share > 0.0 && start.own_share <= 1.0);
                shares.entry(p.round).or_default().push(start.own_share);
            }
        }
    }
    let both: Vec<f32> = shares
        .values()
        .filter(|s| s.len() == 2)
        .map(|s| s.iter().sum())
        .collect();
    assert!(!both.is_empty(), "{shares:?}");
    assert!(
        both.iter().all(|&sum| (sum - 1.0).abs() < 1e-6),
        "{shares:?}"
    );
}

#[test]
fn batches_split_into_smaller_steps_and_head_starts_wait_for_the_second_epoch() {
    let mut o = options();
    o.prefetch = true;
    o.train_ahead = true;
    o.train_ahead_after = 1;
    o.momentum_on = crate::strategy::MomentumOn::Workers;
    o.split_steps = crate::strategy::StepSplit::Sqrt;
    let (h, _) = two_workers_to_the_end(o, 50);
    let sent = sent_to(&h, 1);
    // Prefetches of the first epoch come without a head start, later ones with.
    let starts: Vec<bool> = sent
        .iter()
        .filter_map(|m| match m {
            Message::Prefetch(p) => Some(p.head_start.is_some()),
            _ => None,
        })
        .collect();
    let first = starts.iter().position(|&s| s).expect("head starts later");
    assert!(first > 0, "none in the first epoch: {starts:?}");
    assert!(starts[first..].iter().all(|&s| s), "{starts:?}");
    // Every assignment's steps split its samples, more steps than batches
    // when both devices share the round.
    let mut split = 0;
    let mut samples_ahead = BTreeMap::new();
    for m in &sent {
        match m {
            Message::Prefetch(p) => {
                samples_ahead.insert(p.round, p.labels.len());
            }
            Message::Assign(a) => {
                let samples = if a.prefetched {
                    samples_ahead[&a.round]
                } else {
                    a.labels.len()
                };
                assert_eq!(a.steps.iter().sum::<u32>() as usize, samples);
                assert!(a.steps.iter().all(|&n| n > 0));
                let batches = samples.div_ceil(4);
                assert!(a.steps.len() >= batches, "{:?}", a.steps);
                split += usize::from(a.steps.len() > batches);
            }
            _ => {}
        }
    }
    assert!(split >= 2, "{split} rounds split into smaller steps");
}

/// Images that went to `conn` in full: samples sent, and samples named.
fn images_to(h: &Harness, conn: ConnId) -> (usize, usize) {
    let (mut sent, mut named) = (0, 0);
    for m in sent_to(h, conn) {
        let (labels, cache) = match m {
            Message::Assign(a) => (a.labels.len(), a.cache),
            Message::Prefetch(p) => (p.labels.len(), p.cache),
            // Stocked images are named by the round that takes them.
            Message::Stock(s) => {
                sent += s.labels.len();
                continue;
            }
            _ => continue,
        };
        sent += labels;
        named += cache.map_or(labels, |c| c.ids.len());
    }
    (sent, named)
}

#[test]
fn devices_that_keep_samples_are_sent_each_image_about_once() {
    for ahead in [false, true] {
        let mut o = options();
        (o.epochs, o.prefetch, o.train_ahead) = (3, ahead, ahead);
        o.momentum_on = crate::strategy::MomentumOn::Workers;
        let mut h = Harness::new(o, 50);
        let mut ws = workers(&mut h, &["a-keeps", "b-keeps"]);
        run_to_end(&mut h, &mut ws);
        every_sample_once(&h, 50, 3);
        assert!(h.refusals().is_empty(), "{:?}", h.refusals());
        let (a, b) = (images_to(&h, 1), images_to(&h, 2));
        assert_eq!(a.1 + b.1, 150, "3 epochs of 50 samples named");
        // The first epoch sends all 50; later ones only what a device
        // takes from the other's share.
        assert!(a.0 + b.0 < 75, "sent {} and {}", a.0, b.0);
    }
    // A device that keeps nothing is sent every image, every epoch.
    let mut o = options();
    o.epochs = 3;
    let mut h = Harness::new(o, 50);
    let mut ws = workers(&mut h, &["a-keeps", "b"]);
    run_to_end(&mut h, &mut ws);
    let (sent, named) = images_to(&h, 2);
    assert_eq!(sent, named);
}

#[test]
fn devices_that_keep_samples_are_stocked_a_round_ahead_and_sent_each_image_once() {
    let mut o = options();
    (o.epochs, o.prefetch) = (2, true);
    let mut h = Harness::new(o, 400);
    let mut ws = workers(&mut h, &["a-keeps", "b-keeps"]);
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 400, 2);
    assert!(h.refusals().is_empty(), "{:?}", h.refusals());
    // The workers kept what the coordinator counted on: no round failed.
    assert!(h.requeues().is_empty(), "{:?}", h.requeues());
    for conn in [1, 2] {
        let sent = sent_to(&h, conn);
        let stocked: Vec<u32> = sent
            .iter()
            .filter_map(|m| match m {
                Message::Stock(s) => Some(s.cache.ids.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(!stocked.is_empty(), "worker {conn} was stocked");
        // Each stocked sample is then named as held by a round.
        let held: std::collections::HashSet<u32> = sent
            .iter()
            .filter_map(|m| match m {
                Message::Assign(proto::Assign { cache: Some(c), .. })
                | Message::Prefetch(proto::Prefetch { cache: Some(c), .. }) => Some(
                    c.ids
                        .iter()
                        .zip(&c.held)
                        .filter(|(_, h)| **h)
                        .map(|(&i, _)| i)
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        let unused = stocked.iter().filter(|i| !held.contains(i)).count();
        assert_eq!(unused, 0, "worker {conn}: stocked samples never named");
    }
    // Every image crossed once: in the first epoch.
    let (a, b) = (images_to(&h, 1), images_to(&h, 2));
    assert_eq!(a.1 + b.1, 800, "2 epochs of 400 samples named");
    assert!(a.0 + b.0 <= 400 + 64, "sent {} and {}", a.0, b.0);
}

#[test]
fn a_worker_leaving_with_a_stock_leaves_its_batches_to_the_others() {
    let mut o = options();
    o.prefetch = true;
    let mut h = Harness::new(o, 400);
    let mut ws = workers(&mut h, &["a-keeps", "b-keeps", "c-keeps"]);
    let stocked = |h: &Harness| {
        h.engine
            .state()
            .current
            .as_ref()
            .is_some_and(|c| c.ledger.kept_pending("c-keeps") > 0)
    };
    run_until(&mut h, &mut ws, stocked);
    h.feed(Input::Left { conn: 3 });
    let mut rest: Vec<_> = ws.drain(..2).collect();
    run_to_end(&mut h, &mut rest);
    every_sample_once(&h, 400, 2);
    assert!(h.refusals().is_empty(), "{:?}", h.refusals());
}

#[test]
fn after_a_failed_round_the_kept_samples_start_over() {
    // Lost images sent ahead (kind 13) or a lost stock (kind 14).
    for lost_kind in [13u8, 14] {
        lost_images_fail_a_round_and_the_cache_starts_over(lost_kind);
    }
}

fn lost_images_fail_a_round_and_the_cache_starts_over(lost_kind: u8) {
    let mut o = options();
    (o.epochs, o.prefetch) = (3, true);
    let mut h = Harness::new(o, 50);
    let mut ws = workers(&mut h, &["a-keeps", "b-keeps"]);
    // Stocks go out where images still have to cross (the first epoch).
    let epoch = if lost_kind == 14 { 1 } else { 2 };
    run_until(&mut h, &mut ws, |h| h.engine.state().epoch >= epoch);
    // Images sent ahead to b are lost: the coordinator counts them as
    // kept, b does not have them. Its round fails, and both sides start
    // over.
    let mut lost = false;
    for _ in 0..10_000 {
        if lost || h.finished {
            break;
        }
        h.now += Duration::from_millis(10);
        // Time passed: images held back until now go out first.
        h.feed(Input::Tick);
        let frames = h.inbox.remove(&2).unwrap_or_default();
        let before = frames.len();
        let kept: Vec<Vec<u8>> = frames.into_iter().filter(|f| f[1] != lost_kind).collect();
        lost = kept.len() < before;
        h.inbox.insert(2, kept);
        h.exchange(2, &mut ws[1]);
        h.exchange(1, &mut ws[0]);
    }
    assert!(lost, "a frame of kind {lost_kind} to b was dropped");
    run_to_end(&mut h, &mut ws);
    every_sample_once(&h, 50, 3);
    let failed = h
        .requeues()
        .iter()
        .filter(|(w, _, why)| w == "b-keeps" && matches!(why, Requeue::Failed(_)))
        .count();
    assert!(failed >= 1, "{:?}", h.requeues());
    let resets = sent_to(&h, 2)
        .into_iter()
        .filter(|m| matches!(m, Message::Assign(proto::Assign { cache: Some(c), .. }) | Message::Prefetch(proto::Prefetch { cache: Some(c), .. }) if c.reset))
        .count();
    assert!(resets >= 1, "the next images start b's cache over");
}

#[test]
fn the_next_rounds_images_wait_until_the_assignments_have_crossed() {
    let mut o = options();
    o.prefetch = true;
    // An epoch long enough that the next round always has images.
    let mut h = Harness::new(o, 400);
    let mut ws = workers(&mut h, &["a", "b"]);
    run_until(&mut h, &mut ws, |h| h.engine.state().round >= 3);
    // The devices' speeds are known now: let the round in progress close.
    let round = h.engine.state().round;
    for _ in 0..100 {
        if h.engine.state().round > round {
            break;
        }
        h.now += Duration::from_millis(10);
        h.exchange(1, &mut ws[0]);
        h.exchange(2, &mut ws[1]);
    }
    assert!(h.engine.state().round > round, "a new round started");
    let kinds = |h: &Harness| -> Vec<u8> {
        h.inbox
            .get(&1)
            .map(|frames| frames.iter().map(|f| f[1]).collect())
            .unwrap_or_default()
    };
    // Frames after a's assignment (kind 4): the images of the round after.
    let after_assign = |h: &Harness| -> Vec<u8> {
        let k = kinds(h);
        let last = k.iter().rposition(|&k| k == 4).expect("a's assignment");
        k[last + 1..].to_vec()
    };
    // At the round's start a's assignment goes out alone …
    assert_eq!(after_assign(&h), Vec::<u8>::new(), "{:?}", kinds(&h));
    // … and the next round's images follow once a quarter of its expected
    // training time has passed.
    h.now += Duration::from_millis(10);
    h.feed(Input::Tick);
    assert_eq!(after_assign(&h), vec![13], "{:?}", kinds(&h));
}

#[test]
fn head_starts_begin_once_the_rounds_have_grown_to_their_maximum() {
    let head_starts = |when_grown: bool| {
        let mut o = options();
        (o.epochs, o.train_ahead_after, o.max_local_steps) = (3, 1, 8);
        (o.prefetch, o.train_ahead_when_grown) = (true, when_grown);
        o.momentum_on = crate::strategy::MomentumOn::Workers;
        let (h, _) = two_workers_to_the_end(o, 400);
        let grown = h.engine.state().pace.reached_max;
        let starts: Vec<bool> = sent_to(&h, 1)
            .iter()
            .filter_map(|m| match m {
                Message::Prefetch(p) => Some(p.head_start.is_some()),
                _ => None,
            })
            .collect();
        (grown, starts)
    };
    // The fake devices look idle: the local steps double to 8 (2 × 4).
    let (grown, starts) = head_starts(true);
    assert!(grown);
    let first = starts.iter().position(|&s| s).expect("head starts");
    assert!(first > 0, "none before the rounds have grown: {starts:?}");
    assert!(
        starts[first..].iter().all(|&s| s),
        "then for good: {starts:?}"
    );
    let (grown, starts) = head_starts(false);
    assert!(grown && !starts.iter().any(|&s| s), "only when asked");
}

#[test]
fn the_first_epochs_are_synchronous_only_among_devices_alike_in_speed() {
    let mut o = options();
    o.train_ahead_after = 1;
    let mut h = Harness::new(o, 50);
    let _ws = workers(&mut h, &["pi", "laptop"]);
    let mut state = h.engine.state();
    assert_eq!(state.epoch, 1);
    let mut rates = |pi: f64, laptop: f64| {
        for (slot, rate) in state.workers.values_mut().zip([pi, laptop]) {
            slot.timed_images = 1000;
            slot.compute_seconds = if rate > 0.0 { 1000.0 / rate } else { 0.0 };
        }
        (state.unlike_devices(), state.synchronous_epoch())
    };
    // Not measured yet, or one measured: alike.
    assert_eq!(rates(0.0, 0.0), (false, true));
    assert_eq!(rates(0.0, 5000.0), (false, true));
    // Within UNLIKE_RATES of each other: alike, synchronous.
    assert_eq!(rates(1000.0, 1900.0), (false, true));
    // A laptop five times a Pi's speed: unlike, head starts at once.
    assert_eq!(rates(1000.0, 5000.0), (true, false));
    // After the first epochs every household trains ahead.
    state.epoch = 2;
    for slot in state.workers.values_mut() {
        slot.compute_seconds = 1.0;
    }
    assert!(!state.unlike_devices() && !state.synchronous_epoch());
}
