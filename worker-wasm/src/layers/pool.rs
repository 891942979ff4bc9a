//! 2×2 pooling with stride 2 (max, or average as in the classic LeNet-5).

use super::Layer;

/// Which reduction a [`Pool2x2`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Maximum of the window; the gradient goes to the first maximal input.
    Max,
    /// Mean of the window.
    Avg,
}

/// Halves height and width of each channel.
pub struct Pool2x2 {
    name: String,
    kind: PoolKind,
    c: usize,
    ih: usize,
    iw: usize,
    /// Max-pool only: which of the four inputs (0..=3) won, per output.
    winner: Vec<u8>,
}

impl Pool2x2 {
    /// A pooling layer over `c × ih × iw` (both even).
    pub fn new(name: &str, kind: PoolKind, c: usize, ih: usize, iw: usize) -> Self {
        debug_assert!(ih.is_multiple_of(2) && iw.is_multiple_of(2));
        Self {
            name: name.to_string(),
            kind,
            c,
            ih,
            iw,
            winner: Vec::new(),
        }
    }
}

impl Layer for Pool2x2 {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> String {
        match self.kind {
            PoolKind::Max => "max-pool 2x2".into(),
            PoolKind::Avg => "avg-pool 2x2".into(),
        }
    }

    fn out_shape(&self) -> Vec<usize> {
        vec![self.c, self.ih / 2, self.iw / 2]
    }

    fn in_len(&self) -> usize {
        self.c * self.ih * self.iw
    }

    fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], batch: usize) {
        let (iw, ow, oh) = (self.iw, self.iw / 2, self.ih / 2);
        let planes = batch * self.c;
        let (ip, op) = (self.ih * iw, oh * ow);
        match self.kind {
            PoolKind::Max => {
                if self.winner.len() < planes * op {
                    self.winner.resize(planes * op, 0);
                }
                let winner = &mut self.winner[..planes * op];
                for ((xp, yp), wp) in x[..planes * ip]
                    .chunks_exact(ip)
                    .zip(y[..planes * op].chunks_exact_mut(op))
                    .zip(winner.chunks_exact_mut(op))
                {
                    for oy in 0..oh {
                        let (r0, r1) = xp[2 * oy * iw..(2 * oy + 2) * iw].split_at(iw);
                        let (yrow, wrow) = (
                            &mut yp[oy * ow..(oy + 1) * ow],
                            &mut wp[oy * ow..(oy + 1) * ow],
                        );
                        for ox in 0..ow {
                            let v = [r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]];
                            // First maximal input wins (strict comparisons, as selects).
                            let (m01, i01) = if v[1] > v[0] { (v[1], 1) } else { (v[0], 0) };
                            let (m23, i23) = if v[3] > v[2] { (v[3], 3) } else { (v[2], 2) };
                            let (m, i) = if m23 > m01 { (m23, i23) } else { (m01, i01) };
                            yrow[ox] = m;
                            wrow[ox] = i;
                        }
                    }
                }
            }
            PoolKind::Avg => {
                for (xp, yp) in x[..planes * ip]
                    .chunks_exact(ip)
                    .zip(y[..planes * op].chunks_exact_mut(op))
                {
                    for oy in 0..oh {
                        let (r0, r1) = xp[2 * oy * iw..(2 * oy + 2) * iw].split_at(iw);
                        for (ox, out) in yp[oy * ow..(oy + 1) * ow].iter_mut().enumerate() {
                            *out = ((r0[2 * ox] + r0[2 * ox + 1]) + (r1[2 * ox] + r1[2 * ox + 1]))
                                * 0.25;
                        }
                    }
                }
            }
        }
    }

    fn backward(
        &mut self,
        _params: &[f32],
        _x: &[f32],
        _y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        _dparams: &mut [f32],
        batch: usize,
    ) {
        let Some(dx) = dx else { return };
        let (iw, ow, oh) = (self.iw, self.iw / 2, self.ih / 2);
        let planes = batch * self.c;
        let (ip, op) = (self.ih * iw, oh * ow);
        let max = self.kind == PoolKind::Max;
        let winner = &self.winner[..if max { planes * op } else { 0 }];
        for (p, (dxp, dyp)) in dx[..planes * ip]
            .chunks_exact_mut(ip)
            .zip(dy[..planes * op].chunks_exact(op))
            .enumerate()
        {
            for oy in 0..oh {
                let (top, bottom) = dxp[2 * oy * iw..(2 * oy + 2) * iw].split_at_mut(iw);
                for ox in 0..ow {
                    let o = oy * ow + ox;
                    let g = dyp[o];
                    let cells = if max {
                        let mut c = [0.0; 4];
                        c[winner[p * op + o] as usize & 3] = g;
                        c
                    } else {
                        [g * 0.25; 4]
                    };
                    top[2 * ox] = cells[0];
                    top[2 * ox + 1] = cells[1];
                    bottom[2 * ox] = cells[2];
                    bottom[2 * ox + 1] = cells[3];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck;

    #[test]
    fn gradients_match_finite_differences() {
        // Random inputs have no ties, so max-pool is differentiable there.
        gradcheck::check(&mut Pool2x2::new("max", PoolKind::Max, 2, 4, 6), 2, 1e-3);
        gradcheck::check(&mut Pool2x2::new("avg", PoolKind::Avg, 2, 4, 6), 2, 1e-2);
    }

    #[test]
    fn max_pool_picks_the_maximum() {
        let mut p = Pool2x2::new("m", PoolKind::Max, 1, 2, 4);
        let x = [1.0, 5.0, -1.0, -2.0, 3.0, 2.0, -3.0, -0.5];
        let mut y = [0.0; 2];
        p.forward(&[], &x, &mut y, 1);
        assert_eq!(y, [5.0, -0.5]);
    }
}
