//! 2×2 pooling with stride 2 (max, or average as in the classic LeNet-5).

use super::Layer;
use crate::simd::F32x4;

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
                        let vectors = ow / 4;
                        for v in 0..vectors {
                            max_pool4(
                                &r0[8 * v..8 * v + 8],
                                &r1[8 * v..8 * v + 8],
                                &mut yrow[4 * v..4 * v + 4],
                                &mut wrow[4 * v..4 * v + 4],
                            );
                        }
                        for ox in 4 * vectors..ow {
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
                let vectors = if max { ow / 4 } else { 0 };
                for v in 0..vectors {
                    let o = oy * ow + 4 * v;
                    max_unpool4(
                        &dyp[o..o + 4],
                        &winner[p * op + o..p * op + o + 4],
                        &mut top[8 * v..8 * v + 8],
                        &mut bottom[8 * v..8 * v + 8],
                    );
                }
                for ox in 4 * vectors..ow {
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

/// Max-pools four windows: `r0` and `r1` are eight inputs of two rows;
/// writes the four maxima and which input of each window won (0..=3, the
/// first maximal one), exactly as the scalar loop does, four lanes at once.
#[inline(always)]
fn max_pool4(r0: &[f32], r1: &[f32], y: &mut [f32], winner: &mut [u8]) {
    let (v0, v1) = F32x4::deinterleave(F32x4::load(r0), F32x4::load(&r0[4..]));
    let (v2, v3) = F32x4::deinterleave(F32x4::load(r1), F32x4::load(&r1[4..]));
    let [i0, i1, i2, i3] = [0.0, 1.0, 2.0, 3.0].map(F32x4::splat);
    let (m01, w01) = (v1.select_gt(v0, v1, v0), v1.select_gt(v0, i1, i0));
    let (m23, w23) = (v3.select_gt(v2, v3, v2), v3.select_gt(v2, i3, i2));
    m23.select_gt(m01, m23, m01).store(y);
    let w = m23.select_gt(m01, w23, w01).to_array();
    for (dst, &i) in winner[..4].iter_mut().zip(&w) {
        *dst = i as u8;
    }
}

/// Backward of [`max_pool4`]: each of the four gradients `dy` goes to its
/// window's winner, zeros to the other inputs.
#[inline(always)]
fn max_unpool4(dy: &[f32], winner: &[u8], top: &mut [f32], bottom: &mut [f32]) {
    let g = F32x4::load(dy);
    let w = F32x4::load(&[
        winner[0] as f32,
        winner[1] as f32,
        winner[2] as f32,
        winner[3] as f32,
    ]);
    let zero = F32x4::zero();
    let cell = |i: f32| w.select_eq(F32x4::splat(i), g, zero);
    let (t0, t1) = F32x4::interleave(cell(0.0), cell(1.0));
    let (b0, b1) = F32x4::interleave(cell(2.0), cell(3.0));
    t0.store(top);
    t1.store(&mut top[4..]);
    b0.store(bottom);
    b1.store(&mut bottom[4..]);
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

    /// Rows wide enough for the four-window path and a scalar tail, with
    /// ties (zeros, as behind a ReLU) and NaN-free values: the vector path
    /// picks the same maxima and winners as the scalar rule, and the
    /// gradient goes to exactly the winners.
    #[test]
    fn four_window_path_matches_the_scalar_rule() {
        let (c, ih, iw) = (2, 4, 12);
        let mut p = Pool2x2::new("m", PoolKind::Max, c, ih, iw);
        let x: Vec<f32> = (0..c * ih * iw)
            .map(|i| {
                if i % 3 == 0 {
                    0.0
                } else {
                    ((i * 37) % 11) as f32 - 5.0
                }
            })
            .collect();
        let (oh, ow) = (ih / 2, iw / 2);
        let mut y = vec![f32::NAN; c * oh * ow];
        p.forward(&[], &x, &mut y, 1);
        let dy: Vec<f32> = (0..y.len()).map(|i| i as f32 + 1.0).collect();
        let mut dx = vec![f32::NAN; x.len()];
        p.backward(&[], &x, &y, &dy, Some(&mut dx), &mut [], 1);
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let at = |dy: usize, dx: usize| (ch * ih + 2 * oy + dy) * iw + 2 * ox + dx;
                    let cells = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                    let (mut best, mut win) = (x[cells[0]], 0);
                    for (i, &cell) in cells.iter().enumerate().skip(1) {
                        // First maximal input wins.
                        if x[cell] > best {
                            (best, win) = (x[cell], i);
                        }
                    }
                    let o = (ch * oh + oy) * ow + ox;
                    assert_eq!(y[o], best, "max at {ch},{oy},{ox}");
                    for (i, &cell) in cells.iter().enumerate() {
                        let want = if i == win { dy[o] } else { 0.0 };
                        assert_eq!(dx[cell], want, "gradient at {ch},{oy},{ox} cell {i}");
                    }
                }
            }
        }
    }
}
