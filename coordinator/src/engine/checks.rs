//! Whether a worker's result can be used: checked before anything of it
//! reaches the ledger or the model.

use hearth_protocol::{RoundResult, UpdateKind};

use super::state::Busy;

/// Why `r` cannot be aggregated for the round `busy`, if it cannot.
/// `params` is the model's parameter count.
pub fn problem(r: &RoundResult, busy: &Busy, params: usize) -> Option<String> {
    if r.round != busy.round {
        return Some(format!(
            "result for round {}, but this worker is in round {}",
            r.round, busy.round
        ));
    }
    if r.params_version != busy.version {
        return Some(format!(
            "result starts from parameter version {}, the round sent version {}",
            r.params_version, busy.version
        ));
    }
    if r.kind != busy.reply {
        return Some(match busy.reply {
            UpdateKind::Delta => "this round asked for deltas, not parameters".to_string(),
            UpdateKind::Params => "this round asked for parameters, not deltas".to_string(),
        });
    }
    if r.samples != busy.samples {
        return Some(format!(
            "result covers {} samples, the round gave {}",
            r.samples, busy.samples
        ));
    }
    update_problem(&r.values, params)
}

/// Why an update vector cannot be aggregated, if it cannot.
pub fn update_problem(update: &[f32], params: usize) -> Option<String> {
    if update.len() != params {
        return Some(format!(
            "update has {} values, the model has {params}",
            update.len()
        ));
    }
    let i = update.iter().position(|x| !x.is_finite())?;
    Some(format!(
        "update has a non-finite value ({}) at index {i}",
        update[i]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> Busy {
        Busy {
            round: 4,
            batches: vec![1, 2],
            samples: 128,
            version: 3,
            reply: UpdateKind::Delta,
            learning_rate: 0.05,
            sent: Default::default(),
            deadline: Default::default(),
            component: String::new(),
        }
    }

    fn result() -> RoundResult {
        RoundResult {
            round: 4,
            params_version: 3,
            samples: 128,
            loss_sum: 1.0,
            correct: 3,
            kind: UpdateKind::Delta,
            values: vec![0.0, 1.0],
            encoding: hearth_protocol::Encoding::F32,
            compute_seconds: 0.0,
        }
    }

    #[test]
    fn each_problem_is_named() {
        assert_eq!(problem(&result(), &busy(), 2), None);
        type Spoil = fn(&mut RoundResult);
        let cases: [(Spoil, &str); 6] = [
            (|r| r.round = 5, "round 5"),
            (|r| r.params_version = 2, "version 2"),
            (|r| r.kind = UpdateKind::Params, "deltas"),
            (|r| r.samples = 64, "64 samples"),
            (|r| r.values = vec![1.0], "1 values"),
            (|r| r.values[1] = f32::INFINITY, "index 1"),
        ];
        for (spoil, needle) in cases {
            let mut r = result();
            spoil(&mut r);
            let p = problem(&r, &busy(), 2).unwrap_or_default();
            assert!(p.contains(needle), "{p:?} does not name {needle:?}");
        }
    }
}
