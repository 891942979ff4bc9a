//! A mutation fuzzer for frames, shared by the decoder's fuzz test and the
//! live-socket test: seeds (valid frames of every kind, and a kept corpus
//! of inputs that once found a bug) bent by bit flips, truncation, length
//! fields set to edge values, splices and random tails.

use crate::messages::*;
use crate::{IMAGE_LEN, encode};

/// A small, fast, seeded generator (xorshift64*); fuzzing must be
/// reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Valid frames of every message kind, small enough to mutate quickly.
pub fn seeds() -> Vec<Vec<u8>> {
    let caps = Capabilities {
        kind: WorkerKind::Host,
        architectures: vec!["lenet5".into()],
        threads: 1,
        memory_mib: 64,
        images_per_second: 0.0,
        encodings: crate::encoding::ENCODINGS.to_vec(),
        sample_cache: 0,
    };
    let messages = [
        Message::Hello(Hello {
            worker_id: "fuzz".into(),
            nonce: vec![1; 16],
            component_digest: "ab".repeat(32),
            capabilities: caps,
        }),
        Message::Welcome(Welcome {
            session: 3,
            arch: "lenet5".into(),
            seed: 1,
            optimizer: OptimizerConfig::default(),
            proof: vec![2; 32],
            initial: None,
        }),
        Message::Reject(Reject {
            reason: "no".into(),
        }),
        Message::Challenge(Challenge { nonce: vec![3; 16] }),
        Message::Proof(Proof { mac: vec![4; 32] }),
        Message::Assign(Assign {
            round: 1,
            params_version: 1,
            learning_rate: 0.05,
            steps: vec![1, 1],
            reply: UpdateKind::Delta,
            params: vec![0.5; 8],
            params_encoding: Encoding::Int8,
            params_base: Some(0),
            reply_encoding: Encoding::F16,
            shift: 0,
            prefetched: false,
            pixels: (0..2 * IMAGE_LEN)
                .map(|i| if i % 5 < 3 { 0 } else { 7 })
                .collect(),
            labels: vec![1, 9],
            cache: None,
            component: String::new(),
        }),
        Message::Prefetch(Prefetch {
            round: 3,
            pixels: vec![0; IMAGE_LEN],
            labels: vec![2],
            cache: Some(SampleRefs {
                ids: vec![4, 8, 15],
                held: vec![true, false, true],
                reset: true,
            }),
            head_start: Some(HeadStart {
                learning_rate: 0.05,
                steps: vec![2, 1],
                shift: 0,
                own_share: 0.5,
            }),
        }),
        Message::Result(RoundResult {
            round: 1,
            params_version: 1,
            samples: 2,
            loss_sum: 1.5,
            correct: 1,
            kind: UpdateKind::Delta,
            values: vec![0.25; 8],
            encoding: Encoding::F16,
            compute_seconds: 0.0,
        }),
        Message::Result(RoundResult {
            round: 2,
            params_version: 2,
            samples: 1,
            loss_sum: 0.5,
            correct: 1,
            kind: UpdateKind::Delta,
            values: vec![-0.75, 0.25, 0.5],
            encoding: Encoding::Int4,
            compute_seconds: 0.0,
        }),
        Message::Prefetch(Prefetch {
            round: 2,
            pixels: (0..IMAGE_LEN)
                .map(|i| if i % 3 == 0 { 9 } else { 0 })
                .collect(),
            labels: vec![4],
            cache: None,
            head_start: Some(HeadStart {
                learning_rate: 0.05,
                steps: vec![1],
                shift: 2,
                own_share: 1.0,
            }),
        }),
        Message::Error(ErrorReport {
            round: Some(1),
            reason: "bad".into(),
        }),
        Message::Goodbye(Goodbye {
            reason: "bye".into(),
        }),
        Message::Offer(Offer {
            signature: "{}".into(),
            component: vec![0, 0x61, 0x73, 0x6d, 13, 0, 1, 0],
        }),
        Message::Stock(Stock {
            pixels: (0..2 * IMAGE_LEN)
                .map(|i| if i % 4 == 0 { 200 } else { 0 })
                .collect(),
            labels: vec![3, 5],
            cache: SampleRefs {
                ids: vec![10, 20],
                held: vec![false, false],
                reset: false,
            },
        }),
        Message::ComponentStatus(ComponentStatus {
            digest: "cd".repeat(32),
            state: ComponentState::RolledBack,
            round: Some(4),
            reason: "NaN".into(),
        }),
    ];
    messages.iter().map(encode).collect()
}

/// Values that find off-by-one and overflow bugs in length fields.
const EDGES: [u32; 8] = [0, 1, 2, 0x7f, 0x80, 0xffff, 0x7fff_ffff, u32::MAX];

/// One mutant of `frames[i]` for a random `i` (sometimes spliced with another).
pub fn mutate(rng: &mut Rng, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut f = frames[rng.below(frames.len())].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(9) {
            0 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
            1 if !f.is_empty() => {
                let i = rng.below(f.len());
                f[i] = [0, 0xff, 0x7f, 0x80][rng.below(4)];
            }
            2 => f.truncate(rng.below(f.len() + 1)),
            3 => {
                let n = rng.below(64);
                f.extend((0..n).map(|_| rng.next_u64() as u8));
            }
            4 if f.len() >= 6 => {
                // The header length field.
                let v = EDGES[rng.below(EDGES.len())];
                f[2..6].copy_from_slice(&v.to_le_bytes());
            }
            5 if f.len() >= 10 => {
                // A varint inside the header set to a huge value.
                let i = 6 + rng.below(f.len() - 6);
                for b in f.iter_mut().skip(i).take(5) {
                    *b = 0xff;
                }
            }
            6 => {
                let other = &frames[rng.below(frames.len())];
                let cut = rng.below(f.len() + 1);
                let from = rng.below(other.len() + 1);
                f.truncate(cut);
                f.extend_from_slice(&other[from..]);
            }
            7 if f.len() >= 2 => f[1] = rng.below(16) as u8,
            _ => {
                let n = rng.below(48);
                f = (0..n).map(|_| rng.next_u64() as u8).collect();
                if n >= 1 && rng.below(2) == 0 {
                    f[0] = crate::VERSION;
                }
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_decode_and_mutants_are_reproducible() {
        for s in seeds() {
            assert!(crate::decode(&s).is_ok());
        }
        let frames = seeds();
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        for _ in 0..100 {
            assert_eq!(mutate(&mut a, &frames), mutate(&mut b, &frames));
        }
    }
}
