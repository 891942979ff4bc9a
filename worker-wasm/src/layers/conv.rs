//! 2-D convolution (stride 1, square kernel, zero padding) as im2col + GEMM,
//! one sample at a time so the column buffer stays in L1/L2.
//!
//! The backward pass looks at the output gradient first: behind a max-pool
//! at least three quarters of it are zero (and ReLU zeroes more), so when
//! most of it is zero, `dW` and `dX` are built from the non-zero entries
//! only (axpy updates on an im2row layout) instead of dense products. The
//! choice depends only on the data, so every target takes the same path.

use super::{Layer, TensorSpec, add_sum};
use crate::gemm::{gemm_nn, gemm_nt};
use crate::simd;

/// `cout` filters of `cin × k × k` over a `cin × ih × iw` input.
pub struct Conv2d {
    name: String,
    cin: usize,
    cout: usize,
    k: usize,
    pad: usize,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    /// im2col buffer: `(cin·k·k) × (oh·ow)`.
    cols: Vec<f32>,
    /// Gradient of `cols` in the backward pass.
    dcols: Vec<f32>,
}

impl Conv2d {
    /// A convolution layer; the output is `cout × (ih + 2·pad − k + 1)²`.
    pub fn new(
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        pad: usize,
        ih: usize,
        iw: usize,
    ) -> Self {
        let oh = ih + 2 * pad + 1 - k;
        let ow = iw + 2 * pad + 1 - k;
        let kk = cin * k * k;
        Self {
            name: name.to_string(),
            cin,
            cout,
            k,
            pad,
            ih,
            iw,
            oh,
            ow,
            cols: vec![0.0; kk * oh * ow],
            dcols: vec![0.0; kk * oh * ow],
        }
    }

    fn kk(&self) -> usize {
        self.cin * self.k * self.k
    }

    /// Range of output columns `ox` whose input column `ox + kx − pad` is inside the image.
    fn valid_ox(&self, kx: usize) -> (usize, usize) {
        let lo = self.pad.saturating_sub(kx);
        let hi = (self.iw + self.pad).saturating_sub(kx).min(self.ow);
        (lo, hi.max(lo))
    }

    /// Unfolds one sample `x` (`cin × ih × iw`) into `self.cols`.
    fn im2col(&mut self, x: &[f32]) {
        let (k, hw) = (self.k, self.oh * self.ow);
        for ci in 0..self.cin {
            for ky in 0..k {
                for kx in 0..k {
                    let (lo, hi) = self.valid_ox(kx);
                    let row = &mut self.cols[((ci * k + ky) * k + kx) * hw..][..hw];
                    for oy in 0..self.oh {
                        let out = &mut row[oy * self.ow..(oy + 1) * self.ow];
                        let iy = oy + ky;
                        if iy < self.pad || iy - self.pad >= self.ih {
                            simd::zero(out);
                            continue;
                        }
                        let src = &x[(ci * self.ih + iy - self.pad) * self.iw..][..self.iw];
                        simd::zero(&mut out[..lo]);
                        simd::copy(
                            &mut out[lo..hi],
                            &src[lo + kx - self.pad..hi + kx - self.pad],
                        );
                        simd::zero(&mut out[hi..]);
                    }
                }
            }
        }
    }

