//! The worker's cache of training samples, and the coordinator's mirror of
//! it: images a device already holds are named by their index, not sent
//! again (protocol v7).
//!
//! Both sides run the same rule ([`SampleSet::admit`]) on the same
//! messages in the same order, so the coordinator knows exactly what each
//! device holds without being told: a sample sent in full is kept if it is
//! not held yet and there is room; nothing is ever evicted. A message with
//! [`SampleRefs::reset`] empties both (after a failed round, when the two
//! may disagree).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Which samples a message's images are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SampleRefs {
    /// Training-set index of every sample of the message, in order.
    pub ids: Vec<u32>,
    /// For each of `ids`: true if the worker holds it (its pixels and
    /// label are not in the message); false if it comes in the message (the
    /// message's images are the sent ones, in order).
    pub held: Vec<bool>,
    /// The worker empties its cache before this message.
    pub reset: bool,
}

impl SampleRefs {
    /// Samples sent in full.
    pub fn sent(&self) -> usize {
        self.held.iter().filter(|&&h| !h).count()
    }
}

/// The indices a cache holds, each with its slot (the order it came in),
/// up to a capacity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleSet {
    capacity: usize,
    slots: HashMap<u32, u32>,
}

impl SampleSet {
    /// An empty set that will hold up to `capacity` samples (0: none).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            slots: HashMap::new(),
        }
    }

    /// Samples it may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples it holds.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot of `id`, if held.
    pub fn slot(&self, id: u32) -> Option<u32> {
        self.slots.get(&id).copied()
    }

    /// True if `id` is held.
    pub fn holds(&self, id: u32) -> bool {
        self.slots.contains_key(&id)
    }

    /// Empties it.
    pub fn clear(&mut self) {
        self.slots.clear();
    }

    /// `id` was sent in full: keeps it if it is not held and there is room.
    /// Returns the new slot, if it was kept.
    pub fn admit(&mut self, id: u32) -> Option<u32> {
        if self.slots.len() >= self.capacity || self.slots.contains_key(&id) {
            return None;
        }
        let slot = self.slots.len() as u32;
        self.slots.insert(id, slot);
        Some(slot)
    }

    /// The coordinator's side: the references for a message of samples
    /// `ids` (emptying the set first if `reset`), admitting those it sends.
    pub fn refer(&mut self, ids: &[u32], reset: bool) -> SampleRefs {
        if reset {
            self.clear();
        }
        let mut held = Vec::with_capacity(ids.len());
        for &id in ids {
            let h = self.holds(id);
            if !h {
                self.admit(id);
            }
            held.push(h);
        }
        SampleRefs {
            ids: ids.to_vec(),
            held,
            reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_samples_are_kept_while_there_is_room_and_then_referred_to() {
        let mut s = SampleSet::new(3);
        let r = s.refer(&[5, 7, 5], false);
        // 5 is sent once; a repeat within the same message is already held
        // (the worker admits in the same order, so both sides agree).
        assert_eq!(r.held, vec![false, false, true]);
        assert_eq!(r.sent(), 2);
        let r = s.refer(&[7, 9, 11, 5], false);
        assert_eq!(r.held, vec![true, false, false, true]);
        assert_eq!(s.len(), 3, "full: 11 is sent and not kept");
        assert!(!s.holds(11));
        let r = s.refer(&[11, 5], true);
        assert_eq!(r.held, vec![false, false], "a reset forgets everything");
        assert_eq!((s.slot(11), s.slot(5)), (Some(0), Some(1)));
        let mut none = SampleSet::new(0);
        assert_eq!(none.refer(&[1, 1], false).held, vec![false, false]);
    }
}
