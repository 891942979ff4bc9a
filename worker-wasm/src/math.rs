//! Elementary functions built only from IEEE add, multiply, floor and bit
//! operations, so that every target (wasmtime, browsers, native) computes the
//! same bits. Platform `expf`/`tanhf` differ in the last ulp between libms.

const LOG2E: f32 = core::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` with about 1 ulp of error (Cephes polynomial), deterministic on all targets.
#[inline]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI;
    let r = r - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Hyperbolic tangent, deterministic on all targets (absolute error < 2e-7).
#[inline]
pub fn tanh(x: f32) -> f32 {
    let t = exp(-2.0 * x.abs());
    let y = (1.0 - t) / (1.0 + t);
    if x < 0.0 { -y } else { y }
}

/// Natural logarithm (software, so identical on all targets).
#[inline]
pub fn ln(x: f32) -> f32 {
    libm::logf(x)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_and_tanh_are_accurate() {
        let mut x = -20.0f32;
        while x < 20.0 {
            let e = super::exp(x) as f64;
            let want = (x as f64).exp();
            assert!(
                ((e - want) / want).abs() < 3e-7,
                "exp({x}) = {e}, want {want}"
            );
            let t = super::tanh(x) as f64;
            assert!((t - (x as f64).tanh()).abs() < 3e-7, "tanh({x})");
            x += 0.0137;
        }
        assert_eq!(super::exp(-1000.0), super::exp(-87.3));
        assert!(super::exp(1000.0).is_finite());
    }
}
