//! The model on its way down: the whole model in f32 the first time (unless
//! the device holds the run's initial model, built from the seed and named
//! by its digest in the welcome: [`Mirror::initial`]), then the change from
//! the copy the device holds, rounded as its encoding will
//! carry it, with the coordinator's mirror of that copy moved by exactly
//! that so it stays equal to the device's to the bit.
//!
//! Devices that hold the same copy get the same change: it is computed,
//! put in its encoding's bytes, and the resulting copy stored, once per
//! version and copy (the mirrors share that copy). A copy is known by its
//! lineage, an id given to the result of each computation (equal
//! lineages, equal copies: the same first model and the same changes
//! since), so nothing is compared or hashed. In a synchronous household
//! every device holds the same copy, and a round's assignments cost one
//! rounding and one deflating instead of one per device (at 11 devices the
//! coordinator once spent about 9.5 ms between the last result and the
//! assignments, most of it rounding; with 4 instant workers the engine's
//! round went from 1.91–1.97 to 1.09–1.14 ms once the bytes were shared).

use std::sync::Arc;

use hearth_protocol::Encoding;

/// A device's copy of the model as of its last assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    /// The version it was brought to.
    pub version: u64,
    /// The copy, bit for bit as the device holds it (shared by the mirrors
    /// of every device that holds it).
    pub copy: Arc<[f32]>,
    /// Which computation produced it (see the module's doc).
    pub lineage: u64,
}

impl Mirror {
    /// The run's initial model `global` (version 0), as a device that was
    /// told its digest in the welcome builds it from the seed and holds
    /// it: its first assignment is then the change from it (nothing), not
    /// the whole model in f32. If the device's model differs, that
    /// assignment fails and the next brings the whole model.
    pub fn initial(global: &[f32]) -> Self {
        Self {
            version: 0,
            copy: global.into(),
            lineage: INITIAL_LINEAGE,
        }
    }
}

/// The lineage of the initial model every device builds (a [`Memo`]'s
/// own lineages start at 1).
const INITIAL_LINEAGE: u64 = 0;

/// What goes down to one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Downlink {
    /// The values (exact in `encoding`; shared by every device that gets
    /// them).
    pub values: Arc<[f32]>,
    /// Their encoding.
    pub encoding: Encoding,
    /// The version they change (none: the whole model).
    pub base: Option<u64>,
    /// The values put in `encoding`, once for every device that gets them
    /// (deflating a change for 11 devices in turn held the first one's
    /// assignment back by about 4 ms).
    pub wire: Arc<[u8]>,
}

/// One computed step: from a copy (`None`: from nothing, the whole model)
/// in an encoding, to the copy it gives.
#[derive(Debug)]
struct Step {
    from: Option<u64>,
    encoding: Encoding,
    values: Arc<[f32]>,
    wire: Arc<[u8]>,
    copy: Arc<[f32]>,
    lineage: u64,
}

/// The steps computed for one version of the global model (an engine's
/// cache, never saved: mirrors are not either).
#[derive(Debug, Default)]
pub struct Memo {
    version: Option<u64>,
    steps: Vec<Step>,
    next_lineage: u64,
}

