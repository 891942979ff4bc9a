//! Kernels for gradients that are mostly zero (behind max-pooling and ReLU):
//! compacting the non-zeros of a row, and summing a few rows of a matrix
//! picked by them, with the partial sums kept in registers.

use crate::simd::F32x4;

/// Writes the indices `i < len` with `value(i) != 0` and their values to the
/// front of `pos` and `val`, in order, and returns how many there are.
///
/// There is no branch per element (which, at a quarter non-zeros, would often
/// be mispredicted): every element is written and the count only advances
/// past the non-zeros. Four elements per iteration, because in wasmtime every
/// loop iteration also pays an epoch check.
#[inline(always)]
pub(crate) fn compact_nonzeros(
    len: usize,
    value: impl Fn(usize) -> f32,
    pos: &mut [u32],
    val: &mut [f32],
) -> usize {
    assert!(pos.len() >= len && val.len() >= len);
    let (pp, vp) = (pos.as_mut_ptr(), val.as_mut_ptr());
    let mut n = 0;
    let mut i = 0;
    while i + 4 <= len {
        for t in 0..4 {
            let v = value(i + t);
            // SAFETY: n ≤ i + t < len ≤ pos.len(), val.len() (asserted).
            unsafe {
                *pp.add(n) = (i + t) as u32;
                *vp.add(n) = v;
            }
            n += (v != 0.0) as usize;
        }
        i += 4;
    }
    while i < len {
        let v = value(i);
        // SAFETY: n ≤ i < len ≤ pos.len(), val.len() (asserted).
        unsafe {
            *pp.add(n) = i as u32;
            *vp.add(n) = v;
        }
        n += (v != 0.0) as usize;
        i += 1;
    }
    n
}

/// Most taps per filter (`cin·k·k` rounded up to 4) the sparse input gradient handles.
pub(crate) const MAX_KKP: usize = 1024;

/// For each block of up to 8 vectors covering `0..kkp`, calls
/// `out(kb, sums)` with lane `l` of `sums[v]` equal to
/// `Σⱼ val[j] · src[pos[j]·kkp + kb + 4·v + l]`:
/// a sum of a few `kkp`-long rows of `src`, with the partial sums of a block
/// kept in registers.
pub(crate) fn sparse_rows(
    src: &[f32],
    kkp: usize,
    pos: &[u32],
    val: &[f32],
    mut out: impl FnMut(usize, &[F32x4]),
) {
    assert!(kkp.is_multiple_of(4) && val.len() >= pos.len());
    assert!(pos.iter().all(|&p| (p as usize + 1) * kkp <= src.len()));
    let vectors = kkp / 4;
    // Blocks as even as possible.
    let (mut v0, mut blocks) = (0, vectors.div_ceil(8));
    while v0 < vectors {
        let nv = (vectors - v0).div_ceil(blocks);
        let kb = 4 * v0;
        // SAFETY: every row of `pos` lies inside `src` (asserted above).
        unsafe {
            match nv {
                1 => out(kb, &sparse_block::<1>(src, kkp, kb, pos, val)),
                2 => out(kb, &sparse_block::<2>(src, kkp, kb, pos, val)),
                3 => out(kb, &sparse_block::<3>(src, kkp, kb, pos, val)),
                4 => out(kb, &sparse_block::<4>(src, kkp, kb, pos, val)),
                5 => out(kb, &sparse_block::<5>(src, kkp, kb, pos, val)),
                6 => out(kb, &sparse_block::<6>(src, kkp, kb, pos, val)),
                7 => out(kb, &sparse_block::<7>(src, kkp, kb, pos, val)),
                _ => out(kb, &sparse_block::<8>(src, kkp, kb, pos, val)),
            }
        }
        v0 += nv;
        blocks -= 1;
    }
}

/// One block of [`sparse_rows`]: the `NV` vectors of sums from lane `kb`.
///
/// # Safety
/// Every row `p` of `pos` must lie inside `src`: `(p + 1)·kkp ≤ src.len()`.
#[inline(always)]
unsafe fn sparse_block<const NV: usize>(
    src: &[f32],
    kkp: usize,
    kb: usize,
    pos: &[u32],
    val: &[f32],
) -> [F32x4; NV] {
    assert!(kb + 4 * NV <= kkp);
    let mut acc = [F32x4::zero(); NV];
    let sp = src.as_ptr();
    // (Unrolling this loop by two measured no faster, in wasmtime or natively.)
    for (&p, &v) in pos.iter().zip(val) {
        let s = F32x4::splat(v);
        // SAFETY: row p holds kkp floats (the caller's guarantee) and
        // kb + 4·NV <= kkp (asserted).
        unsafe {
            let r = sp.add(p as usize * kkp + kb);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = a.mul_add(s, F32x4::load_ptr(r.add(4 * i)));
            }
        }
    }
    acc
}
