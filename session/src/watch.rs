//! Watching a component just swapped to: how long, and what counts as
//! failing (the session rolls back on it).

use hearth_protocol as proto;

/// Rounds a component swapped to is watched for: a failed round, NaN or
/// infinite values, or a diverging loss in them rolls the device back.
pub const WATCH_ROUNDS: u32 = 5;

/// A watched round's mean loss diverged when it exceeds both this many
/// times the last mean loss before the swap ...
const DIVERGE_FACTOR: f64 = 4.0;
/// ... and that loss plus this much.
const DIVERGE_MARGIN: f64 = 1.0;

/// A component swapped to and not yet proven.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    /// The component.
    pub(crate) digest: String,
    /// What ran before it (what a rollback goes back to).
    pub(crate) previous: String,
    /// Watched rounds still to go.
    pub(crate) rounds_left: u32,
    /// Mean loss of the last round before the swap.
    pub(crate) baseline: Option<f64>,
}

/// What is wrong with a watched round's result, if anything.
pub(crate) fn watched_problem(
    result: &proto::RoundResult,
    baseline: Option<f64>,
) -> Option<String> {
    if let Some(i) = result.values.iter().position(|v| !v.is_finite()) {
        return Some(format!("value {i} of its result is {}", result.values[i]));
    }
    let mean = result.loss_sum / f64::from(result.samples.max(1));
    if !mean.is_finite() {
        return Some(format!("its training loss is {mean}"));
    }
    match baseline {
        Some(b) if mean > (DIVERGE_FACTOR * b).max(b + DIVERGE_MARGIN) => Some(format!(
            "its training loss diverged: {mean:.3} after {b:.3} before the swap"
        )),
        _ => None,
    }
}