impl Memo {
    /// What to send a device whose copy is `mirror` and whose vectors
    /// travel in `encoding`, for `global` at `version`; moves `mirror` to
    /// the copy the device will hold.
    pub fn downlink(
        &mut self,
        mirror: &mut Option<Mirror>,
        encoding: Encoding,
        global: &[f32],
        version: u64,
    ) -> Downlink {
        if !encoding.is_lossy() {
            return Downlink {
                values: global.into(),
                encoding: Encoding::F32,
                base: None,
                wire: wire(Encoding::F32, global),
            };
        }
        if self.version != Some(version) {
            self.version = Some(version);
            self.steps.clear();
        }
        let held = mirror.as_ref().filter(|m| m.copy.len() == global.len());
        let from = held.map(|m| m.lineage);
        let i = match self
            .steps
            .iter()
            .position(|s| s.from == from && s.encoding == encoding)
        {
            Some(i) => i,
            None => {
                let (values, copy): (Vec<f32>, Arc<[f32]>) = match held {
                    Some(m) => {
                        let mut change: Vec<f32> = global
                            .iter()
                            .zip(m.copy.iter())
                            .map(|(g, c)| g - c)
                            .collect();
                        encoding.round_trip(&mut change);
                        let copy = m.copy.iter().zip(&change).map(|(c, d)| c + d).collect();
                        (change, copy)
                    }
                    None => (global.to_vec(), global.into()),
                };
                self.next_lineage += 1;
                // The whole model goes in f32 (see below).
                let sent_in = if held.is_some() {
                    encoding
                } else {
                    Encoding::F32
                };
                self.steps.push(Step {
                    from,
                    encoding,
                    wire: wire(sent_in, &values),
                    values: values.into(),
                    copy,
                    lineage: self.next_lineage,
                });
                self.steps.len() - 1
            }
        };
        let step = &self.steps[i];
        let base = held.map(|m| m.version);
        *mirror = Some(Mirror {
            version,
            copy: step.copy.clone(),
            lineage: step.lineage,
        });
        Downlink {
            values: step.values.clone(),
            encoding: if base.is_some() {
                encoding
            } else {
                Encoding::F32
            },
            base,
            wire: step.wire.clone(),
        }
    }
}

/// `values` put in `encoding`.
fn wire(encoding: Encoding, values: &[f32]) -> Arc<[u8]> {
    let mut bytes = Vec::with_capacity(encoding.max_bytes(values.len()));
    encoding.put(&mut bytes, values);
    bytes.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy a device ends with after applying `sent` to `held`.
    fn apply(held: Option<&[f32]>, sent: &Downlink) -> Vec<f32> {
        // What the device decodes: the wire bytes, not the values.
        let values = sent
            .encoding
            .get(&sent.wire, sent.values.len())
            .unwrap_or_default();
        assert_eq!(values, sent.values.to_vec(), "the wire carries the values");
        match (held, sent.base) {
            (Some(h), Some(_)) => h.iter().zip(&values).map(|(a, d)| a + d).collect(),
            _ => values,
        }
    }

    #[test]
    fn shared_copies_share_a_change_and_every_mirror_stays_exact() {
        let global = |v: u64| -> Vec<f32> {
            (0..200)
                .map(|i| ((i as f32) * 0.37 + v as f32 * 0.11).sin() * 0.3)
                .collect()
        };
        let mut memo = Memo::default();
        // Three devices: two always together, one that misses version 2.
        let mut mirrors: Vec<Option<Mirror>> = vec![None, None, None];
        let mut devices: Vec<Option<Vec<f32>>> = vec![None, None, None];
        for v in 1..=4u64 {
            let g = global(v);
            for d in 0..3 {
                if d == 2 && v == 2 {
                    continue;
                }
                let sent = memo.downlink(&mut mirrors[d], Encoding::Int4, &g, v);
                let now = apply(devices[d].as_deref(), &sent);
                assert_eq!(
                    mirrors[d].as_ref().map(|m| m.copy.to_vec()),
                    Some(now.clone()),
                    "the mirror is the device's copy to the bit"
                );
                devices[d] = Some(now);
            }
            let lineage = |d: usize| mirrors[d].as_ref().map(|m| m.lineage);
            assert_eq!(lineage(0), lineage(1), "the same copy, computed once");
            if v >= 2 {
                assert_ne!(lineage(0), lineage(2), "a device behind holds another copy");
            }
        }
        // Equal lineages hold equal bits (another lineage may too: the
        // laggard's catches up, but it is computed on its own).
        assert_eq!(devices[0], devices[1]);
        // f32 devices get the model itself, with no mirror.
        let mut plain = None;
        let sent = memo.downlink(&mut plain, Encoding::F32, &global(5), 5);
        assert_eq!(
            (sent.values.to_vec(), sent.encoding, sent.base),
            (global(5), Encoding::F32, None)
        );
        assert!(plain.is_none());
    }
}
