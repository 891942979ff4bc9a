//! Small dense matrix products, register-blocked and written for 4-lane SIMD.
//!
//! Two kernels cover every product of forward and backward passes:
//! - [`gemm_nn`]: `C (+)= A · B`, vectorized along the columns of `B` and `C`;
//!   `A` is read through strides, so `Aᵀ · B` is the same kernel.
//! - [`gemm_nt`]: `C (+)= A · Bᵀ`, dot products of rows, vectorized along `k`.
//!
//! Determinism: every output element is one fixed chain of IEEE operations
//! that depends only on the shapes, never on which code path (vector block,
//! 4-wide tail or scalar tail) computed it. That is what makes the wasm
//! component, the browser and the native build agree bit for bit.

use core::mem::MaybeUninit;

use crate::simd::F32x4;

/// Rows of `A` packed per block of [`gemm_nn`].
const NN_MR: usize = 4;
/// `k` values packed at once by [`gemm_nn`] (bounds the stack buffer).
const NN_KC: usize = 256;

/// `C[m×n] (+)= A[m×k] · B[k×n]`.
///
/// `A(i, p) = a[i * a_rs + p * a_cs]` (pass `a_rs = 1, a_cs = lda` to use a
/// transposed matrix); `B` and `C` are row-major with row strides `ldb`, `ldc`.
/// With `accumulate` the products are added to `C`, otherwise `C` is overwritten.
#[allow(clippy::too_many_arguments)]
pub fn gemm_nn(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
        "gemm_nn: A too short"
    );
    assert!((k - 1) * ldb + n <= b.len(), "gemm_nn: B too short");
    assert!((m - 1) * ldc + n <= c.len(), "gemm_nn: C too short");
    let mut i0 = 0;
    while i0 < m {
        let mr = NN_MR.min(m - i0);
        let mut p0 = 0;
        while p0 < k {
            let kc = NN_KC.min(k - p0);
            let acc = accumulate || p0 > 0;
            match mr {
                4 => nn_rows::<4>(i0, p0, kc, n, a, a_rs, a_cs, b, ldb, c, ldc, acc),
                3 => nn_rows::<3>(i0, p0, kc, n, a, a_rs, a_cs, b, ldb, c, ldc, acc),
                2 => nn_rows::<2>(i0, p0, kc, n, a, a_rs, a_cs, b, ldb, c, ldc, acc),
                _ => nn_rows::<1>(i0, p0, kc, n, a, a_rs, a_cs, b, ldb, c, ldc, acc),
            }
            p0 += kc;
        }
        i0 += mr;
    }
}

