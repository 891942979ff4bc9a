//! A four-lane `f32` vector whose results are bit-identical on every target.
//!
//! On `wasm32` with `simd128` it is a `v128`; elsewhere it is a `[f32; 4]` that
//! LLVM turns into SSE/NEON. Every operation is a lane-wise IEEE add or multiply
//! (never a fused multiply-add, never relaxed SIMD), so the wasm component, the
//! browser module and the native library compute the same bits.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod imp {
    use core::arch::wasm32::*;

    /// Four `f32` lanes.
    #[derive(Clone, Copy)]
    pub struct F32x4(v128);

    impl F32x4 {
        /// All lanes zero.
        #[inline(always)]
        pub fn zero() -> Self {
            Self(f32x4_splat(0.0))
        }
        /// All lanes `x`.
        #[inline(always)]
        pub fn splat(x: f32) -> Self {
            Self(f32x4_splat(x))
        }
        /// Loads the first four elements of `s` (panics if shorter).
        #[inline(always)]
        pub fn load(s: &[f32]) -> Self {
            assert!(s.len() >= 4);
            // SAFETY: four f32 are readable at s.as_ptr(); v128_load is unaligned.
            Self(unsafe { v128_load(s.as_ptr() as *const v128) })
        }
        /// Stores into the first four elements of `s` (panics if shorter).
        #[inline(always)]
        pub fn store(self, s: &mut [f32]) {
            assert!(s.len() >= 4);
            // SAFETY: four f32 are writable at s.as_mut_ptr(); v128_store is unaligned.
            unsafe { v128_store(s.as_mut_ptr() as *mut v128, self.0) }
        }
        /// Loads four `f32` from `p`.
        ///
        /// # Safety
        /// `p..p+4` must be readable.
        #[inline(always)]
        pub unsafe fn load_ptr(p: *const f32) -> Self {
            // SAFETY: the caller guarantees four readable f32; v128_load is unaligned.
            Self(unsafe { v128_load(p as *const v128) })
        }
        /// Stores four `f32` at `p`.
        ///
        /// # Safety
        /// `p..p+4` must be writable.
        #[inline(always)]
        pub unsafe fn store_ptr(self, p: *mut f32) {
            // SAFETY: the caller guarantees four writable f32; v128_store is unaligned.
            unsafe { v128_store(p as *mut v128, self.0) }
        }
        /// Lane-wise `self + o`.
        #[inline(always)]
        pub(super) fn vadd(self, o: Self) -> Self {
            Self(f32x4_add(self.0, o.0))
        }
        /// Lane-wise `self - o`.
        #[inline(always)]
        pub(super) fn vsub(self, o: Self) -> Self {
            Self(f32x4_sub(self.0, o.0))
        }
        /// Lane-wise `self * o`.
        #[inline(always)]
        pub(super) fn vmul(self, o: Self) -> Self {
            Self(f32x4_mul(self.0, o.0))
        }
        /// Lane-wise `self + a * b`, rounded twice (no fusion).
        #[inline(always)]
        pub fn mul_add(self, a: Self, b: Self) -> Self {
            self.vadd(a.vmul(b))
        }
        /// Per lane: `x` where `self > o`, else `y` (false for NaN, like `>`).
        #[inline(always)]
        pub fn select_gt(self, o: Self, x: Self, y: Self) -> Self {
            Self(v128_bitselect(x.0, y.0, f32x4_gt(self.0, o.0)))
        }
        /// Per lane: `x` where `self == o`, else `y`.
        #[inline(always)]
        pub fn select_eq(self, o: Self, x: Self, y: Self) -> Self {
            Self(v128_bitselect(x.0, y.0, f32x4_eq(self.0, o.0)))
        }
        /// Lanes 0, 2 of `a` and of `b`, then lanes 1, 3 of `a` and of `b`:
        /// the even and the odd elements of eight consecutive ones.
        #[inline(always)]
        pub fn deinterleave(a: Self, b: Self) -> (Self, Self) {
            (
                Self(i32x4_shuffle::<0, 2, 4, 6>(a.0, b.0)),
                Self(i32x4_shuffle::<1, 3, 5, 7>(a.0, b.0)),
            )
        }
        /// The inverse of [`Self::deinterleave`]: `(a0, b0, a1, b1)` and
        /// `(a2, b2, a3, b3)`.
        #[inline(always)]
        pub fn interleave(a: Self, b: Self) -> (Self, Self) {
            (
                Self(i32x4_shuffle::<0, 4, 1, 5>(a.0, b.0)),
                Self(i32x4_shuffle::<2, 6, 3, 7>(a.0, b.0)),
            )
        }
        /// The lanes as an array.
        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            [
                f32x4_extract_lane::<0>(self.0),
                f32x4_extract_lane::<1>(self.0),
                f32x4_extract_lane::<2>(self.0),
                f32x4_extract_lane::<3>(self.0),
            ]
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod imp {
    /// Four `f32` lanes.
    #[derive(Clone, Copy)]
    pub struct F32x4([f32; 4]);

    impl F32x4 {
        /// All lanes zero.
        #[inline(always)]
        pub fn zero() -> Self {
            Self([0.0; 4])
        }
        /// All lanes `x`.
        #[inline(always)]
        pub fn splat(x: f32) -> Self {
            Self([x; 4])
        }
        /// Loads the first four elements of `s` (panics if shorter).
        #[inline(always)]
        pub fn load(s: &[f32]) -> Self {
            Self([s[0], s[1], s[2], s[3]])
        }
        /// Stores into the first four elements of `s` (panics if shorter).
        #[inline(always)]
        pub fn store(self, s: &mut [f32]) {
            s[..4].copy_from_slice(&self.0);
        }
        /// Loads four `f32` from `p`.
        ///
        /// # Safety
        /// `p..p+4` must be readable.
        #[inline(always)]
        pub unsafe fn load_ptr(p: *const f32) -> Self {
            // SAFETY: the caller guarantees four readable f32.
            Self(unsafe { core::ptr::read_unaligned(p as *const [f32; 4]) })
        }
        /// Stores four `f32` at `p`.
        ///
        /// # Safety
        /// `p..p+4` must be writable.
        #[inline(always)]
        pub unsafe fn store_ptr(self, p: *mut f32) {
            // SAFETY: the caller guarantees four writable f32.
            unsafe { core::ptr::write_unaligned(p as *mut [f32; 4], self.0) }
        }
        /// Lane-wise `self + o`.
        #[inline(always)]
        pub(super) fn vadd(self, o: Self) -> Self {
            Self(core::array::from_fn(|i| self.0[i] + o.0[i]))
        }
        /// Lane-wise `self - o`.
        #[inline(always)]
        pub(super) fn vsub(self, o: Self) -> Self {
            Self(core::array::from_fn(|i| self.0[i] - o.0[i]))
        }
        /// Lane-wise `self * o`.
        #[inline(always)]
        pub(super) fn vmul(self, o: Self) -> Self {
            Self(core::array::from_fn(|i| self.0[i] * o.0[i]))
        }
        /// Lane-wise `self + a * b`, rounded twice (no fusion).
        #[inline(always)]
        pub fn mul_add(self, a: Self, b: Self) -> Self {
            self.vadd(a.vmul(b))
        }
        /// Per lane: `x` where `self > o`, else `y` (false for NaN, like `>`).
        #[inline(always)]
        pub fn select_gt(self, o: Self, x: Self, y: Self) -> Self {
            Self(core::array::from_fn(|i| {
                if self.0[i] > o.0[i] { x.0[i] } else { y.0[i] }
            }))
        }
        /// Per lane: `x` where `self == o`, else `y`.
        #[inline(always)]
        pub fn select_eq(self, o: Self, x: Self, y: Self) -> Self {
            Self(core::array::from_fn(|i| {
                if self.0[i] == o.0[i] { x.0[i] } else { y.0[i] }
            }))
        }
        /// Lanes 0, 2 of `a` and of `b`, then lanes 1, 3 of `a` and of `b`:
        /// the even and the odd elements of eight consecutive ones.
        #[inline(always)]
        pub fn deinterleave(a: Self, b: Self) -> (Self, Self) {
            let (a, b) = (a.0, b.0);
            (
                Self([a[0], a[2], b[0], b[2]]),
                Self([a[1], a[3], b[1], b[3]]),
            )
        }
        /// The inverse of [`Self::deinterleave`]: `(a0, b0, a1, b1)` and
        /// `(a2, b2, a3, b3)`.
        #[inline(always)]
        pub fn interleave(a: Self, b: Self) -> (Self, Self) {
            let (a, b) = (a.0, b.0);
            (
                Self([a[0], b[0], a[1], b[1]]),
                Self([a[2], b[2], a[3], b[3]]),
            )
        }
        /// The lanes as an array.
        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            self.0
        }
    }
}

