//! How a parameter vector travels: 32-bit floats, 16-bit floats, or 8-bit
//! integers with a power-of-two scale per block of [`INT8_BLOCK`] values.
//!
//! Both lossy encodings are *exact on their own output*: [`Encoding::round_trip`]
//! turns a vector into the values the wire will carry, and encoding those
//! again loses nothing. So a sender that keeps error feedback (the part a
//! round trip lost, added to the next vector) knows to the bit what the
//! receiver decodes, and a coordinator that mirrors a device's copy of the
//! model stays equal to it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Values per int8 block (one scale exponent each).
pub const INT8_BLOCK: usize = 64;

/// The exponent byte of an int8 block that held a non-finite value (it
/// decodes to NaN, so the receiver's checks see it and refuse it).
const NOT_FINITE: i8 = i8::MIN;

/// How a vector of `f32` is put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// 4 bytes a value, exact.
    #[default]
    F32,
    /// IEEE half precision, 2 bytes a value.
    F16,
    /// `q · 2^e`: one signed byte a value and one exponent byte per
    /// [`INT8_BLOCK`] values (about 1.02 bytes a value).
    Int8,
}

/// Every encoding, in order of preference for a slow link.
pub const ENCODINGS: [Encoding; 3] = [Encoding::Int8, Encoding::F16, Encoding::F32];

impl Encoding {
    /// Lowercase name (`f32`, `f16`, `int8`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::F32 => "f32",
            Encoding::F16 => "f16",
            Encoding::Int8 => "int8",
        }
    }

    /// Whether it loses precision.
    pub fn is_lossy(self) -> bool {
        self != Encoding::F32
    }

    /// Bytes `len` values take.
    pub fn bytes(self, len: usize) -> usize {
        match self {
            Encoding::F32 => len * 4,
            Encoding::F16 => len * 2,
            Encoding::Int8 => len + len.div_ceil(INT8_BLOCK),
        }
    }

    /// Replaces `values` by what they decode to after this encoding.
    pub fn round_trip(self, values: &mut [f32]) {
        match self {
            Encoding::F32 => {}
            Encoding::F16 => {
                for v in values {
                    *v = half::f16::from_f32(*v).to_f32();
                }
            }
            Encoding::Int8 => {
                for block in values.chunks_mut(INT8_BLOCK) {
                    let e = block_exponent(block);
                    if e == NOT_FINITE {
                        block.fill(f32::NAN);
                        continue;
                    }
                    let (s, inv) = (pow2(i32::from(e)), pow2(-i32::from(e)));
                    for v in block {
                        *v = quantize(*v, inv) as f32 * s;
                    }
                }
            }
        }
    }

    /// Appends `values` in this encoding (values a round trip would change
    /// are rounded).
    pub fn put(self, out: &mut Vec<u8>, values: &[f32]) {
        match self {
            Encoding::F32 => {
                let start = out.len();
                out.resize(start + values.len() * 4, 0);
                for (dst, v) in out[start..].chunks_exact_mut(4).zip(values) {
                    dst.copy_from_slice(&v.to_le_bytes());
                }
            }
            Encoding::F16 => {
                for v in values {
                    out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
                }
            }
            Encoding::Int8 => {
                for block in values.chunks(INT8_BLOCK) {
                    let e = block_exponent(block);
                    out.push(e as u8);
                    if e == NOT_FINITE {
                        out.extend(std::iter::repeat_n(0, block.len()));
                        continue;
                    }
                    let inv = pow2(-i32::from(e));
                    out.extend(block.iter().map(|&v| quantize(v, inv) as u8));
                }
            }
        }
    }

    /// The `len` values in `bytes`, which must be [`Encoding::bytes`]`(len)`
    /// long (the decoder checks that first).
    pub fn get(self, bytes: &[u8], len: usize) -> Vec<f32> {
        match self {
            Encoding::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Encoding::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Encoding::Int8 => {
                let mut values = Vec::with_capacity(len);
                for block in bytes.chunks(INT8_BLOCK + 1) {
                    let Some((&e, qs)) = block.split_first() else {
                        break;
                    };
                    let e = e as i8;
                    if e == NOT_FINITE {
                        values.extend(std::iter::repeat_n(f32::NAN, qs.len()));
                        continue;
                    }
                    let s = pow2(i32::from(e));
                    values.extend(qs.iter().map(|&q| f32::from(q as i8) * s));
                }
                values
            }
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ENCODINGS
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| format!("no encoding {s:?} (f32, f16 or int8)"))
    }
}

