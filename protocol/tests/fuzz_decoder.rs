//! Fuzzes the decoder: every input must give a message or an error, never a
//! panic, and whatever decodes must encode back to a frame that decodes to
//! the same bytes again.
//!
//! `HEARTH_FUZZ_FRAMES=N` sets the number of mutants (default 100,000);
//! `HEARTH_FUZZ_SEED` the seed. The kept corpus (`fuzz/corpus/*.bin`: inputs
//! that once broke something, plus hand-made edge cases) is replayed first
//! and used as seeds. An input that fails is written there, so it stays a
//! regression test.

use std::path::{Path, PathBuf};

use hearth_protocol::fuzz::{Rng, mutate, seeds};
use hearth_protocol::{decode, encode};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
}

fn corpus() -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// Checks one input: `Ok(true)` if it decoded, `Ok(false)` if it was
/// refused, `Err` with the property that failed.
fn check(input: &[u8]) -> Result<bool, String> {
    let decoded = std::panic::catch_unwind(|| decode(input)).map_err(|_| "decode panicked")?;
    let Ok(message) = decoded else {
        return Ok(false);
    };
    let again = encode(&message);
    match decode(&again) {
        Ok(m) if encode(&m) == again => Ok(true),
        Ok(_) => Err("re-encoding is not stable".into()),
        Err(e) => Err(format!(
            "a decoded message does not decode after encoding: {e}"
        )),
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn the_decoder_survives_100k_mutated_frames() {
    let frames = env_number("HEARTH_FUZZ_FRAMES", 100_000);
    let seed = env_number("HEARTH_FUZZ_SEED", 0x4845_4152_5448);
    let kept = corpus();
    assert!(
        !kept.is_empty(),
        "the kept corpus in {} is empty",
        corpus_dir().display()
    );
    for (i, input) in kept.iter().enumerate() {
        if let Err(e) = check(input) {
            panic!("corpus entry {i}: {e}");
        }
    }
    let mut pool = seeds();
    pool.extend(kept);
    let mut rng = Rng::new(seed);
    let mut valid = 0u64;
    for n in 0..frames {
        let input = mutate(&mut rng, &pool);
        match check(&input) {
            Ok(ok) => valid += u64::from(ok),
            Err(e) => {
                let path = corpus_dir().join(format!("crash-{seed:x}-{n}.bin"));
                let _ = std::fs::write(&path, &input);
                panic!("mutant {n} (kept as {}): {e}", path.display());
            }
        }
    }
    eprintln!("{frames} mutants: {valid} decoded to messages, the rest were refused");
    assert!(
        valid > 0 && valid < frames,
        "the mutants must reach both outcomes"
    );
}