    /// Folds `self.dcols` back, adding into one sample's input gradient `dx`.
    fn col2im(&self, dx: &mut [f32]) {
        let (k, hw) = (self.k, self.oh * self.ow);
        for ci in 0..self.cin {
            for ky in 0..k {
                for kx in 0..k {
                    let row = &self.dcols[((ci * k + ky) * k + kx) * hw..][..hw];
                    let (lo, hi) = self.valid_ox(kx);
                    for oy in 0..self.oh {
                        let iy = oy + ky;
                        if iy < self.pad || iy - self.pad >= self.ih {
                            continue;
                        }
                        let dst = &mut dx[(ci * self.ih + iy - self.pad) * self.iw..][..self.iw];
                        let src = &row[oy * self.ow..(oy + 1) * self.ow];
                        for (d, s) in dst[lo + kx - self.pad..hi + kx - self.pad]
                            .iter_mut()
                            .zip(&src[lo..hi])
                        {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }

    /// Range of kernel columns `kx` whose input column `ox + kx − pad` is inside the image.
    fn valid_kx(&self, ox: usize) -> (usize, usize) {
        let lo = self.pad.saturating_sub(ox).min(self.k);
        let hi = (self.iw + self.pad).saturating_sub(ox).min(self.k);
        (lo, hi.max(lo))
    }

    /// Unfolds one sample into `self.cols` as rows: `(oh·ow) × (cin·k·k)`,
    /// so the receptive field of output position `p` is row `p`.
    fn im2row(&mut self, x: &[f32]) {
        let (k, kk) = (self.k, self.kk());
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let (lo, hi) = self.valid_kx(ox);
                let row = &mut self.cols[(oy * self.ow + ox) * kk..][..kk];
                for ci in 0..self.cin {
                    for ky in 0..k {
                        let dst = &mut row[(ci * k + ky) * k..][..k];
                        let iy = oy + ky;
                        if iy < self.pad || iy - self.pad >= self.ih {
                            simd::zero(dst);
                            continue;
                        }
                        let src = &x[(ci * self.ih + iy - self.pad) * self.iw..][..self.iw];
                        dst[..lo].fill(0.0);
                        simd::copy(
                            &mut dst[lo..hi],
                            &src[ox + lo - self.pad..ox + hi - self.pad],
                        );
                        dst[hi..].fill(0.0);
                    }
                }
            }
        }
    }

    /// Folds rows of `self.dcols` (im2row layout) back, adding into `dx`.
    fn row2im(&self, dx: &mut [f32]) {
        let (k, kk) = (self.k, self.kk());
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let (lo, hi) = self.valid_kx(ox);
                let row = &self.dcols[(oy * self.ow + ox) * kk..][..kk];
                for ci in 0..self.cin {
                    for ky in 0..k {
                        let iy = oy + ky;
                        if iy < self.pad || iy - self.pad >= self.ih {
                            continue;
                        }
                        let dst = &mut dx[(ci * self.ih + iy - self.pad) * self.iw..][..self.iw];
                        let src = &row[(ci * k + ky) * k..][..k];
                        for (d, s) in dst[ox + lo - self.pad..ox + hi - self.pad]
                            .iter_mut()
                            .zip(&src[lo..hi])
                        {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }

    /// Backward of one sample from the non-zero entries of `dyb` only.
    fn backward_sparse(
        &mut self,
        w: &[f32],
        xb: &[f32],
        dyb: &[f32],
        dxb: Option<&mut [f32]>,
        dw: &mut [f32],
        dbias: &mut [f32],
    ) {
        let (kk, hw) = (self.kk(), self.oh * self.ow);
        self.im2row(xb);
        let want_dx = dxb.is_some();
        if want_dx {
            self.dcols.fill(0.0);
        }
        for co in 0..self.cout {
            let dyc = &dyb[co * hw..(co + 1) * hw];
            let dw_row = &mut dw[co * kk..(co + 1) * kk];
            let w_row = &w[co * kk..(co + 1) * kk];
            for (p, &g) in dyc.iter().enumerate() {
                if g != 0.0 {
                    simd::axpy(dw_row, g, &self.cols[p * kk..(p + 1) * kk]);
                    if want_dx {
                        simd::axpy(&mut self.dcols[p * kk..(p + 1) * kk], g, w_row);
                    }
                }
            }
            add_sum(dyc, &mut dbias[co]);
        }
        if let Some(dxb) = dxb {
            dxb.fill(0.0);
            self.row2im(dxb);
        }
    }

    /// Backward of one sample with dense products.
    fn backward_dense(
        &mut self,
        w: &[f32],
        xb: &[f32],
        dyb: &[f32],
        dxb: Option<&mut [f32]>,
        dw: &mut [f32],
        dbias: &mut [f32],
    ) {
        let (kk, hw) = (self.kk(), self.oh * self.ow);
        self.im2col(xb);
        // dW += dY · colsᵀ
        gemm_nt(self.cout, kk, hw, dyb, hw, &self.cols, hw, dw, kk, true);
        for (row, db) in dyb.chunks_exact(hw).zip(dbias.iter_mut()) {
            add_sum(row, db);
        }
        if let Some(dxb) = dxb {
            // dcols = Wᵀ · dY, then fold back onto the input.
            gemm_nn(
                kk,
                hw,
                self.cout,
                w,
                1,
                kk,
                dyb,
                hw,
                &mut self.dcols,
                hw,
                false,
            );
            dxb.fill(0.0);
            self.col2im(dxb);
        }
    }
}

impl Layer for Conv2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> String {
        format!("conv2d {k}x{k} pad {}", self.pad, k = self.k)
    }

    fn out_shape(&self) -> Vec<usize> {
        vec![self.cout, self.oh, self.ow]
    }

    fn in_len(&self) -> usize {
        self.cin * self.ih * self.iw
    }

    fn tensors(&self) -> Vec<TensorSpec> {
        let k2 = self.k * self.k;
        vec![
            TensorSpec {
                name: "weight",
                shape: vec![self.cout, self.cin, self.k, self.k],
                xavier_fans: Some((self.cin * k2, self.cout * k2)),
                wd_mult: 1.0,
            },
            TensorSpec {
                name: "bias",
                shape: vec![self.cout],
                xavier_fans: None,
                wd_mult: 0.0,
            },
        ]
    }

    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], batch: usize) {
        let (kk, hw) = (self.kk(), self.oh * self.ow);
        let (w, bias) = params.split_at(self.cout * kk);
        let (in_len, out_len) = (self.in_len(), self.cout * hw);
        for b in 0..batch {
            self.im2col(&x[b * in_len..(b + 1) * in_len]);
            let yb = &mut y[b * out_len..(b + 1) * out_len];
            for (row, &bv) in yb.chunks_exact_mut(hw).zip(bias) {
                row.fill(bv);
            }
            gemm_nn(self.cout, hw, kk, w, kk, 1, &self.cols, hw, yb, hw, true);
        }
    }

    fn backward(
        &mut self,
        params: &[f32],
        x: &[f32],
        _y: &[f32],
        dy: &[f32],
        mut dx: Option<&mut [f32]>,
        dparams: &mut [f32],
        batch: usize,
    ) {
        let kk = self.kk();
        let w = &params[..self.cout * kk];
        let (dw, dbias) = dparams.split_at_mut(self.cout * kk);
        let (in_len, out_len) = (self.in_len(), self.out_len());
        for b in 0..batch {
            let dyb = &dy[b * out_len..(b + 1) * out_len];
            let xb = &x[b * in_len..(b + 1) * in_len];
            let dxb = dx
                .as_deref_mut()
                .map(|d| &mut d[b * in_len..(b + 1) * in_len]);
            let nonzero = dyb.iter().filter(|&&g| g != 0.0).count();
            if nonzero * 2 <= dyb.len() {
                self.backward_sparse(w, xb, dyb, dxb, dw, dbias);
            } else {
                self.backward_dense(w, xb, dyb, dxb, dw, dbias);
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
        gradcheck::check(&mut Conv2d::new("pad", 2, 3, 3, 1, 5, 5), 2, 1e-2);
        gradcheck::check(&mut Conv2d::new("valid", 3, 2, 3, 0, 6, 6), 2, 1e-2);
        gradcheck::check(&mut Conv2d::new("lenet", 1, 2, 5, 2, 8, 8), 1, 1e-2);
    }

    #[test]
    fn sparse_and_dense_backward_agree() {
        for (pad, k) in [(2, 5), (0, 3), (1, 3)] {
            let mut c = Conv2d::new("c", 2, 3, k, pad, 7, 7);
            let n: usize = c.tensors().iter().map(|t| t.len()).sum();
            let p = gradcheck::values(n, 4);
            let x = gradcheck::values(c.in_len(), 5);
            // Mostly zero output gradient, as behind a max-pool.
            let dy: Vec<f32> = gradcheck::values(c.out_len(), 6)
                .iter()
                .enumerate()
                .map(|(i, v)| if i % 4 == 0 { *v } else { 0.0 })
                .collect();
            let (mut dx1, mut dx2) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            let (mut dp1, mut dp2) = (vec![0.0; n], vec![0.0; n]);
            let (w, _) = p.split_at(c.cout * c.kk());
            let (dw1, db1) = dp1.split_at_mut(c.cout * c.kk());
            c.backward_sparse(w, &x, &dy, Some(&mut dx1), dw1, db1);
            let (dw2, db2) = dp2.split_at_mut(c.cout * c.kk());
            c.backward_dense(w, &x, &dy, Some(&mut dx2), dw2, db2);
            for (a, b) in dp1.iter().zip(&dp2).chain(dx1.iter().zip(&dx2)) {
                assert!((a - b).abs() < 1e-5, "pad {pad} k {k}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn forward_matches_direct_convolution() {
        let mut c = Conv2d::new("c", 2, 3, 3, 1, 4, 5);
        let n: usize = c.tensors().iter().map(|t| t.len()).sum();
        let p = gradcheck::values(n, 9);
        let x = gradcheck::values(c.in_len(), 8);
        let mut y = vec![0.0; c.out_len()];
        c.forward(&p, &x, &mut y, 1);
        for co in 0..3 {
            for oy in 0..4 {
                for ox in 0..5 {
                    let mut s = p[3 * 2 * 9 + co] as f64;
                    for ci in 0..2 {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) =
                                    (oy as isize + ky as isize - 1, ox as isize + kx as isize - 1);
                                if (0..4).contains(&iy) && (0..5).contains(&ix) {
                                    s += p[((co * 2 + ci) * 3 + ky) * 3 + kx] as f64
                                        * x[(ci * 4 + iy as usize) * 5 + ix as usize] as f64;
                                }
                            }
                        }
                    }
                    assert!((y[(co * 4 + oy) * 5 + ox] as f64 - s).abs() < 1e-5);
                }
            }
        }
    }
}
