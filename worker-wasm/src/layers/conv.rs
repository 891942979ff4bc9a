//! 2-D convolution (stride 1, square kernel, zero padding) as im2col + GEMM,
//! one sample at a time so the column buffer stays in L1/L2.
//!
//! The weight gradient skips zeros: behind a max-pool three of every four
//! output gradients are zero (more behind a ReLU), so when at most half of a
//! sample's `dY` is non-zero, `dW` is computed from the non-zeros alone, with
//! the input unfolded per output position (im2row) and register-blocked
//! accumulators. That does a quarter of the multiply-adds of the dense product.

use super::sparse::{MAX_KKP, compact_nonzeros, sparse_rows};
use super::{Layer, TensorSpec, add_sum};
use crate::gemm::{gemm_nn, gemm_nt};
use crate::simd::{self, F32x4};

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
    /// im2col buffer: `(cin·k·k) × (oh·ow)`, and 4 spare floats.
    cols: Vec<f32>,
    /// Gradient of `cols` in the backward pass.
    dcols: Vec<f32>,
    /// im2row buffer: `(oh·ow) × kkp` (rows padded to `kkp`), and 8 spare floats.
    rows: Vec<f32>,
    /// `cin·k·k` rounded up to a multiple of 4.
    kkp: usize,
    /// One input sample with a zero border of `pad` (the border is never
    /// written), and 8 spare floats, so rows can be read as whole vectors.
    padded: Vec<f32>,
    /// One sample's input gradient with a border of `pad` (sparse `dX`).
    dpadded: Vec<f32>,
    /// The filters, rows padded with zeros to `kkp` (`cout × kkp`).
    wpad: Vec<f32>,
    /// Positions and values of one channel's non-zero output gradients.
    nz_pos: Vec<u32>,
    /// (values of the above)
    nz_val: Vec<f32>,
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
        let kkp = kk.next_multiple_of(4);
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
            cols: vec![0.0; kk * oh * ow + 4],
            dcols: vec![0.0; kk * oh * ow + 4],
            rows: vec![0.0; kkp * oh * ow + 8],
            kkp,
            padded: vec![0.0; cin * (ih + 2 * pad) * (iw + 2 * pad) + 8],
            dpadded: vec![0.0; cin * (ih + 2 * pad) * (iw + 2 * pad)],
            wpad: vec![0.0; cout * kkp],
            nz_pos: Vec::with_capacity(oh * ow),
            nz_val: Vec::with_capacity(oh * ow),
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

    /// Copies one sample `x` (`cin × ih × iw`) into the interior of
    /// `self.padded`, whose zero border is never written.
    fn fill_padded(&mut self, x: &[f32]) {
        let (cin, pad, ih, iw) = (self.cin, self.pad, self.ih, self.iw);
        let (ph, pw) = (ih + 2 * pad, iw + 2 * pad);
        for ci in 0..cin {
            for iy in 0..ih {
                let dst = &mut self.padded[(ci * ph + iy + pad) * pw + pad..][..iw];
                simd::copy(dst, &x[(ci * ih + iy) * iw..][..iw]);
            }
        }
    }

    /// Unfolds one sample `x` (`cin × ih × iw`) into `self.cols`.
    fn im2col(&mut self, x: &[f32]) {
        self.fill_padded(x);
        // Literal sizes let the compiler turn each row copy into straight-line
        // code; in wasmtime every loop iteration also pays an epoch check.
        match (self.k, self.ow) {
            (5, 28) => self.im2col_k(5, 28),
            (5, 24) => self.im2col_k(5, 24),
            (5, 10) => self.im2col_k(5, 10),
            (5, 8) => self.im2col_k(5, 8),
            (k, ow) => self.im2col_k(k, ow),
        }
    }

    /// [`Self::im2col`] from `self.padded`, for kernel size `k` and output
    /// width `ow` (inlined so both can be constants).
    ///
    /// Row `(ci·k + ky)·k + kx` of `cols`, output row `oy`, is the `ow`
    /// floats of padded row `oy + ky` from column `kx`: one contiguous copy,
    /// moved as whole vectors. The up to three extra floats land where the
    /// next output row (or the spare tail of `cols`) is written afterwards.
    #[inline(always)]
    fn im2col_k(&mut self, k: usize, ow: usize) {
        let (cin, pad, ih, iw, oh) = (self.cin, self.pad, self.ih, self.iw, self.oh);
        let (ph, pw, hw) = (ih + 2 * pad, iw + 2 * pad, oh * ow);
        let nv = ow.div_ceil(4);
        assert!(ow == self.ow && self.cols.len() >= cin * k * k * hw + 4);
        assert!(self.padded.len() >= cin * ph * pw + 8);
        let xp = self.padded.as_ptr();
        let cp = self.cols.as_mut_ptr();
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    // SAFETY: the store for output row oy spans
                    // row·hw + oy·ow .. + 4·nv < cin·k·k·hw + 4 ≤ cols.len()
                    // (asserted). The load starts at
                    // (ci·ph + oy + ky)·pw + kx, with oy + ky < ph and
                    // kx + ow ≤ pw, and spans 4·nv < ow + 4 floats: it ends
                    // before cin·ph·pw + 4 ≤ padded.len() (asserted).
                    unsafe {
                        let row = cp.add(((ci * k + ky) * k + kx) * hw);
                        for oy in 0..oh {
                            let out = row.add(oy * ow);
                            let src = xp.add((ci * ph + oy + ky) * pw + kx);
                            for v in 0..nv {
                                F32x4::load_ptr(src.add(4 * v)).store_ptr(out.add(4 * v));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Unfolds one sample `x` per output position into `self.rows`:
    /// `rows[p·kkp + (ci·k + ky)·k + kx]` is the input under tap (ky, kx) of
    /// channel ci for output position p. The padding lanes hold arbitrary
    /// finite values (they only meet lanes that are dropped).
    fn im2row(&mut self, x: &[f32]) {
        // A literal kernel size lets the compiler unroll the per-tap-row
        // work into straight-line code (LeNet uses 5×5 only).
        match self.k {
            5 => self.im2row_k(x, 5),
            k => self.im2row_k(x, k),
        }
    }

    /// [`Self::im2row`] for kernel size `k` (inlined so `k` can be a constant).
    ///
    /// The input is first copied into a zero-bordered buffer, so every tap
    /// row is `k ≤ 8` contiguous floats, moved as two whole vectors: the
    /// three to seven extra floats land where the next tap row (or the next
    /// position, or the padding lanes) is written afterwards.
    #[inline(always)]
    fn im2row_k(&mut self, x: &[f32], k: usize) {
        let (cin, pad, ih, iw, oh, ow, kkp) = (
            self.cin, self.pad, self.ih, self.iw, self.oh, self.ow, self.kkp,
        );
        let (ph, pw) = (ih + 2 * pad, iw + 2 * pad);
        assert!(k <= 8, "kernels up to 8x8");
        assert!(x.len() >= cin * ih * iw && self.rows.len() >= oh * ow * kkp + 8);
        assert!(self.padded.len() >= cin * ph * pw + 8);
        self.fill_padded(x);
        let xp = self.padded.as_ptr();
        let rp = self.rows.as_mut_ptr();
        for oy in 0..oh {
            for ox in 0..ow {
                // SAFETY: row p = oy·ow + ox starts at p·kkp, and the last
                // store of the row ends at p·kkp + cin·k·k − k + 8
                // ≤ oh·ow·kkp + 8 ≤ rows.len() (asserted). Reads start at
                // (ci·ph + oy + ky)·pw + ox, with oy + ky < ph and
                // ox + k ≤ pw, and span 8 floats: they end before
                // cin·ph·pw + 8 ≤ padded.len() (asserted).
                unsafe {
                    let row = rp.add((oy * ow + ox) * kkp);
                    for ci in 0..cin {
                        for ky in 0..k {
                            let dst = row.add((ci * k + ky) * k);
                            let src = xp.add((ci * ph + oy + ky) * pw + ox);
                            F32x4::load_ptr(src).store_ptr(dst);
                            F32x4::load_ptr(src.add(4)).store_ptr(dst.add(4));
                        }
                    }
                }
            }
        }
    }

    /// `dW += dY·colsᵀ` for one sample from the non-zeros of `dyb` (see the
    /// module doc); `self.rows` must hold the sample's im2row.
    fn sparse_weight_grad(&mut self, dyb: &[f32], dw: &mut [f32]) {
        let (kk, kkp, hw) = (self.kk(), self.kkp, self.oh * self.ow);
        self.nz_pos.resize(hw, 0);
        self.nz_val.resize(hw, 0.0);
        for (co, dy_row) in dyb.chunks_exact(hw).enumerate().take(self.cout) {
            let n = compact_nonzeros(hw, |p| dy_row[p], &mut self.nz_pos, &mut self.nz_val);
            if n == 0 {
                continue;
            }
            let dw_row = &mut dw[co * kk..(co + 1) * kk];
            let (pos, val) = (&self.nz_pos[..n], &self.nz_val[..n]);
            sparse_rows(&self.rows, kkp, pos, val, |kb, sums| {
                for (i, sum) in sums.iter().enumerate() {
                    let at = kb + 4 * i;
                    if at + 4 <= kk {
                        (F32x4::load(&dw_row[at..]) + *sum).store(&mut dw_row[at..]);
                    } else {
                        // The vector that reaches into the padding lanes.
                        for (d, &l) in dw_row[at.min(kk)..].iter_mut().zip(&sum.to_array()) {
                            *d += l;
                        }
                    }
                }
            });
        }
    }

    /// `dX = col2im(Wᵀ·dY)` for one sample from the non-zeros of `dyb`: per
    /// output position, the sum of its non-zero gradients times their filters
    /// (`self.wpad`, filled by `backward`), folded onto a zero-bordered copy of
    /// the input gradient.
    fn sparse_input_grad(&mut self, dyb: &[f32], dxb: &mut [f32]) {
        match self.k {
            5 => self.sparse_input_grad_k(dyb, dxb, 5),
            k => self.sparse_input_grad_k(dyb, dxb, k),
        }
    }

    /// [`Self::sparse_input_grad`] for kernel size `k` (inlined so `k` can be
    /// a constant and the fold of each tap row becomes straight-line code).
    #[inline(always)]
    fn sparse_input_grad_k(&mut self, dyb: &[f32], dxb: &mut [f32], k: usize) {
        let (cin, cout, pad, ih, iw, oh, ow, kkp) = (
            self.cin, self.cout, self.pad, self.ih, self.iw, self.oh, self.ow, self.kkp,
        );
        let (hw, ph, pw) = (oh * ow, ih + 2 * pad, iw + 2 * pad);
        assert!(dyb.len() >= cout * hw && dxb.len() >= cin * ih * iw);
        assert!(kkp <= MAX_KKP, "kernels up to {MAX_KKP} taps");
        assert!(self.dpadded.len() >= cin * ph * pw && cin * k * k <= kkp);
        self.nz_pos.resize(hw.max(cout), 0);
        self.nz_val.resize(hw.max(cout), 0.0);
        self.dpadded[..cin * ph * pw].fill(0.0);
        let mut drow = [0.0f32; MAX_KKP];
        let k4 = k / 4 * 4;
        for p in 0..hw {
            let n = compact_nonzeros(
                cout,
                |co| dyb[co * hw + p],
                &mut self.nz_pos,
                &mut self.nz_val,
            );
            if n == 0 {
                continue;
            }
            let (pos, val) = (&self.nz_pos[..n], &self.nz_val[..n]);
            sparse_rows(&self.wpad, kkp, pos, val, |kb, sums| {
                // Vector stores: a slice copy of a variable length would be a
                // `memory.copy` call in wasm, once per block per position.
                for (i, sum) in sums.iter().enumerate() {
                    sum.store(&mut drow[kb + 4 * i..]);
                }
            });
            let (oy, ox) = (p / ow, p % ow);
            let dp = self.dpadded.as_mut_ptr();
            let sp = drow.as_ptr();
            for ci in 0..cin {
                for ky in 0..k {
                    // SAFETY: (ci·ph + oy + ky)·pw + ox + k ≤ cin·ph·pw, since
                    // oy + ky < ph and ox + k ≤ pw, and `dpadded` is at least
                    // that long (asserted); the source row ends at
                    // (ci·k + ky + 1)·k ≤ kkp ≤ MAX_KKP.
                    unsafe {
                        let dst = dp.add((ci * ph + oy + ky) * pw + ox);
                        let src = sp.add((ci * k + ky) * k);
                        let mut kx = 0;
                        while kx < k4 {
                            let sum = F32x4::load_ptr(dst.add(kx)) + F32x4::load_ptr(src.add(kx));
                            sum.store_ptr(dst.add(kx));
                            kx += 4;
                        }
                        while kx < k {
                            *dst.add(kx) += *src.add(kx);
                            kx += 1;
                        }
                    }
                }
            }
        }
        for ci in 0..cin {
            for iy in 0..ih {
                let src = &self.dpadded[(ci * ph + iy + pad) * pw + pad..][..iw];
                simd::copy(&mut dxb[(ci * ih + iy) * iw..][..iw], src);
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
        let nonzero = dyb.iter().filter(|&&v| v != 0.0).count();
        let sparse = 2 * nonzero <= dyb.len();
        if sparse {
            self.im2row(xb);
            self.sparse_weight_grad(dyb, dw);
        } else {
            self.im2col(xb);
            // dW += dY · colsᵀ
            gemm_nt(self.cout, kk, hw, dyb, hw, &self.cols, hw, dw, kk, true);
        }
        for (row, db) in dyb.chunks_exact(hw).zip(dbias.iter_mut()) {
            add_sum(row, db);
        }
        if let Some(dxb) = dxb {
            if sparse {
                self.sparse_input_grad(dyb, dxb);
                return;
            }
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
        if dx.is_some() {
            // The filters with rows padded to kkp, for the sparse input gradient.
            let kkp = self.kkp;
            for (dst, src) in self.wpad.chunks_exact_mut(kkp).zip(w.chunks_exact(kk)) {
                dst[..kk].copy_from_slice(src);
            }
        }
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
mod tests;
