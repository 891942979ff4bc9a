//! A round's batches shared among its devices by their measured speed.

use super::WorkerView;

/// Batches per worker: the run's `local_steps` for a worker whose speed is
/// not measured yet (every worker, in the first round), and `local_steps ×
/// growth` per measured worker shared among those by speed: one each, then
/// every further batch to the worker that would finish it soonest (the
/// round ends with its slowest worker, and for batches of one size this
/// gives the shortest round; a newcomer does not reset everyone's shares).
/// Never more than `pending` in all, and all of them when at most half a round
/// would be left.
pub fn shares(
    workers: &[WorkerView],
    local_steps: usize,
    growth: usize,
    pending: usize,
) -> Vec<usize> {
    let per_worker = local_steps * growth.max(1);
    let speeds: Vec<f64> = workers
        .iter()
        .map(|w| w.images_per_second.max(0.0))
        .collect();
    let measured: Vec<usize> = (0..workers.len()).filter(|&i| speeds[i] > 0.0).collect();
    let mut shares: Vec<usize> = speeds
        .iter()
        .map(|&s| if s > 0.0 { 1 } else { local_steps })
        .collect();
    let base: usize = shares.iter().sum();
    let mut extra = (per_worker * measured.len()).saturating_sub(measured.len());
    // A tail of at most half a round is trained with this round, not in
    // a round of its own: a round costs its links and its slowest device
    // whatever its size (at 11 Pi 3s, an epoch's last 14 batches took 138
    // ms for 50 ms of training against 230 ms for a round of 44).
    let planned = base + extra;
    let tail = pending.saturating_sub(planned);
    if !measured.is_empty() && tail > 0 && tail * 2 <= planned {
        extra += tail;
    }
    let room = pending.saturating_sub(base);
    for _ in 0..extra.min(room) {
        let finish = |i: usize| (shares[i] + 1) as f64 / speeds[i];
        let soonest = measured
            .iter()
            .copied()
            .min_by(|&a, &b| finish(a).total_cmp(&finish(b)).then(a.cmp(&b)));
        let Some(i) = soonest else {
            break;
        };
        shares[i] += 1;
    }
    // Never hand out more than is pending; trim from the largest share.
    while shares.iter().sum::<usize>() > pending {
        let Some(i) = (0..shares.len())
            .filter(|&i| shares[i] > 0)
            .max_by_key(|&i| shares[i])
        else {
            break;
        };
        shares[i] -= 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::tests::view;

    /// Shares of a round of 4 local steps, not grown.
    fn batches(workers: &[WorkerView], pending: usize) -> Vec<usize> {
        shares(workers, 4, 1, pending)
    }

    #[test]
    fn rounds_are_shared_by_speed_and_never_exceed_the_queue() {
        // Speeds unknown: the run's local steps each.
        assert_eq!(batches(&[view("a", 0.0), view("b", 0.0)], 100), vec![4, 4]);
        // A newcomer takes the run's local steps; the others keep theirs.
        let grown = shares(&[view("a", 1000.0), view("new", 0.0)], 4, 4, 100);
        assert_eq!(grown, vec![16, 4]);
        // Shares add up to the round exactly.
        assert_eq!(
            batches(
                &[view("a", 1000.0), view("b", 1000.0), view("c", 1000.0)],
                100
            ),
            vec![4, 4, 4]
        );
        let mixed = [
            view("pi3", 1917.0),
            view("pi4", 4808.0),
            view("laptop", 10143.0),
            view("pi3b", 1917.0),
        ];
        // One each, then each batch where it ends soonest: the round lasts
        // 10 laptop batches (0.99 ms a sample here) where rounding each
        // share to its speed (2, 4, 9, 1) would wait 2 Pi 3 batches (1.04).
        assert_eq!(batches(&mixed, 100), vec![1, 4, 10, 1]);
        assert_eq!(
            batches(&[view("pi3", 1000.0), view("laptop", 3000.0)], 100),
            vec![2, 6]
        );
        assert_eq!(
            batches(&[view("a", 1.0), view("b", 1.0)], 3)
                .iter()
                .sum::<usize>(),
            3
        );
        assert!(batches(&[], 10).is_empty());
    }

    #[test]
    fn a_tail_of_at_most_half_a_round_joins_the_round_before_it() {
        let three = [view("a", 1000.0), view("b", 1000.0), view("c", 1000.0)];
        // 12 a round: 5 left after it would be a round of its own.
        assert_eq!(batches(&three, 17), vec![6, 6, 5]);
        // Half a round left: the same. More: a round of its own.
        assert_eq!(batches(&three, 18), vec![6, 6, 6]);
        assert_eq!(batches(&three, 19), vec![4, 4, 4]);
        // Speeds unknown (the first round): as planned.
        assert_eq!(batches(&[view("a", 0.0), view("b", 0.0)], 9), vec![4, 4]);
        // One device, 4 local steps: the epoch's last 2 batches join it.
        assert_eq!(batches(&[view("a", 1000.0)], 6), vec![6]);
    }
}
