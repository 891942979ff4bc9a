//! Per-layer forward/backward time of one training step, natively.
//!
//! `cargo run --release -p hearth-worker --example layer_times [arch] [batch]`
//! (inputs are deterministic pseudo-random bytes: timing only, no accuracy).

use hearth_worker::{IMAGE_LEN, Model, ModelConfig, OptimizerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let arch = args.next().unwrap_or_else(|| "lenet5".into());
    let batch: usize = args.next().map(|b| b.parse()).transpose()?.unwrap_or(64);
    let mut model = Model::new(&ModelConfig {
        arch,
        seed: 1,
        optimizer: OptimizerConfig::default(),
    })?;
    let mut s = 12345u32;
    let pixels: Vec<u8> = (0..batch * IMAGE_LEN)
        .map(|i| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            // MNIST-like: mostly background, some strokes.
            if (i / 28 + i) % 5 < 2 {
                (s >> 24) as u8
            } else {
                0
            }
        })
        .collect();
    let labels: Vec<u8> = (0..batch).map(|i| (i % 10) as u8).collect();
    for _ in 0..20 {
        model.train_batch(&pixels, &labels)?;
    }
    let times = model.layer_times(&pixels, &labels, 50)?;
    let total: f64 = times.iter().map(|(_, f, b)| f + b).sum();
    println!(
        "{:<10} {:>12} {:>12}   (µs per batch of {batch})",
        "layer", "forward", "backward"
    );
    for (name, f, b) in &times {
        println!("{:<10} {:>12.1} {:>12.1}", name, f * 1e6, b * 1e6);
    }
    println!(
        "total {:.1} µs → {:.0} img/s (layers only)",
        total * 1e6,
        batch as f64 / total
    );
    Ok(())
}
