//! What a worker does with an assignment: one definition for every worker.

use hearth_protocol::{Assign, IMAGE_LEN, RoundResult, UpdateKind};

use crate::Trainer;

/// Starts from the round's global parameters `params` (what `a` stands
/// for, see [`crate::compact`]) and trains on `pixels` (`a`'s, or the
/// device's shifted copy of them), runs one local SGD step per
/// entry of `a.steps` at the round's learning rate, and returns the result:
/// the change of the parameters over the round (or the parameters after it,
/// if the round asks for them), with the loss and correct count of every
/// sample before its step. Errors are the trainer's, as text.
pub fn run_round<T: Trainer>(
    trainer: &mut T,
    a: &Assign,
    params: &[f32],
    pixels: &[u8],
) -> Result<RoundResult, String> {
    let fail = |e: T::Error| e.to_string();
    trainer.set_params(params).map_err(fail)?;
    trainer.set_learning_rate(a.learning_rate).map_err(fail)?;
    let (mut loss_sum, mut correct, mut start) = (0.0f64, 0u32, 0usize);
    for &n in &a.steps {
        let end = start + n as usize;
        let (Some(pixels), Some(labels)) = (
            pixels.get(start * IMAGE_LEN..end * IMAGE_LEN),
            a.labels.get(start..end),
        ) else {
            return Err(format!(
                "local steps {:?} do not split the {} samples sent",
                a.steps,
                a.labels.len()
            ));
        };
        let (loss, right) = trainer.train_batch(pixels, labels).map_err(fail)?;
        loss_sum += loss as f64 * labels.len() as f64;
        correct += right;
        start = end;
    }
    let after = trainer.params().map_err(fail)?;
    let values = match a.reply {
        UpdateKind::Params => after,
        UpdateKind::Delta => after.iter().zip(params).map(|(x, y)| x - y).collect(),
    };
    Ok(RoundResult {
        round: a.round,
        params_version: a.params_version,
        samples: start as u32,
        loss_sum,
        correct,
        kind: a.reply,
        values,
        encoding: hearth_protocol::Encoding::F32,
        compute_seconds: 0.0,
    })
}
