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
    lower_priority();
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

/// Puts the calling thread at the lowest CPU priority (nice 19): scoring
/// is background work, and takes what the rounds leave. On a coordinator
/// that shares its cores with devices (the lab's emulated household, or a
/// Pi that coordinates and trains), scoring at full priority slowed the
/// next epoch's first rounds (11 emulated Pi 3s: a sweep at 1.37× the
/// bound; at this priority, a run at 1.25×).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; a
    // failure (no permission to change it) leaves the priority as it was.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
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
