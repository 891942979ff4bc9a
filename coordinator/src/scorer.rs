//! Scores the global model on the test set in a thread of its own, so the
//! devices train the next epoch meanwhile.

use std::sync::mpsc::{Receiver, Sender};

use anyhow::{Context, Result};
use hearth_mnist::Split;
use hearth_runtime::ComponentModel;

use crate::engine::Evaluation;

/// What the scoring thread is asked to do, in order.
pub enum Job {
    /// Score these parameters, for this epoch.
    Score {
        /// The epoch.
        epoch: usize,
        /// The global parameters at its end.
        params: Vec<f32>,
    },
    /// Score with this model from now on (a component was rolled out).
    Use(Box<ComponentModel>),
}

/// An epoch's score, or why it could not be had.
pub type Scored = Result<(usize, Evaluation)>;

/// Runs `jobs` until their sender is dropped, answering every
/// [`Job::Score`] on `scores` (in the order asked).
pub fn serve(
    evaluator: &mut ComponentModel,
    test: &Split,
    jobs: &Receiver<Job>,
    scores: &Sender<Scored>,
) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Score { epoch, params } => {
                let score = score(evaluator, test, &params).map(|s| (epoch, s));
                if scores.send(score).is_err() {
                    return;
                }
            }
            Job::Use(model) => *evaluator = *model,
        }
    }
}

/// `params` scored on `test` by `evaluator`.
pub fn score(evaluator: &mut ComponentModel, test: &Split, params: &[f32]) -> Result<Evaluation> {
    evaluator.set_params(params)?;
    let labels = test
        .labels
        .as_slice()
        .context("test labels are not contiguous")?;
    let e = evaluator.evaluate(test.pixels(), labels, false)?;
    Ok(Evaluation {
        loss_sum: e.loss_sum,
        correct: e.correct.into(),
        count: e.count.into(),
    })
}
