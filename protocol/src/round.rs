//! What a worker does with an [`Assign`]: one definition for the device host
//! (wasmtime) and the browser (wasm-bindgen), so both answer a round the same way.

use crate::{Assign, IMAGE_LEN, Message, RoundResult, UpdateKind};

/// A model a worker can train locally.
pub trait LocalTrainer {
    /// The trainer's error type.
    type Error;
    /// Replaces the parameters.
    fn set_params(&mut self, params: &[f32]) -> Result<(), Self::Error>;
    /// The current parameters.
    fn params(&mut self) -> Result<Vec<f32>, Self::Error>;
    /// Sets the learning rate for the following steps.
    fn set_learning_rate(&mut self, lr: f32) -> Result<(), Self::Error>;
    /// One SGD step; returns the batch's mean loss and correct count before the step.
    fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<(f32, u32), Self::Error>;
}

/// Runs the assigned local steps and returns the `Result` message carrying the
/// change of the parameters over the round.
pub fn run_round<T: LocalTrainer>(model: &mut T, a: Assign) -> Result<Message, T::Error> {
    // The parameters the round starts from: the ones sent (no need to read
    // them back out of the model), or the ones it already holds.
    let before = match a.params {
        Some(params) => {
            model.set_params(&params)?;
            params
        }
        None => model.params()?,
    };
    model.set_learning_rate(a.learning_rate)?;
    let batch = a.batch_size.max(1) as usize;
    let (mut loss_sum, mut correct) = (0.0f64, 0u32);
    for (pixels, labels) in a
        .pixels
        .chunks(batch * IMAGE_LEN)
        .zip(a.labels.chunks(batch))
    {
        let (loss, right) = model.train_batch(pixels, labels)?;
        loss_sum += loss as f64 * labels.len() as f64;
        correct += right;
    }
    let after = model.params()?;
    let delta = after.iter().zip(&before).map(|(x, y)| x - y).collect();
    Ok(Message::Result(RoundResult {
        round: a.round,
        params_version: a.params_version,
        samples: a.labels.len() as u32,
        loss_sum,
        correct,
        kind: UpdateKind::Delta,
        values: delta,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds the learning rate to every parameter per step; counts labels 0 as right.
    struct Counter {
        params: Vec<f32>,
        lr: f32,
        steps: usize,
    }

    impl LocalTrainer for Counter {
        type Error = String;
        fn set_params(&mut self, params: &[f32]) -> Result<(), String> {
            self.params = params.to_vec();
            Ok(())
        }
        fn params(&mut self) -> Result<Vec<f32>, String> {
            Ok(self.params.clone())
        }
        fn set_learning_rate(&mut self, lr: f32) -> Result<(), String> {
            self.lr = lr;
            Ok(())
        }
        fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<(f32, u32), String> {
            assert_eq!(pixels.len(), labels.len() * IMAGE_LEN);
            self.steps += 1;
            self.params.iter_mut().for_each(|p| *p += self.lr);
            Ok((1.5, labels.iter().filter(|&&l| l == 0).count() as u32))
        }
    }

    #[test]
    fn a_round_trains_each_batch_and_returns_the_delta() {
        let mut m = Counter {
            params: vec![9.0; 3],
            lr: 0.0,
            steps: 0,
        };
        let a = Assign {
            round: 7,
            params_version: 3,
            local_steps: 3,
            batch_size: 2,
            learning_rate: 0.25,
            batch_ids: vec![1, 2, 3],
            params: Some(vec![1.0, 2.0, 3.0]),
            pixels: vec![0; 5 * IMAGE_LEN],
            labels: vec![0, 1, 0, 0, 1],
        };
        let Ok(Message::Result(r)) = run_round(&mut m, a) else {
            panic!("expected a result");
        };
        assert_eq!(m.steps, 3, "batches of 2, 2 and 1");
        assert_eq!((r.round, r.params_version, r.samples), (7, 3, 5));
        assert_eq!(r.correct, 3);
        assert!((r.loss_sum - 7.5).abs() < 1e-9);
        assert_eq!(r.kind, UpdateKind::Delta);
        assert_eq!(r.values, vec![0.75; 3]);
    }
}
