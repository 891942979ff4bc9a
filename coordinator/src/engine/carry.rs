//! What a round's messages carry of its samples: the images a worker does
//! not keep (and references to those it does), and the local steps they
//! are split into.

use hearth_protocol as proto;

use super::state::WorkerSlot;
use crate::strategy::split_steps;

/// What a message carries of a round's samples.
pub(super) struct Images {
    /// Pixels of the samples sent.
    pub pixels: Vec<u8>,
    /// Their labels.
    pub labels: Vec<u8>,
    /// Which samples they are, if the worker keeps samples.
    pub cache: Option<proto::SampleRefs>,
}

/// The images of `batches` for worker `w`: only those it does not keep, if
/// it keeps samples (its mirror then keeps the ones sent, as it will).
pub(super) fn images(
    train: &hearth_mnist::Split,
    ledger: &crate::ledger::Ledger,
    batches: &[crate::ledger::BatchId],
    w: &mut WorkerSlot,
) -> Images {
    let ids: Vec<u32> = batches
        .iter()
        .flat_map(|&b| ledger.samples(b).iter().copied())
        .collect();
    let cache = (w.samples.capacity() > 0)
        .then(|| w.samples.refer(&ids, std::mem::take(&mut w.samples_reset)));
    let sent: Vec<usize> = match &cache {
        Some(refs) => ids
            .iter()
            .zip(&refs.held)
            .filter(|(_, held)| !**held)
            .map(|(&i, _)| i as usize)
            .collect(),
        None => ids.iter().map(|&i| i as usize).collect(),
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    train.gather(&sent, &mut pixels, &mut labels);
    Images {
        pixels,
        labels,
        cache,
    }
}

/// The samples of `batches` split into `steps` local steps.
pub(super) fn round_steps(
    ledger: &crate::ledger::Ledger,
    batches: &[crate::ledger::BatchId],
    steps: usize,
) -> Vec<u32> {
    let samples = batches.iter().map(|&b| ledger.samples(b).len()).sum();
    split_steps(samples, steps)
}
