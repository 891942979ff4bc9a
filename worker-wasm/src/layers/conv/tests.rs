//! Convolution gradients against finite differences, dense and sparse paths.

use super::*;
use crate::layers::gradcheck;

#[test]
fn gradients_match_finite_differences() {
    gradcheck::check(&mut Conv2d::new("pad", 2, 3, 3, 1, 5, 5), 2, 1e-2);
    gradcheck::check(&mut Conv2d::new("valid", 3, 2, 3, 0, 6, 6), 2, 1e-2);
    gradcheck::check(&mut Conv2d::new("lenet", 1, 2, 5, 2, 8, 8), 1, 1e-2);
}

/// `dW` and `dX` from the sparse path (most of `dY` zero) and from the
/// dense path all equal the direct sums, in float64, for every sample of
/// a batch (so no buffer carries state from one sample to the next).
#[test]
fn gradients_are_right_for_sparse_and_dense_output_gradients() {
    let (cin, cout, k, pad, ih, iw, batch) = (2, 3, 5, 2, 7, 6, 3);
    for keep_every in [4usize, 1] {
        let mut c = Conv2d::new("c", cin, cout, k, pad, ih, iw);
        let n: usize = c.tensors().iter().map(|t| t.numel()).sum();
        let (in_len, out_len) = (c.in_len(), c.out_len());
        let p = gradcheck::values(n, 3);
        let x = gradcheck::values(batch * in_len, 4);
        let mut dy = gradcheck::values(batch * out_len, 5);
        for (i, v) in dy.iter_mut().enumerate() {
            if i % keep_every != 0 {
                *v = 0.0;
            }
        }
        let mut dp = vec![0.0; n];
        let y = vec![0.0; batch * out_len];
        let mut dx = vec![f32::NAN; batch * in_len];
        c.backward(&p, &x, &y, &dy, Some(&mut dx), &mut dp, batch);
        let (oh, ow) = (ih + 2 * pad + 1 - k, iw + 2 * pad + 1 - k);
        let mut want_dx = vec![0.0f64; batch * in_len];
        let mut want_dw = vec![0.0f64; cout * cin * k * k];
        for b in 0..batch {
            let (xb, dyb) = (&x[b * in_len..], &dy[b * out_len..]);
            for co in 0..cout {
                for ci in 0..cin {
                    for ky in 0..k {
                        for kx in 0..k {
                            let wi = ((co * cin + ci) * k + ky) * k + kx;
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    let (iy, ix) = (oy + ky, ox + kx);
                                    if iy >= pad && iy - pad < ih && ix >= pad && ix - pad < iw {
                                        let g = dyb[(co * oh + oy) * ow + ox] as f64;
                                        let at = (ci * ih + iy - pad) * iw + ix - pad;
                                        want_dw[wi] += g * xb[at] as f64;
                                        want_dx[b * in_len + at] += g * p[wi] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for (got, want) in dp.iter().zip(&want_dw) {
            let got = *got as f64;
            assert!(
                (got - want).abs() < 1e-4,
                "dW, keep 1/{keep_every}: {got} vs {want}"
            );
        }
        for (i, (got, want)) in dx.iter().zip(&want_dx).enumerate() {
            assert!(
                (*got as f64 - want).abs() < 1e-4,
                "dX[{i}], keep 1/{keep_every}: {got} vs {want}"
            );
        }
    }
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
