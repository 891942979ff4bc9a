//! Head starts: images sent ahead trained before their assignment.

use super::*;

/// Images of round `round` sent ahead (`steps` samples per step), with a
/// head start at learning rate `lr` if given, for a worker alone.
fn prefetch(round: u64, steps: Vec<u32>, lr: Option<f32>) -> Vec<u8> {
    prefetch_shared(round, steps, lr, 1.0)
}

/// As [`prefetch`], for a worker that trained `own_share` of its round.
fn prefetch_shared(round: u64, steps: Vec<u32>, lr: Option<f32>, own_share: f32) -> Vec<u8> {
    let n: u32 = steps.iter().sum();
    proto::encode(&Message::Prefetch(proto::Prefetch {
        round,
        pixels: vec![0; n as usize * IMAGE_LEN],
        labels: vec![0; n as usize],
        cache: None,
        head_start: lr.map(|learning_rate| proto::HeadStart {
            learning_rate,
            steps,
            shift: 0,
            own_share,
        }),
    }))
}

/// The assignment of a prefetched round of `steps` at `lr`, from global
/// parameters `params` (version 4).
fn assign_prefetched(round: u64, steps: Vec<u32>, lr: f32, params: Vec<f32>) -> Vec<u8> {
    proto::encode(&Message::Assign(proto::Assign {
        round,
        params_version: 4,
        learning_rate: lr,
        steps,
        reply: UpdateKind::Delta,
        params,
        params_encoding: proto::Encoding::F32,
        params_base: None,
        reply_encoding: proto::Encoding::F32,
        shift: 0,
        prefetched: true,
        pixels: Vec::new(),
        labels: Vec::new(),
        cache: None,
        component: String::new(),
    }))
}

/// A joined session that answered round 7 (params 1, 2, 3 plus 0.25 × 2 steps).
fn after_round_seven() -> WorkerSession<Counter> {
    let mut s = WorkerSession::new(identity(), Counter::default());
    join(&mut s);
    assert!(s.handle(&welcome("toy")).is_none());
    let Message::Result(_) = decode(s.handle(&assign(7, vec![2, 2], UpdateKind::Delta))) else {
        panic!("result expected")
    };
    assert_eq!(s.trainer.params, vec![1.5, 2.5, 3.5]);
    s
}

#[test]
fn a_head_start_trains_while_idle_and_its_change_goes_on_top_of_the_new_model() {
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![2], Some(0.5))).is_none());
    assert!(s.has_work());
    assert_eq!(s.trainer.steps.len(), 2, "nothing trained before work()");
    s.work();
    assert!(!s.has_work());
    assert_eq!(
        s.trainer.params,
        vec![2.0, 3.0, 4.0],
        "from the model round 7 ended with"
    );
    assert_eq!(s.stats().steps_ahead, 1);
    let global = vec![10.0, 20.0, 30.0];
    let Message::Result(r) = decode(s.handle(&assign_prefetched(8, vec![2], 0.5, global))) else {
        panic!("result expected")
    };
    assert_eq!(s.trainer.steps.len(), 3, "not trained again");
    assert_eq!((r.round, r.params_version, r.samples), (8, 4, 2));
    assert_eq!((r.kind, r.values), (UpdateKind::Delta, vec![0.5; 3]));
    assert_eq!(r.correct, 2);
    assert_eq!(
        s.trainer.params,
        vec![10.5, 20.5, 30.5],
        "the new global model plus the change trained ahead"
    );
    assert_eq!(s.stats().rounds, 2);

    // And on: the next head start builds on that model.
    assert!(s.handle(&prefetch(9, vec![1], Some(0.5))).is_none());
    s.work();
    assert_eq!(s.trainer.params, vec![11.0, 21.0, 31.0]);
}