/// `MR` rows of `C`, `k` range `p0..p0 + kc`, all columns.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn nn_rows<const MR: usize>(
    i0: usize,
    p0: usize,
    kc: usize,
    n: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    // Pack the MR × kc block of A, each value already splatted to four lanes,
    // so the inner loop reads whole vectors in order (wasmtime turns a
    // splatting load into a load into a general register, a move and a
    // broadcast).
    assert!(MR <= NN_MR && kc <= NN_KC);
    let mut packed = [MaybeUninit::<F32x4>::uninit(); NN_MR * NN_KC];
    for p in 0..kc {
        for r in 0..MR {
            packed[p * MR + r].write(F32x4::splat(a[(i0 + r) * a_rs + (p0 + p) * a_cs]));
        }
    }
    // SAFETY: `gemm_nn` asserted that rows i0..i0+MR of C hold n columns at
    // stride ldc and that rows p0..p0+kc of B hold n columns at stride ldb;
    // every pointer below stays inside those ranges (j + 8 <= n, j + 4 <= n,
    // j < n), and the first kc * MR entries of `packed` were written above.
    unsafe {
        let ap = packed.as_ptr() as *const F32x4;
        let bp = b.as_ptr().add(p0 * ldb);
        let cp = c.as_mut_ptr().add(i0 * ldc);
        let mut j = 0;
        while j + 8 <= n {
            let mut acc = [[F32x4::zero(); 2]; MR];
            if accumulate {
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let row = cp.add(r * ldc + j);
                    acc_r[0] = F32x4::load_ptr(row);
                    acc_r[1] = F32x4::load_ptr(row.add(4));
                }
            }
            // One k step per iteration, deliberately not unrolled: LLVM's
            // wasm output computes an unrolled body accumulator by
            // accumulator, which needs every loaded B row and A value at
            // once, more than x86's 16 vector registers, and Cranelift then
            // spills to the stack. One step needs 2 B + 4 A + 8 accumulators.
            // (With epoch checks, which sit at every loop header, unrolling
            // by 4 was faster; hosts now keep call timeouts with a watchdog.)
            for p in 0..kc {
                let row = bp.add(p * ldb + j);
                let b0 = F32x4::load_ptr(row);
                let b1 = F32x4::load_ptr(row.add(4));
                let a_col = ap.add(p * MR);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let s = *a_col.add(r);
                    acc_r[0] = acc_r[0].mul_add(s, b0);
                    acc_r[1] = acc_r[1].mul_add(s, b1);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                let row = cp.add(r * ldc + j);
                acc_r[0].store_ptr(row);
                acc_r[1].store_ptr(row.add(4));
            }
            j += 8;
        }
        while j + 4 <= n {
            let mut acc = [F32x4::zero(); MR];
            if accumulate {
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    *acc_r = F32x4::load_ptr(cp.add(r * ldc + j));
                }
            }
            for p in 0..kc {
                let b0 = F32x4::load_ptr(bp.add(p * ldb + j));
                let a_col = ap.add(p * MR);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    *acc_r = acc_r.mul_add(*a_col.add(r), b0);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                acc_r.store_ptr(cp.add(r * ldc + j));
            }
            j += 4;
        }
        while j < n {
            for r in 0..MR {
                let out = cp.add(r * ldc + j);
                let mut s = if accumulate { *out } else { 0.0 };
                for p in 0..kc {
                    s += (*ap.add(p * MR + r)).to_array()[0] * *bp.add(p * ldb + j);
                }
                *out = s;
            }
            j += 1;
        }
    }
}

/// `C[m×n] (+)= A[m×k] · B[n×k]ᵀ`: `C(i, j)` is the dot product of row `i`
/// of `A` and row `j` of `B`. All matrices are row-major with row strides
/// `lda`, `ldb`, `ldc`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_nt(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * lda + k <= a.len(), "gemm_nt: A too short");
    assert!((n - 1) * ldb + k <= b.len(), "gemm_nt: B too short");
    assert!((m - 1) * ldc + n <= c.len(), "gemm_nt: C too short");
    let mut i = 0;
    while i < m {
        let mr = 4.min(m - i);
        let mut j = 0;
        while j < n {
            let nr = 2.min(n - j);
            let args = (i, j, k, a, lda, b, ldb, &mut *c, ldc, accumulate);
            match (mr, nr) {
                (4, 2) => nt_block::<4, 2>(args),
                (4, _) => nt_block::<4, 1>(args),
                (3, 2) => nt_block::<3, 2>(args),
                (3, _) => nt_block::<3, 1>(args),
                (2, 2) => nt_block::<2, 2>(args),
                (2, _) => nt_block::<2, 1>(args),
                (_, 2) => nt_block::<1, 2>(args),
                _ => nt_block::<1, 1>(args),
            }
            j += nr;
        }
        i += mr;
    }
}

type NtArgs<'a> = (
    usize,
    usize,
    usize,
    &'a [f32],
    usize,
    &'a [f32],
    usize,
    &'a mut [f32],
    usize,
    bool,
);

