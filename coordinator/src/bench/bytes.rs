//! Bytes per epoch through the coordinator's link for each vector
//! encoding, from real frames, real MNIST pixels and a real model change.

use anyhow::{Context, Result};
use hearth_protocol::{self as proto, IMAGE_LEN, Message};
use hearth_worker::ModelConfig;

use super::{PARAMS, median, sample_assign, sample_result};

/// The change of LeNet-5 over one round of `k` SGD steps of `batch` MNIST
/// images (the study's learning rate and momentum), after 20 steps of
/// warm-up: what a device's update and the model's way down look like.
fn model_change(data: &hearth_mnist::Mnist, batch: usize, k: usize) -> Result<Vec<f32>> {
    const WARM_UP: usize = 20;
    let mut model = hearth_worker::Model::new(&ModelConfig {
        arch: "lenet5".into(),
        seed: 1,
        optimizer: hearth_worker::OptimizerConfig {
            learning_rate: 0.05,
            momentum: 0.9,
            ..Default::default()
        },
    })?;
    let pixels = data
        .train
        .images
        .as_slice()
        .context("MNIST images are not contiguous")?;
    let labels = data
        .train
        .labels
        .as_slice()
        .context("MNIST labels are not contiguous")?;
    let mut before = Vec::new();
    for step in 0..WARM_UP + k {
        if step == WARM_UP {
            before = model.params().to_vec();
        }
        let (from, to) = (step * batch, (step + 1) * batch);
        let (Some(p), Some(l)) = (
            pixels.get(from * IMAGE_LEN..to * IMAGE_LEN),
            labels.get(from..to),
        ) else {
            anyhow::bail!("fewer than {} training images", to);
        };
        model.train_batch(p, l)?;
    }
    Ok(model
        .params()
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect())
}

/// Bytes per epoch of full MNIST through the coordinator's link, per
/// device, for each vector encoding, from real frames: real MNIST pixels
/// (run-length coded), and a model that moves as training moves it (the
/// change between two versions of LeNet-5 after SGD steps on MNIST).
pub(super) fn bytes_per_epoch(data: &hearth_mnist::Mnist) -> Result<()> {
    let (devices, k, batch) = (11usize, 4usize, 64usize);
    let samples = data.train.len();
    let rounds = samples.div_ceil(devices * k * batch);
    let per_device = samples / devices;
    let raw = data.train.images.as_slice().map_or(0, |s| s.len());
    // Coded as they travel: one device's share of a round at a time.
    let mut coded = Vec::new();
    if let Some(pixels) = data.train.images.as_slice() {
        for share in pixels.chunks(k * batch * proto::IMAGE_LEN) {
            proto::pixels::put(&mut coded, share);
        }
    }
    println!(
        "images: {samples} MNIST training images are {:.1} MB raw, {:.1} MB coded ({:.2}x smaller; run-length coded, then deflated, {} images at a time)",
        raw as f64 / 1e6,
        coded.len() as f64 / 1e6,
        raw as f64 / coded.len().max(1) as f64,
        k * batch
    );
    // Pixels and one label byte per image.
    let pixels_per_device = (coded.len() + samples) as f64 / devices as f64;
    println!(
        "bytes per epoch per device, {devices} devices, K = {k} ({rounds} rounds, {per_device} images each); MXNet dist_sync moves about 45 MB per device:"
    );
    let change = model_change(data, batch, k)?;
    vector_times(&change);
    for encoding in [
        proto::Encoding::F32,
        proto::Encoding::F16,
        proto::Encoding::Int8,
        proto::Encoding::Int4,
    ] {
        let delta = change.clone();
        let down = proto::encode(&Message::Assign(proto::Assign {
            params: delta.clone(),
            params_encoding: encoding,
            params_base: encoding.is_lossy().then_some(0),
            pixels: Vec::new(),
            labels: Vec::new(),
            cache: None,
            steps: Vec::new(),
            ..match sample_assign(1) {
                Message::Assign(a) => a,
                _ => unreachable!("sample_assign makes an assignment"),
            }
        }))
        .len();
        let up = proto::encode(&Message::Result(proto::RoundResult {
            values: delta,
            encoding,
            ..match sample_result() {
                Message::Result(r) => r,
                _ => unreachable!("sample_result makes a result"),
            }
        }))
        .len();
        // The first assignment carries the whole model in f32.
        let first = PARAMS * 4;
        let params_down = first + (rounds - 1) * down;
        let total = params_down as f64 + pixels_per_device + (rounds * up) as f64;
        println!(
            "  {:<4}: {:.2} MB down ({:.2} MB model, {:.2} MB images), {:.2} MB up; {:.2} MB in all",
            encoding.name(),
            (params_down as f64 + pixels_per_device) / 1e6,
            params_down as f64 / 1e6,
            pixels_per_device / 1e6,
            (rounds * up) as f64 / 1e6,
            total / 1e6
        );
    }
    // Kept samples: after the first epoch a round's images are named by
    // their indices (spread over the training set, as a shuffle leaves them).
    let round_samples = k * batch;
    let ids: Vec<u32> = (0..round_samples as u32)
        .map(|i| (i as usize * 7919 % samples) as u32)
        .collect();
    let assign = |cache: Option<proto::SampleRefs>, steps: Vec<u32>| {
        proto::encode(&Message::Assign(proto::Assign {
            pixels: Vec::new(),
            labels: Vec::new(),
            cache,
            steps,
            ..match sample_assign(1) {
                Message::Assign(a) => a,
                _ => unreachable!("sample_assign makes an assignment"),
            }
        }))
        .len()
    };
    let refs = proto::SampleRefs {
        held: vec![true; ids.len()],
        ids,
        reset: false,
    };
    let named = assign(Some(refs), vec![round_samples as u32]) - assign(None, Vec::new());
    println!(
        "  kept samples: after the first epoch a round's {round_samples} images are named in {named} bytes: {:.3} MB per device per epoch instead of {:.2} MB of images",
        (rounds * named) as f64 / 1e6,
        pixels_per_device / 1e6
    );
    Ok(())
}

/// Time to put `change` on the wire, read it back, and round it as error
/// feedback does, for each lossy encoding (median of 101, one thread).
fn vector_times(change: &[f32]) {
    println!(
        "vector encodings, a LeNet-5 change of {} values (median of 101):",
        change.len()
    );
    for encoding in [
        proto::Encoding::F16,
        proto::Encoding::Int8,
        proto::Encoding::Int4,
    ] {
        let time = |f: &mut dyn FnMut()| {
            median(
                (0..101)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        f();
                        t.elapsed().as_secs_f64()
                    })
                    .collect(),
            )
        };
        let mut bytes = Vec::new();
        let put = time(&mut || {
            bytes.clear();
            encoding.put(&mut bytes, change);
        });
        let get = time(&mut || {
            let _ = std::hint::black_box(encoding.get(&bytes, change.len()));
        });
        let mut scratch = change.to_vec();
        let round_trip = time(&mut || {
            scratch.copy_from_slice(change);
            encoding.round_trip(&mut scratch);
        });
        println!(
            "  {:<4}: {} bytes, put {:.3} ms, get {:.3} ms, round trip {:.3} ms",
            encoding.name(),
            bytes.len(),
            put * 1e3,
            get * 1e3,
            round_trip * 1e3
        );
    }
}
