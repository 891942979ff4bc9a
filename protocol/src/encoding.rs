//! How a parameter vector travels: 32-bit floats, 16-bit floats, or 8-bit
//! or 4-bit integers with a power-of-two scale per block of [`INT8_BLOCK`]
//! values; int4's packed bytes are deflated on the wire.
//!
//! Both lossy encodings are *exact on their own output*: [`Encoding::round_trip`]
//! turns a vector into the values the wire will carry, and encoding those
//! again loses nothing. So a sender that keeps error feedback (the part a
//! round trip lost, added to the next vector) knows to the bit what the
//! receiver decodes, and a coordinator that mirrors a device's copy of the
//! model stays equal to it.
//!
//! Int4 is the slow link's encoding, and a model's change rounded to it is
//! mostly small integers (a block's scale is set by its largest value): in
//! a change of LeNet-5 after 50 rounds of 11 devices, 40 % of the nibbles
//! were 0 and 72 % within ±1, 2.6 bits of information each. Deflating the
//! packed bytes (raw deflate, its fastest level) took that change from
//! 31,818 to 20,901 bytes in 0.16 ms, and inflating it back 0.12 ms, on
//! one core of this machine: a third fewer bytes on a 100 Mbit/s link for
//! less than a millisecond of a Pi's time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Values per int8 or int4 block (one scale exponent each).
pub const INT8_BLOCK: usize = 64;

/// Largest magnitude of an int8 value.
const INT8_MAX: f32 = 127.0;
/// Largest magnitude of an int4 value (a nibble, two's complement; -8 is
/// never written, so the range is symmetric).
const INT4_MAX: f32 = 7.0;

/// Deflate level of int4's packed bytes and of image payloads: the
/// fastest (higher levels took 3 to 9 times longer for a few percent
/// fewer bytes).
pub(crate) const DEFLATE_LEVEL: u8 = 1;

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
    /// `q · 2^e` with `q` in -7..=7: two values a byte, low nibble first,
    /// and one exponent byte per [`INT8_BLOCK`] values (about 0.52 bytes a
    /// value), deflated (about 0.34 bytes a value on a model's change).
    /// Coarse: meant for error feedback, which sends what it rounds away
    /// with the next vector.
    Int4,
}

/// Every encoding, in order of preference for a slow link.
pub const ENCODINGS: [Encoding; 4] = [Encoding::Int4, Encoding::Int8, Encoding::F16, Encoding::F32];

