//! The worker's side of compact vectors: its copy of the model (what an
//! assignment that sends only the change adds to), and the error feedback
//! of its lossy updates (what rounding lost this round is sent with the
//! next one, so nothing is lost for good).

use hearth_protocol::{Assign, Encoding, RoundResult, UpdateKind};

/// One connection's copy of the model and residual.
#[derive(Debug, Default)]
pub struct Compact {
    /// The parameters of the last assignment, and their version.
    held: Option<(u64, Vec<f32>)>,
    /// What rounding took from the updates sent so far.
    residual: Vec<f32>,
}

impl Compact {
    /// Forgets everything (a new connection: the coordinator starts afresh too).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// The global parameters `a` stands for, kept as the copy the next
    /// assignment may build on; an error if it builds on a copy this
    /// worker does not hold.
    pub fn params(&mut self, a: &Assign) -> Result<&[f32], String> {
        let params = match (a.params_base, self.held.take()) {
            (None, _) => a.params.clone(),
            (Some(base), Some((version, mut held)))
                if version == base && held.len() == a.params.len() =>
            {
                for (h, d) in held.iter_mut().zip(&a.params) {
                    *h += d;
                }
                held
            }
            (Some(base), held) => {
                return Err(format!(
                    "the assignment changes parameter version {base}, this worker holds {}",
                    held.map_or("none".to_string(), |(v, _)| format!("version {v}"))
                ));
            }
        };
        let (_, held) = self.held.insert((a.params_version, params));
        Ok(held)
    }

    /// Holds `params` as the copy of version `version` (the initial model
    /// the worker built, when the coordinator names it in its welcome).
    pub fn hold(&mut self, version: u64, params: Vec<f32>) {
        self.held = Some((version, params));
    }

    /// The copy of the global model held (that of the last assignment), if any.
    pub fn held(&self) -> Option<&[f32]> {
        self.held.as_ref().map(|(_, held)| held.as_slice())
    }

    /// Puts `r`'s vector in `encoding`: a lossy delta carries the residual
    /// of the rounds before and keeps what this rounding loses.
    pub fn pack(&mut self, r: &mut RoundResult, encoding: Encoding) {
        r.encoding = encoding;
        if !encoding.is_lossy() {
            return;
        }
        if r.kind != UpdateKind::Delta {
            encoding.round_trip(&mut r.values);
            return;
        }
        if self.residual.len() != r.values.len() {
            self.residual = vec![0.0; r.values.len()];
        }
        // The residual buffer holds what should go out, then what did not.
        for (v, e) in r.values.iter_mut().zip(self.residual.iter_mut()) {
            *v += *e;
            *e = *v;
        }
        encoding.round_trip(&mut r.values);
        for (e, v) in self.residual.iter_mut().zip(&r.values) {
            *e -= v;
            // A non-finite update is refused by the coordinator: carry nothing of it.
            if !e.is_finite() {
                *e = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(version: u64, base: Option<u64>, params: Vec<f32>) -> Assign {
        Assign {
            round: version,
            params_version: version,
            learning_rate: 0.1,
            steps: vec![],
            reply: UpdateKind::Delta,
            params,
            params_encoding: Encoding::Int8,
            params_base: base,
            reply_encoding: Encoding::Int8,
            shift: 0,
            prefetched: false,
            pixels: vec![],
            labels: vec![],
            cache: None,
            component: String::new(),
        }
    }

    #[test]
    fn a_change_is_added_to_the_copy_it_names_and_only_to_that() {
        let mut c = Compact::default();
        assert!(
            c.params(&assign(1, Some(0), vec![1.0])).is_err(),
            "no copy yet"
        );
        assert_eq!(
            c.params(&assign(1, None, vec![1.0, 2.0])),
            Ok(&[1.0, 2.0][..])
        );
        assert_eq!(
            c.params(&assign(2, Some(1), vec![0.5, -1.0])),
            Ok(&[1.5, 1.0][..])
        );
        let e = c.params(&assign(4, Some(3), vec![0.0, 0.0])).unwrap_err();
        assert!(e.contains("holds version 2"), "{e}");
        // After a refusal nothing is held: only a whole model helps.
        assert!(c.params(&assign(4, Some(2), vec![0.0, 0.0])).is_err());
    }

    #[test]
    fn error_feedback_sends_in_later_rounds_what_rounding_took() {
        // The same small change every round: int8 and int4 round most of it
        // away in a block dominated by one large value, but the sum over
        // rounds arrives, to within half a step of the block's scale.
        for (encoding, half_step) in [(Encoding::Int8, 1.0 / 128.0), (Encoding::Int4, 1.0 / 8.0)] {
            let mut c = Compact::default();
            let (rounds, small) = (50, 0.003f32);
            let mut sent = 0.0f64;
            for round in 0..rounds {
                let mut values = vec![small; 64];
                values[0] = 1.0;
                let mut r = RoundResult {
                    round,
                    params_version: round,
                    samples: 1,
                    loss_sum: 0.0,
                    correct: 0,
                    kind: UpdateKind::Delta,
                    values,
                    encoding: Encoding::F32,
                    compute_seconds: 0.0,
                };
                c.pack(&mut r, encoding);
                assert_eq!(r.encoding, encoding);
                sent += f64::from(r.values[1]);
            }
            let wanted = f64::from(small) * f64::from(rounds as u32);
            assert!(
                (sent - wanted).abs() <= half_step + 1e-6,
                "{encoding}: sent {sent}, wanted {wanted}"
            );
        }
    }
}
