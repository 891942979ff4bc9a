//! What a worker does with an assignment: one definition for every worker.

use hearth_protocol::{Assign, IMAGE_LEN, RoundResult, UpdateKind};

use crate::Trainer;

/// Where a round's local steps stand: steps and samples done, and the loss
/// and correct count of every sample before its step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Steps {
    /// Steps done.
    pub done: usize,
    /// Samples of those steps.
    pub samples: usize,
    /// Sum of their per-sample losses.
    pub loss_sum: f64,
    /// Samples classified right.
    pub correct: u32,
}

impl Steps {
    /// True once every step of `steps` is done.
    pub fn finished(&self, steps: &[u32]) -> bool {
        self.done >= steps.len()
    }

    /// Runs the next of `steps` (samples per step, in order) on `pixels` and
    /// `labels` at the trainer's learning rate; nothing once all are done.
    pub fn next<T: Trainer>(
        &mut self,
        trainer: &mut T,
        steps: &[u32],
        pixels: &[u8],
        labels: &[u8],
    ) -> Result<(), String> {
        let Some(&n) = steps.get(self.done) else {
            return Ok(());
        };
        let end = self.samples + n as usize;
        let (Some(pixels), Some(labels)) = (
            pixels.get(self.samples * IMAGE_LEN..end * IMAGE_LEN),
            labels.get(self.samples..end),
        ) else {
            return Err(format!(
                "local steps {steps:?} do not split the {} samples sent",
                labels.len()
            ));
        };
        let (loss, right) = trainer
            .train_batch(pixels, labels)
            .map_err(|e| e.to_string())?;
        self.loss_sum += loss as f64 * labels.len() as f64;
        self.correct += right;
        self.samples = end;
        self.done += 1;
        Ok(())
    }

    /// The round's result once the steps are done: the trainer's parameters
    /// now, or their change from `start` if `a` asks for that.
    pub fn result<T: Trainer>(
        &self,
        trainer: &mut T,
        a: &Assign,
        start: &[f32],
    ) -> Result<RoundResult, String> {
        let after = trainer.params().map_err(|e| e.to_string())?;
        let values = match a.reply {
            UpdateKind::Params => after,
            UpdateKind::Delta => after.iter().zip(start).map(|(x, y)| x - y).collect(),
        };
        Ok(RoundResult {
            round: a.round,
            params_version: a.params_version,
            samples: self.samples as u32,
            loss_sum: self.loss_sum,
            correct: self.correct,
            kind: a.reply,
            values,
            encoding: hearth_protocol::Encoding::F32,
            compute_seconds: 0.0,
        })
    }
}

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
    let mut steps = Steps::default();
    while !steps.finished(&a.steps) {
        steps.next(trainer, &a.steps, pixels, &a.labels)?;
    }
    steps.result(trainer, a, params)
}
