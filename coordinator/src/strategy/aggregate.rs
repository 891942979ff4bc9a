//! The shared math of combining updates (as Flower's `aggregate.py`): one
//! vector from the round's results, by the rule the run chose.

use super::{Aggregate, FitResult};

/// Combines `results` (all of length `len`) into one update.
pub fn combine(rule: Aggregate, results: &[FitResult], len: usize) -> Vec<f32> {
    match rule {
        Aggregate::Mean => weighted_mean(results, len),
        Aggregate::Median => coordinate_wise(results, len, |v| {
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                0.5 * (v[n / 2 - 1] + v[n / 2])
            }
        }),
        Aggregate::TrimmedMean => coordinate_wise(results, len, |v| {
            let n = v.len();
            let cut = if n >= 3 { n.div_ceil(5) } else { 0 };
            let kept = &v[cut..n - cut];
            kept.iter().sum::<f32>() / kept.len() as f32
        }),
    }
}

/// The mean of the updates weighted by their samples.
fn weighted_mean(results: &[FitResult], len: usize) -> Vec<f32> {
    let total: f64 = results.iter().map(|c| c.samples as f64).sum();
    let mut mean = vec![0.0f32; len];
    if total <= 0.0 {
        return mean;
    }
    for c in results {
        let weight = (c.samples as f64 / total) as f32;
        for (m, d) in mean.iter_mut().zip(&c.update) {
            *m += weight * d;
        }
    }
    mean
}

/// `pick` applied to each coordinate's values, sorted.
fn coordinate_wise(results: &[FitResult], len: usize, pick: impl Fn(&[f32]) -> f32) -> Vec<f32> {
    let mut column = Vec::with_capacity(results.len());
    (0..len)
        .map(|i| {
            column.clear();
            column.extend(results.iter().map(|r| r.update[i]));
            column.sort_by(f32::total_cmp);
            if column.is_empty() {
                0.0
            } else {
                pick(&column)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(samples: u32, update: Vec<f32>) -> FitResult {
        FitResult {
            worker: String::new(),
            samples,
            update,
        }
    }

    #[test]
    fn one_huge_update_moves_the_median_and_trimmed_mean_not_at_all() {
        let rs = vec![
            r(64, vec![1.0, -1.0]),
            r(64, vec![2.0, -2.0]),
            r(64, vec![3.0, -3.0]),
            r(64, vec![1e30, 1e30]),
        ];
        assert_eq!(combine(Aggregate::Median, &rs, 2), vec![2.5, -1.5]);
        assert_eq!(combine(Aggregate::TrimmedMean, &rs, 2), vec![2.5, -1.5]);
        assert!(combine(Aggregate::Mean, &rs, 2)[0] > 1e29);
        let weighted = combine(Aggregate::Mean, &[r(1, vec![0.0]), r(3, vec![4.0])], 1);
        assert_eq!(weighted, vec![3.0]);
        assert_eq!(combine(Aggregate::Median, &rs[..3], 2), vec![2.0, -2.0]);
    }
}
