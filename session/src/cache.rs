//! The worker's cache of training samples: what it was sent once, kept so
//! that later rounds can name it instead of sending it again (the rule is
//! [`hearth_protocol::SampleSet`]'s, which the coordinator mirrors).

use hearth_protocol::{IMAGE_LEN, SampleRefs, SampleSet};

/// Samples a device keeps unless told otherwise: all of MNIST's training
/// set (60,000 × 785 bytes, 47 MB; a device keeps only what it is sent).
pub const DEFAULT_SAMPLE_CACHE: u32 = 60_000;

/// The samples a worker holds: their pixels and labels by slot.
#[derive(Debug, Default)]
pub struct SampleCache {
    set: SampleSet,
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

impl SampleCache {
    /// An empty cache of up to `capacity` samples.
    pub fn new(capacity: u32) -> Self {
        Self {
            set: SampleSet::new(capacity as usize),
            pixels: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Forgets everything (a new connection, or a reset).
    pub fn clear(&mut self) {
        self.set.clear();
        self.pixels.clear();
        self.labels.clear();
    }

    /// The whole round's pixels and labels, in the order of `refs.ids`:
    /// held samples from the cache, the others from `pixels` and `labels`
    /// (those sent, in order), which are kept as the rule says. An error
    /// (and an emptied cache: the coordinator resets after a failed round)
    /// if a sample said to be held is not, or the sent ones do not match.
    pub fn expand(
        &mut self,
        refs: &SampleRefs,
        pixels: &[u8],
        labels: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        self.admit(refs, pixels, labels, true)
    }

    /// Keeps samples sent ahead of the round that will name them (a
    /// [`hearth_protocol::Stock`]), by the same rule as
    /// [`expand`](Self::expand), without copying the images out.
    pub fn keep(&mut self, refs: &SampleRefs, pixels: &[u8], labels: &[u8]) -> Result<(), String> {
        self.admit(refs, pixels, labels, false).map(|_| ())
    }

    /// Keeps the sent samples by the rule, and with `copy` returns the
    /// whole round's images; empties the cache first on a reset, and on
    /// an error.
    fn admit(
        &mut self,
        refs: &SampleRefs,
        pixels: &[u8],
        labels: &[u8],
        copy: bool,
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        if refs.reset {
            self.clear();
        }
        let admitted = self.admit_inner(refs, pixels, labels, copy);
        if admitted.is_err() {
            self.clear();
        }
        admitted
    }

    fn admit_inner(
        &mut self,
        refs: &SampleRefs,
        pixels: &[u8],
        labels: &[u8],
        copy: bool,
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        if refs.ids.len() != refs.held.len() || pixels.len() != labels.len() * IMAGE_LEN {
            return Err("sample references that do not fit the images sent".into());
        }
        let n = refs.ids.len();
        let room = if copy { n * IMAGE_LEN } else { 0 };
        let (mut out_pixels, mut out_labels) = (Vec::with_capacity(room), Vec::new());
        let mut sent = 0;
        for (&id, &held) in refs.ids.iter().zip(&refs.held) {
            if held {
                let slot = self.set.slot(id).ok_or_else(|| {
                    format!("sample {id} was named as held, but this device has not kept it")
                })? as usize;
                if copy {
                    out_pixels
                        .extend_from_slice(&self.pixels[slot * IMAGE_LEN..(slot + 1) * IMAGE_LEN]);
                    out_labels.push(self.labels[slot]);
                }
                continue;
            }
            let (Some(image), Some(&label)) = (
                pixels.get(sent * IMAGE_LEN..(sent + 1) * IMAGE_LEN),
                labels.get(sent),
            ) else {
                return Err(format!("fewer samples sent than the {n} named need"));
            };
            sent += 1;
            if self.set.admit(id).is_some() {
                self.pixels.extend_from_slice(image);
                self.labels.push(label);
            }
            if copy {
                out_pixels.extend_from_slice(image);
                out_labels.push(label);
            }
        }
        if sent != labels.len() {
            return Err(format!("{} samples sent, {sent} named", labels.len()));
        }
        Ok((out_pixels, out_labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(v: u8) -> Vec<u8> {
        vec![v; IMAGE_LEN]
    }

    #[test]
    fn held_samples_come_back_as_they_were_sent_and_the_coordinator_agrees() {
        let mut mirror = SampleSet::new(2);
        let mut cache = SampleCache::new(2);
        // Round 1: samples 10 and 20 sent in full.
        let refs = mirror.refer(&[10, 20], false);
        let sent = [image(1), image(2)].concat();
        let (p, l) = cache.expand(&refs, &sent, &[1, 2]).unwrap();
        assert_eq!((p, l), (sent.clone(), vec![1, 2]));
        // Round 2: 20 held, 30 sent (and not kept: the cache is full).
        let refs = mirror.refer(&[20, 30], false);
        assert_eq!(refs.held, vec![true, false]);
        let (p, l) = cache.expand(&refs, &image(3), &[3]).unwrap();
        assert_eq!((p, l), ([image(2), image(3)].concat(), vec![2, 3]));
        // Round 3: 30 is sent again, 10 is held.
        let refs = mirror.refer(&[30, 10], false);
        assert_eq!(refs.held, vec![false, true]);
        let (p, _) = cache.expand(&refs, &image(3), &[3]).unwrap();
        assert_eq!(p, [image(3), image(1)].concat());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn stocked_samples_are_kept_for_the_round_that_names_them() {
        let mut mirror = SampleSet::new(4);
        let mut cache = SampleCache::new(4);
        let refs = mirror.refer(&[7, 8], false);
        cache
            .keep(&refs, &[image(7), image(8)].concat(), &[7, 8])
            .unwrap();
        assert_eq!(cache.len(), 2);
        let refs = mirror.refer(&[8, 9, 7], false);
        assert_eq!(refs.held, vec![true, false, true]);
        let (p, l) = cache.expand(&refs, &image(9), &[9]).unwrap();
        assert_eq!(
            (p, l),
            ([image(8), image(9), image(7)].concat(), vec![8, 9, 7])
        );
        // A stock whose images do not fit what it names keeps nothing.
        let bad = mirror.refer(&[1, 2], false);
        assert!(cache.keep(&bad, &image(1), &[1]).is_err());
        assert_eq!(cache.len(), 0, "emptied, as after any bad images");
    }

    #[test]
    fn a_sample_it_does_not_hold_is_an_error_and_empties_the_cache() {
        let mut cache = SampleCache::new(4);
        let mut mirror = SampleSet::new(4);
        cache
            .expand(&mirror.refer(&[1], false), &image(1), &[1])
            .unwrap();
        let lie = SampleRefs {
            ids: vec![1, 2],
            held: vec![true, true],
            reset: false,
        };
        let e = cache.expand(&lie, &[], &[]).unwrap_err();
        assert!(e.contains("sample 2"), "{e}");
        assert_eq!(cache.len(), 0, "emptied: the coordinator resets too");
        // Too few or too many images for what is named.
        let refs = SampleRefs {
            ids: vec![5, 6],
            held: vec![false, false],
            reset: true,
        };
        assert!(cache.expand(&refs, &image(5), &[5]).is_err());
        let three = [image(5), image(6), image(7)].concat();
        assert!(cache.expand(&refs, &three, &[5, 6, 7]).is_err());
        // A reset forgets what was held.
        let (ok, _) = cache
            .expand(&refs, &[image(5), image(6)].concat(), &[5, 6])
            .unwrap();
        assert_eq!(ok.len(), 2 * IMAGE_LEN);
        let reset = SampleRefs {
            ids: vec![5],
            held: vec![true],
            reset: true,
        };
        assert!(cache.expand(&reset, &[], &[]).is_err());
    }
}