impl Encoding {
    /// Lowercase name (`f32`, `f16`, `int8`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::F32 => "f32",
            Encoding::F16 => "f16",
            Encoding::Int8 => "int8",
            Encoding::Int4 => "int4",
        }
    }

    /// Whether it loses precision.
    pub fn is_lossy(self) -> bool {
        self != Encoding::F32
    }

    /// Whether its bytes are deflated (their number then depends on the
    /// values; [`max_bytes`](Self::max_bytes) is a bound).
    pub fn is_deflated(self) -> bool {
        self == Encoding::Int4
    }

    /// Most bytes `len` values take on the wire (exactly this many, but
    /// for int4, whose deflated bytes are usually fewer).
    pub fn max_bytes(self, len: usize) -> usize {
        let packed = self.packed_bytes(len);
        if self.is_deflated() {
            // Deflate's worst case: stored blocks of at most 65,535 bytes,
            // 5 bytes of header each, and a final empty one.
            packed + 5 * (packed / 65_535 + 2)
        } else {
            packed
        }
    }

    /// Bytes `len` values take before any deflating.
    fn packed_bytes(self, len: usize) -> usize {
        match self {
            Encoding::F32 => len * 4,
            Encoding::F16 => len * 2,
            Encoding::Int8 => len + len.div_ceil(INT8_BLOCK),
            Encoding::Int4 => {
                let (full, rest) = (len / INT8_BLOCK, len % INT8_BLOCK);
                full * INT8_BLOCK / 2 + rest.div_ceil(2) + len.div_ceil(INT8_BLOCK)
            }
        }
    }

    /// Largest magnitude of a block's integers (none: not a block encoding).
    fn levels(self) -> Option<f32> {
        match self {
            Encoding::F32 | Encoding::F16 => None,
            Encoding::Int8 => Some(INT8_MAX),
            Encoding::Int4 => Some(INT4_MAX),
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
            Encoding::Int8 | Encoding::Int4 => {
                let levels = self.levels().unwrap_or(INT8_MAX);
                for block in values.chunks_mut(INT8_BLOCK) {
                    let e = block_exponent(block, levels);
                    if e == NOT_FINITE {
                        block.fill(f32::NAN);
                        continue;
                    }
                    let (s, inv) = (pow2(i32::from(e)), pow2(-i32::from(e)));
                    for v in block {
                        *v = quantize(*v, inv, levels) as f32 * s;
                    }
                }
            }
        }
    }

    /// Appends `values` in this encoding (values a round trip would change
    /// are rounded).
    pub fn put(self, out: &mut Vec<u8>, values: &[f32]) {
        if self.is_deflated() {
            let mut packed = Vec::with_capacity(self.packed_bytes(values.len()));
            self.pack(&mut packed, values);
            out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(
                &packed,
                DEFLATE_LEVEL,
            ));
        } else {
            self.pack(out, values);
        }
    }

    /// Appends `values` in this encoding, before any deflating.
    fn pack(self, out: &mut Vec<u8>, values: &[f32]) {
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
                    let e = block_exponent(block, INT8_MAX);
                    out.push(e as u8);
                    if e == NOT_FINITE {
                        out.extend(std::iter::repeat_n(0, block.len()));
                        continue;
                    }
                    let inv = pow2(-i32::from(e));
                    out.extend(block.iter().map(|&v| quantize(v, inv, INT8_MAX) as u8));
                }
            }
            Encoding::Int4 => {
                for block in values.chunks(INT8_BLOCK) {
                    let e = block_exponent(block, INT4_MAX);
                    out.push(e as u8);
                    if e == NOT_FINITE {
                        out.extend(std::iter::repeat_n(0, block.len().div_ceil(2)));
                        continue;
                    }
                    let inv = pow2(-i32::from(e));
                    let nibble = |v: f32| (quantize(v, inv, INT4_MAX) as u8) & 0x0f;
                    out.extend(
                        block.chunks(2).map(|pair| {
                            nibble(pair[0]) | pair.get(1).map_or(0, |&v| nibble(v) << 4)
                        }),
                    );
                }
            }
        }
    }

    /// The `len` values in `bytes` (what [`put`](Self::put) wrote), or why
    /// they are not.
    pub fn get(self, bytes: &[u8], len: usize) -> Result<Vec<f32>, String> {
        let packed = self.packed_bytes(len);
        let inflated;
        let bytes = if self.is_deflated() {
            // Never more than `len` values' worth: a small frame cannot
            // inflate into a large allocation.
            inflated = miniz_oxide::inflate::decompress_to_vec_with_limit(bytes, packed)
                .map_err(|e| format!("{len} int4 values do not inflate: {e}"))?;
            &inflated[..]
        } else {
            bytes
        };
        if bytes.len() != packed {
            return Err(format!(
                "{len} {self} values take {packed} bytes, not {}",
                bytes.len()
            ));
        }
        Ok(self.unpack(bytes, len))
    }

    /// The `len` values in `bytes`, which are exactly
    /// [`packed_bytes`](Self::packed_bytes)`(len)` long.
    fn unpack(self, bytes: &[u8], len: usize) -> Vec<f32> {
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
            Encoding::Int4 => {
                let mut values = Vec::with_capacity(len);
                let mut at = 0;
                while values.len() < len {
                    let n = (len - values.len()).min(INT8_BLOCK);
                    let Some(block) = bytes.get(at..at + 1 + n.div_ceil(2)) else {
                        break;
                    };
                    at += block.len();
                    let Some((&e, qs)) = block.split_first() else {
                        break;
                    };
                    let e = e as i8;
                    if e == NOT_FINITE {
                        values.extend(std::iter::repeat_n(f32::NAN, n));
                        continue;
                    }
                    let s = pow2(i32::from(e));
                    // A nibble's sign bit extended: shift it to the top, back down.
                    let value = |nibble: u8| f32::from(((nibble << 4) as i8) >> 4) * s;
                    let pairs = qs.iter().flat_map(|&b| [value(b & 0x0f), value(b >> 4)]);
                    values.extend(pairs.take(n));
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
            .ok_or_else(|| format!("no encoding {s:?} (f32, f16, int8 or int4)"))
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

/// `v / 2^e` rounded (half away from zero) into `-levels..=levels`, given
/// `inv = 2^-e`. Adding a signed half and truncating rounds as
/// [`f32::round`] does but for values a hair under a half, and needs no
/// library call (`round` has no instruction on baseline x86-64); both
/// ends use this one definition.
fn quantize(v: f32, inv: f32, levels: f32) -> i8 {
    let x = (v * inv).clamp(-levels, levels);
    (x + 0.5f32.copysign(x)) as i8
}

/// The smallest exponent `e` with `max |v| <= levels · 2^e` (so every
/// value of the block fits its integer), or [`NOT_FINITE`].
fn block_exponent(block: &[f32], levels: f32) -> i8 {
    // The largest magnitude by its bits: without the sign bit, finite
    // floats order as their bits do, and infinities and NaNs come above
    // every finite one. An integer maximum vectorizes; `f32::max` (with
    // its NaN rule) made this loop half of a round trip's time.
    let max_bits = block
        .iter()
        .map(|v| v.to_bits() & 0x7fff_ffff)
        .max()
        .unwrap_or(0);
    if max_bits >= f32::INFINITY.to_bits() {
        return NOT_FINITE;
    }
    let max = f32::from_bits(max_bits);
    let mut e: i32 = -127;
    if max > 0.0 {
        // An estimate, then the exact smallest exponent.
        e = ((max / levels).log2().ceil() as i32).clamp(-127, 127);
        while e < 127 && max > levels * pow2(e) {
            e += 1;
        }
        while e > -127 && max <= levels * pow2(e - 1) {
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
            assert!(out.len() <= enc.max_bytes(values.len()), "{enc}");
            if !enc.is_deflated() {
                assert_eq!(out.len(), enc.max_bytes(values.len()), "{enc}");
            }
            let mut expected = values.clone();
            enc.round_trip(&mut expected);
            let got = enc.get(&out, values.len());
            assert_eq!(got.as_ref(), Ok(&expected), "{enc}");
            // Exact on its own output: encoding it again changes nothing.
            let mut again = Vec::new();
            enc.put(&mut again, &expected);
            assert_eq!(enc.get(&again, expected.len()), Ok(expected), "{enc}");
            // Bytes of another length are refused, not guessed at.
            assert!(enc.get(&out[..out.len() - 1], values.len()).is_err());
            assert!(enc.get(&out, values.len() + 2).is_err(), "{enc}");
        }
    }

    #[test]
    fn the_lossy_encodings_are_close() {
        let values = sample(4096);
        for (enc, tolerance) in [
            (Encoding::F16, 1e-3),
            (Encoding::Int8, 1.0 / 64.0),
            (Encoding::Int4, 1.0 / 7.0),
        ] {
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
        let got = Encoding::Int8.get(&out, values.len()).unwrap_or_default();
        assert_eq!(got.len(), values.len());
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
    fn int4_packs_two_values_a_byte_with_odd_tails_and_signs_intact() {
        // Every level from -7 to 7 at scale 1, and an odd tail of 3 values
        // (its last byte half used) at scale 1/2.
        let values: Vec<f32> = (0..67).map(|i| (i % 15) as f32 - 7.0).collect();
        let mut out = Vec::new();
        Encoding::Int4.pack(&mut out, &values);
        assert_eq!(out.len(), Encoding::Int4.packed_bytes(values.len()));
        assert_eq!(out.len(), (1 + 32) + (1 + 2));
        assert_eq!(Encoding::Int4.unpack(&out, values.len()), values);
        let mut out = Vec::new();
        Encoding::Int4.put(&mut out, &values);
        assert_eq!(Encoding::Int4.get(&out, values.len()), Ok(values));
        // A non-finite value turns its block to NaN, and only its block.
        let mut values = vec![0.5f32; 130];
        values[3] = f32::NAN;
        let mut out = Vec::new();
        Encoding::Int4.put(&mut out, &values);
        let got = Encoding::Int4.get(&out, values.len()).unwrap_or_default();
        assert_eq!(got.len(), values.len());
        assert!(got[..64].iter().all(|v| v.is_nan()));
        assert!(got[64..].iter().all(|&v| v == 0.5));
    }

    #[test]
    fn int4_deflates_a_change_of_small_integers_and_refuses_a_bomb() {
        // Mostly zeros and ±1 in each block, as in a model's change.
        let values: Vec<f32> = (0..61_706)
            .map(|i| match (i * 7919) % 10 {
                0..=3 => 0.0,
                4..=5 => 0.01,
                6..=7 => -0.01,
                8 => 0.03,
                _ => -0.07,
            })
            .collect();
        let mut out = Vec::new();
        Encoding::Int4.put(&mut out, &values);
        let packed = Encoding::Int4.packed_bytes(values.len());
        assert!(
            out.len() < packed * 3 / 4,
            "{} of {packed} bytes",
            out.len()
        );
        let mut expected = values.clone();
        Encoding::Int4.round_trip(&mut expected);
        assert_eq!(Encoding::Int4.get(&out, values.len()), Ok(expected));
        // A few bytes that inflate to far more than the values they claim.
        let bomb = miniz_oxide::deflate::compress_to_vec(&vec![0u8; 1 << 20], DEFLATE_LEVEL);
        assert!(Encoding::Int4.get(&bomb, 64).is_err());
        assert!(
            Encoding::Int4.get(&[0xff; 40], 64).is_err(),
            "not deflate at all"
        );
    }

    #[test]
    fn names_parse_back() {
        for enc in ENCODINGS {
            assert_eq!(enc.name().parse::<Encoding>(), Ok(enc));
        }
        assert!("int2".parse::<Encoding>().is_err());
    }
}