/// `2^e` for `e` in -127..=127, exactly.
fn pow2(e: i32) -> f32 {
    if e >= -126 {
        f32::from_bits(((e + 127) as u32) << 23)
    } else {
        // 2^-127 is subnormal.
        f32::from_bits(1 << 22)
    }
}

/// `v / 2^e` rounded into -127..=127, given `inv = 2^-e`.
fn quantize(v: f32, inv: f32) -> i8 {
    (v * inv).round().clamp(-127.0, 127.0) as i8
}

/// The smallest exponent `e` with `max |v| <= 127 · 2^e` (so every value
/// of the block fits a signed byte), or [`NOT_FINITE`].
fn block_exponent(block: &[f32]) -> i8 {
    let mut max = 0.0f32;
    for v in block {
        if !v.is_finite() {
            return NOT_FINITE;
        }
        max = max.max(v.abs());
    }
    let mut e: i32 = -127;
    if max > 0.0 {
        // An estimate, then the exact smallest exponent.
        e = ((max / 127.0).log2().ceil() as i32).clamp(-127, 127);
        while e < 127 && max > 127.0 * pow2(e) {
            e += 1;
        }
        while e > -127 && max <= 127.0 * pow2(e - 1) {
            e -= 1;
        }
    }
    e as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-4 * (1.0 + (i % 13) as f32))
            .collect()
    }

    #[test]
    fn each_encoding_takes_its_size_and_decodes_what_a_round_trip_gives() {
        for enc in ENCODINGS {
            let values = sample(61_706);
            let mut out = Vec::new();
            enc.put(&mut out, &values);
            assert_eq!(out.len(), enc.bytes(values.len()), "{enc}");
            let mut expected = values.clone();
            enc.round_trip(&mut expected);
            let got = enc.get(&out, values.len());
            assert_eq!(got, expected, "{enc}");
            // Exact on its own output: encoding it again changes nothing.
            let mut again = Vec::new();
            enc.put(&mut again, &got);
            assert_eq!(enc.get(&again, got.len()), got, "{enc}");
        }
    }

    #[test]
    fn the_lossy_encodings_are_close() {
        let values = sample(4096);
        for (enc, tolerance) in [(Encoding::F16, 1e-3), (Encoding::Int8, 1.0 / 64.0)] {
            let mut q = values.clone();
            enc.round_trip(&mut q);
            for (block, qb) in values.chunks(INT8_BLOCK).zip(q.chunks(INT8_BLOCK)) {
                let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                for (v, w) in block.iter().zip(qb) {
                    assert!((v - w).abs() <= tolerance * max, "{enc}: {v} vs {w}");
                }
            }
        }
    }

    #[test]
    fn a_non_finite_value_stays_visible_and_zeros_stay_zero() {
        let mut values = vec![0.0f32; 130];
        values[70] = f32::INFINITY;
        let mut out = Vec::new();
        Encoding::Int8.put(&mut out, &values);
        let got = Encoding::Int8.get(&out, values.len());
        assert!(got[..64].iter().all(|&v| v == 0.0));
        assert!(got[64..128].iter().all(|v| v.is_nan()), "the block is NaN");
        assert!(got[128..].iter().all(|&v| v == 0.0));
        let mut h = vec![1e9f32];
        Encoding::F16.round_trip(&mut h);
        assert!(!h[0].is_finite(), "too large for f16 is not finite");
    }

    #[test]
    fn tiny_and_huge_blocks_keep_their_scale() {
        for scale in [1e-30f32, 1e-20, 1.0, 1e20, 3e38] {
            let values: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 32.0 * scale).collect();
            let mut q = values.clone();
            Encoding::Int8.round_trip(&mut q);
            let max = scale;
            for (v, w) in values.iter().zip(&q) {
                assert!((v - w).abs() <= max / 100.0, "{scale}: {v} vs {w}");
            }
        }
    }

    #[test]
    fn names_parse_back() {
        for enc in ENCODINGS {
            assert_eq!(enc.name().parse::<Encoding>(), Ok(enc));
        }
        assert!("int4".parse::<Encoding>().is_err());
    }
}