/// An `MR × NR` block of dot products.
#[inline(always)]
fn nt_block<const MR: usize, const NR: usize>(args: NtArgs<'_>) {
    let (i, j, k, a, lda, b, ldb, c, ldc, accumulate) = args;
    let k4 = k - k % 4;
    // SAFETY: `gemm_nt` asserted that rows i..i+MR of A and j..j+NR of B hold
    // k values at their strides and that C holds rows i..i+MR, columns j..j+NR;
    // all pointers below stay inside (p + 4 <= k4 <= k, t < k).
    unsafe {
        let a_rows: [*const f32; MR] = core::array::from_fn(|r| a.as_ptr().add((i + r) * lda));
        let b_rows: [*const f32; NR] = core::array::from_fn(|q| b.as_ptr().add((j + q) * ldb));
        let mut acc = [[F32x4::zero(); NR]; MR];
        let step = |acc: &mut [[F32x4; NR]; MR], p: usize| {
            let bv: [F32x4; NR] = core::array::from_fn(|q| F32x4::load_ptr(b_rows[q].add(p)));
            for r in 0..MR {
                let av = F32x4::load_ptr(a_rows[r].add(p));
                for q in 0..NR {
                    acc[r][q] = acc[r][q].mul_add(av, bv[q]);
                }
            }
        };
        // Unrolled by 4 (16 floats per iteration), for the reason given in `nn_rows`.
        let mut p = 0;
        while p + 16 <= k4 {
            step(&mut acc, p);
            step(&mut acc, p + 4);
            step(&mut acc, p + 8);
            step(&mut acc, p + 12);
            p += 16;
        }
        while p < k4 {
            step(&mut acc, p);
            p += 4;
        }
        for r in 0..MR {
            for q in 0..NR {
                let mut s = acc[r][q].sum();
                for t in k4..k {
                    s += *a_rows[r].add(t) * *b_rows[q].add(t);
                }
                let out = c.as_mut_ptr().add((i + r) * ldc + j + q);
                *out = if accumulate { *out + s } else { s };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u32) -> f32 {
        *seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (*seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    }

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        at: impl Fn(usize, usize) -> f32,
        bt: impl Fn(usize, usize) -> f32,
    ) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum();
            }
        }
        c
    }

    #[test]
    fn nn_and_nt_match_naive_on_odd_shapes() {
        let mut seed = 7;
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (6, 25, 784),
            (16, 100, 150),
            (5, 13, 300),
            (4, 8, 0),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| lcg(&mut seed)).collect();
            let want = naive(m, n, k, |i, p| a[i * k + p], |p, j| b[p * n + j]);
            // A · B
            let mut c = vec![1.0f32; m * n];
            gemm_nn(m, n, k, &a, k, 1, &b, n, &mut c, n, false);
            // Aᵀ stored as k×m, read through strides
            let at: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
            let mut c2 = vec![0.0f32; m * n];
            gemm_nn(m, n, k, &at, 1, m, &b, n, &mut c2, n, false);
            // A · (Bᵀ)ᵀ with B stored transposed (n×k)
            let bt: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
            let mut c3 = vec![0.5f32; m * n];
            gemm_nt(m, n, k, &a, k, &bt, k, &mut c3, n, true);
            for x in 0..m * n {
                let tol = 1e-4 * (k as f64).sqrt().max(1.0);
                assert!((c[x] as f64 - want[x]).abs() < tol, "nn {m}x{n}x{k} at {x}");
                assert_eq!(c[x].to_bits(), c2[x].to_bits(), "strided A differs");
                assert!(
                    (c3[x] as f64 - 0.5 - want[x]).abs() < tol,
                    "nt {m}x{n}x{k} at {x}"
                );
            }
        }
    }

    #[test]
    fn accumulate_adds_and_long_k_is_blocked_exactly() {
        let (m, n, k) = (2, 9, 600); // k > NN_KC exercises k-blocking
        let a: Vec<f32> = (0..m * k).map(|x| (x % 7) as f32 * 0.25).collect();
        let b: Vec<f32> = (0..k * n).map(|x| (x % 5) as f32 * 0.5).collect();
        let mut once = vec![0.0; m * n];
        gemm_nn(m, n, k, &a, k, 1, &b, n, &mut once, n, false);
        let mut twice = once.clone();
        gemm_nn(m, n, k, &a, k, 1, &b, n, &mut twice, n, true);
        for x in 0..m * n {
            assert_eq!(twice[x], 2.0 * once[x]); // small integers: exact
        }
    }
}
