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
    /// Where each batch starts in `order`, and where the last one ends.
    starts: Vec<u32>,
    states: Vec<BatchState>,
    queue: VecDeque<BatchId>,
    /// The worker that keeps every sample of a batch (an index into
    /// `keepers`), if one does.
    owner: Vec<Option<u16>>,
    /// Workers keeping samples of this epoch, by name.
    keepers: Vec<String>,
}

impl Ledger {
    /// Epoch `epoch` over `n` samples: shuffled with `seed` and `epoch`, cut into batches.
    pub fn new(epoch: usize, n: usize, batch_size: usize, seed: u64) -> Self {
        Self::with_keepers(epoch, n, batch_size, seed, &[])
    }

    /// As [`new`](Self::new), but the samples each of `keepers` (name, and
    /// what it holds) keeps are cut into batches of their own, which
    /// [`assign`](Self::assign) gives that worker first: once a device
    /// holds its images, an epoch sends it few. A sample two keepers hold
    /// goes with the first of them.
    pub fn with_keepers(
        epoch: usize,
        n: usize,
        batch_size: usize,
        seed: u64,
        keepers: &[(String, &hearth_protocol::SampleSet)],
    ) -> Self {
        let batch_size = batch_size.max(1);
        let mut shuffled: Vec<u32> = (0..n as u32).collect();
        shuffled.shuffle(&mut Pcg64Mcg::seed_from_u64(
            seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        // Group the shuffled samples by keeper (the rest last), in order.
        let keepers: Vec<(String, &hearth_protocol::SampleSet)> = keepers
            .iter()
            .filter(|(_, set)| !set.is_empty())
            .take(usize::from(u16::MAX))
            .cloned()
            .collect();
        let mut groups: Vec<Vec<u32>> = vec![Vec::new(); keepers.len() + 1];
        for id in shuffled {
            let k = keepers
                .iter()
                .position(|(_, set)| set.holds(id))
                .unwrap_or(keepers.len());
            groups[k].push(id);
        }
        let (mut order, mut starts, mut owner) = (Vec::with_capacity(n), vec![0u32], Vec::new());
        for (k, group) in groups.into_iter().enumerate() {
            let keeper = (k < keepers.len()).then_some(k as u16);
            for batch in group.chunks(batch_size) {
                order.extend_from_slice(batch);
                starts.push(order.len() as u32);
                owner.push(keeper);
            }
        }
        let batches = owner.len();
        Self {
            epoch,
            order,
            starts,
            states: vec![BatchState::Pending; batches],
            queue: (0..batches as BatchId).collect(),
            owner,
            keepers: keepers.into_iter().map(|(name, _)| name).collect(),
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

    /// Training-set indices of a batch's samples (none for a batch that is not).
    pub fn samples(&self, batch: BatchId) -> &[u32] {
        let b = batch as usize;
        match (self.starts.get(b), self.starts.get(b + 1)) {
            (Some(&start), Some(&end)) => &self.order[start as usize..end as usize],
            _ => &[],
        }
    }

    /// The queue position of the batch `worker` should take next: its own
    /// kept samples first, then batches nobody keeps, then from the keeper
    /// with the most left (the last of its batches, which it would reach last).
    fn next_for(&self, worker: &str) -> Option<usize> {
        let me = self.keepers.iter().position(|k| k == worker);
        let owner = |i: usize| self.owner[self.queue[i] as usize];
        if let Some(me) = me
            && let Some(i) = (0..self.queue.len()).find(|&i| owner(i) == Some(me as u16))
        {
            return Some(i);
        }
        if let Some(i) = (0..self.queue.len()).find(|&i| owner(i).is_none()) {
            return Some(i);
        }
        let mut left = vec![0usize; self.keepers.len()];
        for i in 0..self.queue.len() {
            if let Some(k) = owner(i) {
                left[k as usize] += 1;
            }
        }
        let busiest = (0..left.len()).max_by_key(|&k| (left[k], std::cmp::Reverse(k)))?;
        (0..self.queue.len())
            .rev()
            .find(|&i| owner(i) == Some(busiest as u16))
    }

    /// Pending batches `worker` keeps (or was stocked with), which
    /// [`assign`](Self::assign) gives it first.
    pub fn kept_pending(&self, worker: &str) -> usize {
        let Some(me) = self.keepers.iter().position(|k| k == worker) else {
            return 0;
        };
        self.queue
            .iter()
            .filter(|&&b| self.owner[b as usize] == Some(me as u16))
            .count()
    }

    /// Makes up to `count` pending batches that nobody keeps `worker`'s,
    /// as if it kept them (it is about to be sent their images, ahead of
    /// the round that takes them); returns them. If it goes away, the
    /// others take them last, as any keeper's.
    pub fn reserve(&mut self, worker: &str, count: usize) -> Vec<BatchId> {
        let me = match self.keepers.iter().position(|k| k == worker) {
            Some(me) => me,
            None if self.keepers.len() < usize::from(u16::MAX) => {
                self.keepers.push(worker.to_string());
                self.keepers.len() - 1
            }
            None => return Vec::new(),
        };
        let free: Vec<BatchId> = self
            .queue
            .iter()
            .copied()
            .filter(|&b| self.owner[b as usize].is_none())
            .take(count)
            .collect();
        for &b in &free {
            self.owner[b as usize] = Some(me as u16);
        }
        free
    }

    /// Takes up to `count` batches from the queue for `worker` in `round`:
    /// in queue order, the batches of samples it keeps first.
    pub fn assign(&mut self, worker: &str, round: u64, count: usize) -> Vec<BatchId> {
        let mut taken = Vec::new();
        while taken.len() < count {
            let next = if self.keepers.is_empty() {
                self.queue.pop_front()
            } else {
                self.next_for(worker).and_then(|i| self.queue.remove(i))
            };
            let Some(b) = next else {
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
    fn keepers_get_their_own_samples_first_then_the_rest_then_the_busiest_ones() {
        let mut a = hearth_protocol::SampleSet::new(100);
        let mut b = hearth_protocol::SampleSet::new(100);
        (0..40).for_each(|i| _ = a.admit(i));
        (40..50).for_each(|i| _ = b.admit(i));
        // 100 samples in batches of 8: a keeps 0..40, b 40..50.
        let keepers = [("a".to_string(), &a), ("b".to_string(), &b)];
        let mut l = Ledger::with_keepers(2, 100, 8, 1, &keepers);
        // 5 of a's, 2 of b's (the second short), 7 of the other 50.
        assert_eq!(l.batches(), 14);
        let samples = |l: &Ledger, batches: &[BatchId]| -> Vec<u32> {
            batches
                .iter()
                .flat_map(|&x| l.samples(x).to_vec())
                .collect()
        };
        let got = l.assign("a", 1, 5);
        assert!(samples(&l, &got).iter().all(|&i| i < 40), "a's own");
        let got = l.assign("b", 1, 3);
        let s = samples(&l, &got);
        assert!(
            s[..10].iter().all(|&i| (40..50).contains(&i)),
            "b's own first"
        );
        assert!(s[10..].iter().all(|&i| i >= 50), "then nobody's");
        // A newcomer takes nobody's, and once those are gone, from the busiest.
        let rest = l.assign("c", 1, 6);
        assert!(samples(&l, &rest).iter().all(|&i| i >= 50));
        assert_eq!(l.pending(), 0);
        // Everything once, whoever took it.
        let mut all: Vec<u32> = (0..l.batches() as BatchId)
            .flat_map(|x| l.samples(x).to_vec())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<u32>>());
        // Stealing: a's batches left, b asks.
        let mut l = Ledger::with_keepers(2, 100, 8, 1, &keepers);
        let nobodys = l.assign("x", 1, 7);
        assert!(samples(&l, &nobodys).iter().all(|&i| i >= 50));
        let got = l.assign("b", 2, 3);
        let s = samples(&l, &got);
        assert!(s[..10].iter().all(|&i| (40..50).contains(&i)), "its own");
        assert!(s[10..].iter().all(|&i| i < 40), "then from a, the busiest");
        let own = l.assign("a", 2, 10);
        assert_eq!(own.len(), 4, "a gets the rest of its own");
        assert!(samples(&l, &own).iter().all(|&i| i < 40));
    }

    #[test]
    fn reserved_batches_go_to_their_worker_first_and_to_the_others_last() {
        let mut l = Ledger::new(1, 640, 64, 5);
        assert_eq!(l.kept_pending("a"), 0);
        let reserved = l.reserve("a", 3);
        assert_eq!(reserved.len(), 3);
        assert_eq!(l.kept_pending("a"), 3);
        // A second reservation takes other batches.
        let more = l.reserve("b", 2);
        assert!(more.iter().all(|m| !reserved.contains(m)));
        // b takes its own first, then nobody's; never a's while others are left.
        let got = l.assign("b", 1, 7);
        assert_eq!(&got[..2], &more[..]);
        assert!(got.iter().all(|g| !reserved.contains(g)));
        assert_eq!(l.kept_pending("b"), 0);
        // a takes its reserved batches first.
        let got = l.assign("a", 1, 2);
        assert_eq!(got, reserved[..2].to_vec());
        assert_eq!(l.kept_pending("a"), 1);
        // Nothing left but a's last: another worker takes it (a went away).
        assert_eq!(l.reserve("c", 5), Vec::<BatchId>::new());
        assert_eq!(l.assign("c", 2, 5), vec![reserved[2]]);
        assert_eq!(l.pending(), 0);
    }

    #[test]
    fn shuffles_differ_by_epoch_and_last_batch_is_short() {
        let (l1, l2) = (Ledger::new(1, 100, 64, 3), Ledger::new(2, 100, 64, 3));
        assert_ne!(l1.samples(0), l2.samples(0));
        assert_eq!(l1.samples(1).len(), 36);
    }
}