#[test]
fn a_head_start_shared_with_others_trains_from_the_copy_plus_its_share_of_its_progress() {
    // Round 7 went from the global 1, 2, 3 to 1.5, 2.5, 3.5; a quarter of
    // that round was this worker's: the next global model is expected at
    // 1.125, 2.125, 3.125 as far as it knows.
    let mut s = after_round_seven();
    assert!(
        s.handle(&prefetch_shared(8, vec![2], Some(0.5), 0.25))
            .is_none()
    );
    s.work();
    assert_eq!(s.trainer.params, vec![1.625, 2.625, 3.625]);
    // What it learned ahead goes on top of the model that comes.
    let global = vec![10.0, 20.0, 30.0];
    let Message::Result(r) = decode(s.handle(&assign_prefetched(8, vec![2], 0.5, global))) else {
        panic!("result expected")
    };
    assert_eq!(r.values, vec![0.5; 3]);
    assert_eq!(s.trainer.params, vec![10.5, 20.5, 30.5]);
}

#[test]
fn an_assignment_midway_moves_the_steps_done_onto_its_model_and_trains_the_rest() {
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![1, 1, 2], Some(0.5))).is_none());
    s.work();
    assert!(s.has_work(), "two steps left");
    let global = vec![10.0, 20.0, 30.0];
    let frame = assign_prefetched(8, vec![1, 1, 2], 0.5, global);
    let Message::Result(r) = decode(s.handle(&frame)) else {
        panic!("result expected")
    };
    assert_eq!(s.trainer.steps, vec![2, 2, 1, 1, 2], "each step once");
    assert_eq!((r.samples, r.values), (4, vec![1.5; 3]));
    assert_eq!(s.trainer.params, vec![11.5, 21.5, 31.5]);
    assert!(!s.has_work());
    // An assignment before any step: exactly the round without a head start.
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![2], Some(0.5))).is_none());
    let Message::Result(r) = decode(s.handle(&assign_prefetched(8, vec![2], 0.5, vec![1.0; 3])))
    else {
        panic!("result expected")
    };
    assert_eq!((r.values, s.stats().steps_ahead), (vec![0.5; 3], 0));
    assert_eq!(s.trainer.params, vec![1.5; 3]);
}

#[test]
fn an_assignment_unlike_its_head_start_is_trained_again_from_the_global_model() {
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![2], Some(0.5))).is_none());
    s.work();
    // A different learning rate than announced: the round is trained anew.
    let global = vec![10.0, 20.0, 30.0];
    let Message::Result(r) = decode(s.handle(&assign_prefetched(8, vec![2], 0.25, global))) else {
        panic!("result expected")
    };
    assert_eq!(s.trainer.steps.len(), 4, "trained again");
    assert_eq!(r.values, vec![0.25; 3]);
    assert_eq!(s.trainer.params, vec![10.25, 20.25, 30.25]);
}

#[test]
fn no_head_start_without_a_good_previous_round_or_for_another_round() {
    // Images without a head start wait for their assignment.
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![2], None)).is_none());
    assert!(!s.has_work());
    // A head start for a round that does not follow the answered one.
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(9, vec![2], Some(0.5))).is_none());
    assert!(!s.has_work());
    // After a failed round (a step of 3 fails) nothing is trained ahead.
    let mut s = after_round_seven();
    let Message::Error(_) = decode(s.handle(&assign(8, vec![3], UpdateKind::Delta))) else {
        panic!("an error report expected")
    };
    assert!(s.handle(&prefetch(9, vec![2], Some(0.5))).is_none());
    assert!(!s.has_work());
    // A round trained ahead whose assignment never comes is dropped: the
    // next assignment trains from the model it brings.
    let mut s = after_round_seven();
    assert!(s.handle(&prefetch(8, vec![2], Some(0.5))).is_none());
    s.work();
    let Message::Result(r) = decode(s.handle(&assign(9, vec![1], UpdateKind::Delta))) else {
        panic!("result expected")
    };
    assert_eq!((r.round, r.values), (9, vec![0.25; 3]));
    assert_eq!(s.trainer.params, vec![1.25, 2.25, 3.25]);
    assert!(!s.has_work());
}
