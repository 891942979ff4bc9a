//! The ledger: which batch of the epoch went to whom, and what came back.
//!
//! Each epoch is a seeded shuffle of the training set cut into batches. A
//! batch is pending, assigned to one worker in one round, or done. When a
//! worker vanishes or its result is rejected, its batches return to the
//! queue, so every sample is trained on exactly once per epoch.

use std::collections::VecDeque;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

/// Index of a batch within its epoch.
pub type BatchId = u32;

/// Where a batch stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchState {
    /// Waiting in the queue.
    Pending,
    /// Sent to `worker` in `round`.
    Assigned {
        /// Worker name.
        worker: String,
        /// Round number.
        round: u64,
    },
    /// Trained on by `worker` in `round`, and aggregated.
    Done {
        /// Worker name.
        worker: String,
        /// Round number.
        round: u64,
    },
}

/// One completed batch, as written to `ledger.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Batch within the epoch.
    pub batch: BatchId,
    /// Who trained on it.
    pub worker: String,
    /// In which round.
    pub round: u64,
    /// Training-set indices of its samples.
    pub samples: Vec<u32>,
    /// Digest of the component that trained on it.
    #[serde(default)]
    pub component: String,
}

/// Checks a `ledger.jsonl`: every one of `samples` training samples used
/// exactly once in each epoch, no batch completed twice. Returns the epochs
/// it holds, or the first problem.
pub fn check_file(path: &std::path::Path, samples: usize) -> anyhow::Result<usize> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut epochs: std::collections::BTreeMap<usize, (Vec<u32>, Vec<BatchId>)> =
        Default::default();
    for (i, line) in text.lines().enumerate() {
        let e: LedgerEntry = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        let (s, b) = epochs.entry(e.epoch).or_default();
        s.extend(e.samples);
        b.push(e.batch);
    }
    for (epoch, (mut s, mut b)) in epochs.clone() {
        s.sort_unstable();
        let expected: Vec<u32> = (0..samples as u32).collect();
        anyhow::ensure!(
            s == expected,
            "epoch {epoch}: {} sample uses for {samples} samples (some missing or repeated)",
            s.len()
        );
        let n = b.len();
        b.sort_unstable();
        b.dedup();
        anyhow::ensure!(b.len() == n, "epoch {epoch}: a batch was completed twice");
    }
    Ok(epochs.len())
}

/// The batches of one epoch and their states (part of the saved run state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    epoch: usize,
    order: Vec<u32>,
    batch_size: usize,
    states: Vec<BatchState>,
    queue: VecDeque<BatchId>,
}

