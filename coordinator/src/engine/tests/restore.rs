//! A saved and restored engine continues bit for bit; a crashed one
//! resumes from its last checkpoint.

use std::time::Duration;

use hearth_protocol as proto;

use super::*;

#[test]
fn a_restored_engine_continues_bit_for_bit() {
    let mut h = Harness::new(options(), 50);
    let mut ws = workers(&mut h, &["a", "b"]);
    // Into the first epoch: two rounds done, the third in flight with a's
    // result in and b's outstanding.
    for _ in 0..2 {
        h.now += Duration::from_millis(10);
        h.exchange(1, &mut ws[0]);
        h.exchange(2, &mut ws[1]);
    }
    h.now += Duration::from_millis(10);
    h.exchange(1, &mut ws[0]);
    assert_eq!(h.engine.state().epoch, 1);
    assert!(
        !h.engine.state().round_progress.results.is_empty(),
        "mid-round"
    );
    let saved = h.engine.state().to_bytes().unwrap();
    let restored = RunState::from_bytes(&saved).unwrap();
    assert_eq!(restored, h.engine.state());
    let engine = Engine::restore(restored, data(50), Box::new(FedAvgM::new(2, 0.9))).unwrap();
    let mut twin = Harness::around(engine);
    twin.now = h.now;
    // Feed both the same inputs from here on; the outputs must agree.
    let start = h.log.len();
    let mut inputs: Vec<(Duration, Input)> = Vec::new();
    for _ in 0..10_000 {
        if h.finished {
            break;
        }
        h.now += Duration::from_millis(10);
        for (i, w) in ws.iter_mut().enumerate() {
            let conn = i as ConnId + 1;
            for f in h.inbox.remove(&conn).unwrap_or_default() {
                if let Some(reply) = w.handle(&f) {
                    let input = Input::Frame {
                        conn,
                        bytes: reply.len(),
                        message: proto::decode(&reply).unwrap(),
                    };
                    inputs.push((h.now, input.clone()));
                    h.feed(input);
                }
            }
        }
    }
    assert!(h.finished);
    for (now, input) in inputs {
        twin.now = now;
        twin.feed(input);
    }
    assert!(twin.finished);
    assert_eq!(twin.log, h.log[start..], "same outputs, in the same order");
    let bits = |g: &[f32]| g.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(twin.engine.global()), bits(h.engine.global()));
    every_sample_once(&h, 50, 2);
}

/// Samples of the crashed run: enough rounds in an epoch to crash in the
/// middle of one.
const SAMPLES: usize = 70;

#[test]
fn a_crashed_run_resumes_from_its_last_checkpoint_and_credits_every_sample_once() {
    let mut h = Harness::new(options(), SAMPLES);
    let mut ws = workers(&mut h, &["a", "b"]);
    // Train into epoch 1 until a checkpoint has been handed out mid-epoch,
    // then a little more (work the crash will lose).
    let mut saved: Option<(RunState, usize)> = None;
    for _ in 0..100 {
        h.now += Duration::from_millis(400);
        h.exchange(1, &mut ws[0]);
        h.exchange(2, &mut ws[1]);
        if saved.is_none()
            && let Some(Notice::Checkpoint(state)) = h
                .notices
                .iter()
                .rev()
                .find(|n| matches!(n, Notice::Checkpoint(_)))
            && state.epoch == 1
            && state.current.is_some()
            && state.round > 1
        {
            let lines = completed_before(&h.notices);
            saved = Some(((**state).clone(), lines));
            break;
        }
    }
    let (state, lines) = saved.expect("a checkpoint in the middle of epoch 1");
    h.exchange(1, &mut ws[0]);
    h.exchange(2, &mut ws[1]);
    // The restarted coordinator: state from the file, no connections.
    let resumed = RunState::from_bytes(&state.to_bytes().unwrap())
        .unwrap()
        .resumed();
    assert!(resumed.workers.is_empty());
    let engine = Engine::restore(resumed, data(SAMPLES), Box::new(FedAvgM::new(2, 0.9))).unwrap();
    let mut after = Harness::around(engine);
    after.now = state.clock;
    let mut ws = workers(&mut after, &["a", "b"]);
    run_to_end(&mut after, &mut ws);
    // The ledger as the file would hold it: the lines up to the checkpoint,
    // then the resumed run's.
    let mut notices: Vec<Notice> = h
        .notices
        .iter()
        .filter(|n| matches!(n, Notice::Completed(_)))
        .take(lines)
        .cloned()
        .collect();
    notices.extend(after.notices.iter().cloned());
    let joined = Harness {
        notices,
        ..Harness::new(options(), SAMPLES)
    };
    every_sample_once(&joined, SAMPLES as u32, 2);
    assert_eq!(after.engine.state().history.len(), 2);
}

/// Ledger notices before the last checkpoint in `notices`.
fn completed_before(notices: &[Notice]) -> usize {
    let last = notices
        .iter()
        .rposition(|n| matches!(n, Notice::Checkpoint(_)))
        .unwrap_or(0);
    notices[..last]
        .iter()
        .filter(|n| matches!(n, Notice::Completed(_)))
        .count()
}
