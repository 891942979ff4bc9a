//! A saved and restored engine continues bit for bit.

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
