//! 2-D convolution (stride 1, square kernel, zero padding) as im2col + GEMM,
//! one sample at a time so the column buffer stays in L1/L2.

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
    ///
    /// This runs once per sample per pass over rows of 8 to 28 floats, so it
    /// works on raw pointers after one size check: in wasm, per-row slicing
    /// and `memory.copy` calls made it six times slower than natively.
    fn im2col(&mut self, x: &[f32]) {
        // Locals, not fields: stores through the column pointer could alias
        // `self` as far as the optimizer knows, forcing reloads per row.
        let (cin, k, pad, ih, iw, oh, ow) = (
            self.cin, self.k, self.pad, self.ih, self.iw, self.oh, self.ow,
        );
        let hw = oh * ow;
        assert!(x.len() >= cin * ih * iw && self.cols.len() >= cin * k * k * hw);
        let ranges: [(usize, usize); 8] =
            core::array::from_fn(|kx| if kx < k { self.valid_ox(kx) } else { (0, 0) });
        assert!(k <= ranges.len(), "kernels up to 8x8");
        let xp = x.as_ptr();
        let cp = self.cols.as_mut_ptr();
        for ci in 0..cin {
            for ky in 0..k {
                for (kx, &(lo, hi)) in ranges.iter().enumerate().take(k) {
                    // SAFETY: the row starts below cin·k·k·hw (asserted above);
                    // each output row writes ow floats inside it; the source
                    // range lo + kx - pad .. hi + kx - pad lies inside input
                    // row iy - pad (valid_ox keeps it within 0..iw).
                    unsafe {
                        let row = cp.add(((ci * k + ky) * k + kx) * hw);
                        for oy in 0..oh {
                            let out = row.add(oy * ow);
                            let iy = oy + ky;
                            if iy < pad || iy - pad >= ih {
                                simd::zero_ptr(out, ow);
                                continue;
                            }
                            let src = xp.add((ci * ih + iy - pad) * iw + lo + kx - pad);
                            simd::zero_ptr(out, lo);
                            simd::copy_ptr(out.add(lo), src, hi - lo);
                            simd::zero_ptr(out.add(hi), ow - hi);
                        }
                    }
                }
            }
        }
    }

    /// Folds `self.dcols` back, adding into one sample's input gradient `dx`.
    fn col2im(&self, dx: &mut [f32]) {
        let (cin, k, pad, ih, iw, oh, ow) = (
            self.cin, self.k, self.pad, self.ih, self.iw, self.oh, self.ow,
        );
        let hw = oh * ow;
        assert!(dx.len() >= cin * ih * iw && self.dcols.len() >= cin * k * k * hw);
        let dp = dx.as_mut_ptr();
        let cp = self.dcols.as_ptr();
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    let (lo, hi) = self.valid_ox(kx);
                    // SAFETY: as in `im2col`, with source and destination swapped.
                    unsafe {
                        let row = cp.add(((ci * k + ky) * k + kx) * hw);
                        for oy in 0..oh {
                            let iy = oy + ky;
                            if iy < pad || iy - pad >= ih {
                                continue;
                            }
                            let dst = dp.add((ci * ih + iy - pad) * iw + lo + kx - pad);
                            simd::add_ptr(dst, row.add(oy * ow + lo), hi - lo);
                        }
                    }
                }
            }
        }
    }

    /// Backward of one sample: `dW += dY·colsᵀ`, `dX = col2im(Wᵀ·dY)`.
    fn backward_sample(
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
            self.backward_sample(w, xb, dyb, dxb, dw, dbias);
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
    fn forward_matches_direct_convolution() {
        let mut c = Conv2d::new("c", 2, 3, 3, 1, 4, 5);
        let n: usize = c.tensors().iter().map(|t| t.numel()).sum();
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