pub use imp::F32x4;

impl core::ops::Add for F32x4 {
    type Output = Self;
    /// Lane-wise sum.
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self.vadd(o)
    }
}

impl core::ops::Sub for F32x4 {
    type Output = Self;
    /// Lane-wise difference.
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self.vsub(o)
    }
}

impl core::ops::Mul for F32x4 {
    type Output = Self;
    /// Lane-wise product.
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self.vmul(o)
    }
}

impl F32x4 {
    /// Sum of the lanes in a fixed order: `(l0 + l1) + (l2 + l3)`.
    #[inline(always)]
    pub fn sum(self) -> f32 {
        let l = self.to_array();
        (l[0] + l[1]) + (l[2] + l[3])
    }
}

// The helpers below never loop over a scalar tail: LLVM turns such loops
// into `memcpy`/`memset` calls, which in wasm are `memory.copy`/`memory.fill`
// libcalls that cost far more than the one to three floats they move.

/// Copies `n` floats from `src` to `dst`, four lanes at a time.
///
/// # Safety
/// `src..src+n` must be readable, `dst..dst+n` writable, and they must not overlap.
#[inline(always)]
pub unsafe fn copy_ptr(dst: *mut f32, src: *const f32, n: usize) {
    // SAFETY: every access is below n, within the caller's guarantee.
    unsafe {
        if n >= 4 {
            let mut i = 0;
            while i + 4 <= n {
                F32x4::load_ptr(src.add(i)).store_ptr(dst.add(i));
                i += 4;
            }
            if i < n {
                // The last four again, overlapping: same values, no tail loop.
                F32x4::load_ptr(src.add(n - 4)).store_ptr(dst.add(n - 4));
            }
        } else {
            for t in 0..3 {
                if t < n {
                    *dst.add(t) = *src.add(t);
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` in whole vectors: a slice copy of a length
/// only known at run time is a `memory.copy` call in wasm, which costs far
/// more than copying the tens of floats of a row.
#[inline(always)]
pub fn copy(dst: &mut [f32], src: &[f32]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy between slices of different lengths"
    );
    // SAFETY: both slices hold dst.len() floats, and they cannot overlap
    // (one is borrowed mutably).
    unsafe { copy_ptr(dst.as_mut_ptr(), src.as_ptr(), dst.len()) }
}

/// Writes `n` zeros at `dst`, four lanes at a time.
///
/// # Safety
/// `dst..dst+n` must be writable.
#[inline(always)]
pub unsafe fn zero_ptr(dst: *mut f32, n: usize) {
    // SAFETY: every access is below n, within the caller's guarantee.
    unsafe {
        if n >= 4 {
            let mut i = 0;
            while i + 4 <= n {
                F32x4::zero().store_ptr(dst.add(i));
                i += 4;
            }
            if i < n {
                F32x4::zero().store_ptr(dst.add(n - 4));
            }
        } else {
            for t in 0..3 {
                if t < n {
                    *dst.add(t) = 0.0;
                }
            }
        }
    }
}

/// `dst[i] += src[i]` for `n` floats, four lanes at a time.
///
/// # Safety
/// `src..src+n` must be readable, `dst..dst+n` writable, and they must not overlap.
#[inline(always)]
pub unsafe fn add_ptr(dst: *mut f32, src: *const f32, n: usize) {
    // SAFETY: every access is below n, within the caller's guarantee.
    unsafe {
        let mut i = 0;
        while i + 4 <= n {
            (F32x4::load_ptr(dst.add(i)) + F32x4::load_ptr(src.add(i))).store_ptr(dst.add(i));
            i += 4;
        }
        for t in 0..3 {
            if i + t < n {
                *dst.add(i + t) += *src.add(i + t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_ops_match_scalar() {
        let a = F32x4::load(&[1.0, 2.0, 3.0, 4.0]);
        let b = F32x4::splat(0.5);
        let mut out = [0.0; 4];
        F32x4::splat(1.0).mul_add(a, b).store(&mut out);
        assert_eq!(out, [1.5, 2.0, 2.5, 3.0]);
        assert_eq!((a - b).to_array(), [0.5, 1.5, 2.5, 3.5]);
        assert_eq!(a.sum(), 10.0);
        assert_eq!(F32x4::zero().to_array(), [0.0; 4]);
    }

    #[test]
    fn selects_and_shuffles_match_scalar() {
        let a = F32x4::load(&[1.0, 2.0, 3.0, 4.0]);
        let b = F32x4::load(&[5.0, 6.0, 7.0, 8.0]);
        let (even, odd) = F32x4::deinterleave(a, b);
        assert_eq!(even.to_array(), [1.0, 3.0, 5.0, 7.0]);
        assert_eq!(odd.to_array(), [2.0, 4.0, 6.0, 8.0]);
        let (lo, hi) = F32x4::interleave(even, odd);
        assert_eq!((lo.to_array(), hi.to_array()), (a.to_array(), b.to_array()));
        let c = F32x4::load(&[2.0, 2.0, f32::NAN, 0.0]);
        let picked = c.select_gt(F32x4::splat(1.5), a, b);
        assert_eq!(picked.to_array(), [1.0, 2.0, 7.0, 8.0]);
        let picked = c.select_eq(F32x4::splat(2.0), a, b);
        assert_eq!(picked.to_array(), [1.0, 2.0, 7.0, 8.0]);
    }

    #[test]
    fn row_helpers_handle_tails() {
        for n in 0..13 {
            let src: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
            let mut dst = vec![9.0f32; n + 1];
            // SAFETY: src holds n floats, dst n + 1.
            unsafe {
                copy_ptr(dst.as_mut_ptr(), src.as_ptr(), n);
                assert_eq!(&dst[..n], &src[..], "copy {n}");
                dst[..n].fill(0.0);
                copy(&mut dst[..n], &src);
                assert_eq!(&dst[..n], &src[..], "safe copy {n}");
                add_ptr(dst.as_mut_ptr(), src.as_ptr(), n);
                assert_eq!(
                    dst[..n],
                    src.iter().map(|x| 2.0 * x).collect::<Vec<_>>()[..],
                    "add {n}"
                );
                zero_ptr(dst.as_mut_ptr(), n);
            }
            assert!(dst[..n].iter().all(|&x| x == 0.0), "zero {n}");
            assert_eq!(dst[n], 9.0, "wrote past the end at {n}");
        }
    }
}