impl Ledger {
    /// Epoch `epoch` over `n` samples: shuffled with `seed` and `epoch`, cut into batches.
    pub fn new(epoch: usize, n: usize, batch_size: usize, seed: u64) -> Self {
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut Pcg64Mcg::seed_from_u64(
            seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        let batches = n.div_ceil(batch_size.max(1));
        Self {
            epoch,
            order,
            batch_size: batch_size.max(1),
            states: vec![BatchState::Pending; batches],
            queue: (0..batches as BatchId).collect(),
        }
    }

    /// Number of batches in the epoch.
    pub fn batches(&self) -> usize {
        self.states.len()
    }

    /// Samples in the epoch.
    pub fn samples_total(&self) -> usize {
        self.order.len()
    }

    /// Batches waiting in the queue.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// True when every batch is done.
    pub fn is_complete(&self) -> bool {
        self.states
            .iter()
            .all(|s| matches!(s, BatchState::Done { .. }))
    }

    /// Training-set indices of a batch's samples.
    pub fn samples(&self, batch: BatchId) -> &[u32] {
        let start = batch as usize * self.batch_size;
        &self.order[start..(start + self.batch_size).min(self.order.len())]
    }

    /// Takes up to `count` batches from the queue for `worker` in `round`.
    pub fn assign(&mut self, worker: &str, round: u64, count: usize) -> Vec<BatchId> {
        let mut taken = Vec::new();
        while taken.len() < count {
            let Some(b) = self.queue.pop_front() else {
                break;
            };
            self.states[b as usize] = BatchState::Assigned {
                worker: worker.to_string(),
                round,
            };
            taken.push(b);
        }
        taken
    }

    /// Marks `batches` done by `worker` in `round`; returns the ledger lines.
    /// Batches not assigned to that worker in that round are left alone
    /// (and reported as an error), so a stale or forged result changes nothing.
    pub fn complete(
        &mut self,
        worker: &str,
        round: u64,
        batches: &[BatchId],
    ) -> Result<Vec<LedgerEntry>, String> {
        for &b in batches {
            match self.states.get(b as usize) {
                Some(BatchState::Assigned {
                    worker: w,
                    round: r,
                }) if w == worker && *r == round => {}
                other => {
                    return Err(format!(
                        "batch {b} is {other:?}, not assigned to {worker} in round {round}"
                    ));
                }
            }
        }
        Ok(batches
            .iter()
            .map(|&b| {
                self.states[b as usize] = BatchState::Done {
                    worker: worker.to_string(),
                    round,
                };
                LedgerEntry {
                    epoch: self.epoch,
                    batch: b,
                    worker: worker.to_string(),
                    round,
                    samples: self.samples(b).to_vec(),
                    component: String::new(),
                }
            })
            .collect())
    }

    /// Returns `batches` of `worker` to the front of the queue (its result was
    /// lost or rejected); returns how many went back.
    pub fn requeue(&mut self, worker: &str, batches: &[BatchId]) -> usize {
        let mut n = 0;
        for &b in batches.iter().rev() {
            if let Some(s) = self.states.get_mut(b as usize)
                && matches!(s, BatchState::Assigned { worker: w, .. } if w == worker)
            {
                *s = BatchState::Pending;
                self.queue.push_front(b);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_once_even_when_a_worker_vanishes() {
        let mut l = Ledger::new(1, 1000, 64, 7);
        assert_eq!(l.batches(), 16);
        let a = l.assign("a", 1, 5);
        let b = l.assign("b", 1, 5);
        assert_eq!(l.pending(), 6);
        // b vanishes: its batches come back first.
        assert_eq!(l.requeue("b", &b), 5);
        l.complete("a", 1, &a).unwrap();
        let mut done: Vec<u32> = a.iter().flat_map(|&x| l.samples(x).to_vec()).collect();
        let mut round = 2;
        while l.pending() > 0 {
            let got = l.assign("c", round, 3);
            let entries = l.complete("c", round, &got).unwrap();
            done.extend(entries.iter().flat_map(|e| e.samples.clone()));
            round += 1;
        }
        assert!(l.is_complete());
        done.sort_unstable();
        assert_eq!(done, (0..1000).collect::<Vec<u32>>());
    }

    #[test]
    fn stale_or_foreign_results_are_refused() {
        let mut l = Ledger::new(1, 256, 64, 1);
        let a = l.assign("a", 1, 2);
        assert!(l.complete("b", 1, &a).is_err(), "another worker's batches");
        assert!(l.complete("a", 2, &a).is_err(), "wrong round");
        assert!(l.complete("a", 1, &[99]).is_err(), "no such batch");
        l.complete("a", 1, &a).unwrap();
        assert!(l.complete("a", 1, &a).is_err(), "twice");
        assert_eq!(l.requeue("a", &a), 0, "done batches stay done");
    }

    #[test]
    fn shuffles_differ_by_epoch_and_last_batch_is_short() {
        let (l1, l2) = (Ledger::new(1, 100, 64, 3), Ledger::new(2, 100, 64, 3));
        assert_ne!(l1.samples(0), l2.samples(0));
        assert_eq!(l1.samples(1).len(), 36);
    }
}
