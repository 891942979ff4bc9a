//! MNIST in the standard IDX format (`.gz` or raw), validated on load.
//!
//! Every malformed input is an error naming the file: a wrong magic number,
//! wrong dimensions, a truncated body, a label outside 0-9, a checksum that
//! does not match `SHA256SUMS`. The repository carries the data in
//! `data/mnist/` ([`bundled_dir`]), so a fresh clone trains offline.

mod checksum;
mod error;
mod idx;

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayView1};

pub use error::{Error, Result};

/// Pixels per image (28 × 28): the model's input, defined by the compute crate.
pub use hearth_worker::IMAGE_LEN;

/// The four standard file names, without `.gz`.
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// One split: `n × 784` pixels and `n` labels.
#[derive(Debug, Clone)]
pub struct Split {
    /// Row `i` is image `i`, row-major 28×28, 0..=255.
    pub images: Array2<u8>,
    /// Label of each image, 0..=9.
    pub labels: Array1<u8>,
}

impl Split {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if the split has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> ArrayView1<'_, u8> {
        self.images.row(i)
    }

    /// Appends the samples at `indices` to `pixels` and `labels` (a batch).
    pub fn gather(&self, indices: &[usize], pixels: &mut Vec<u8>, labels: &mut Vec<u8>) {
        let flat = self.images.as_slice().unwrap_or(&[]);
        for &i in indices {
            pixels.extend_from_slice(&flat[i * IMAGE_LEN..(i + 1) * IMAGE_LEN]);
            labels.push(self.labels[i]);
        }
    }

    /// All pixels, contiguous (`len() × 784`).
    pub fn pixels(&self) -> &[u8] {
        self.images.as_slice().unwrap_or(&[])
    }

    /// The first `n` samples (or all, if fewer).
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            images: self.images.slice(ndarray::s![..n, ..]).to_owned(),
            labels: self.labels.slice(ndarray::s![..n]).to_owned(),
        }
    }
}

/// The training (60,000) and test (10,000) splits.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// Training split.
    pub train: Split,
    /// Test split.
    pub test: Split,
}

/// Where the bundled MNIST is at run time: `$HEARTH_DATA` if set; else
/// `data/mnist` next to the running binary, or `share/hearth/mnist` beside
/// its directory (an installed or copied binary, e.g. on a Raspberry Pi);
/// else this repository's `data/mnist/` (a development build).
pub fn bundled_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HEARTH_DATA") {
        return PathBuf::from(dir);
    }
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        for candidate in [bin.join("data/mnist"), bin.join("../share/hearth/mnist")] {
            if candidate.is_dir() {
                return candidate;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
        .join("mnist")
}

/// Loads both splits from `dir`, verifying `dir/SHA256SUMS` if it exists.
pub fn load(dir: &Path) -> Result<Mnist> {
    let sums = checksum::read_sums(dir)?;
    let read = |name: &str| -> Result<(PathBuf, Vec<u8>)> {
        let path = idx::find(dir, name)?;
        let bytes = std::fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        checksum::verify(&path, &bytes, sums.as_ref())?;
        Ok((path, bytes))
    };
    let split = |images: &str, labels: &str| -> Result<Split> {
        let (ipath, ibytes) = read(images)?;
        let (lpath, lbytes) = read(labels)?;
        let images = idx::parse_images(&ipath, &ibytes)?;
        let labels = idx::parse_labels(&lpath, &lbytes)?;
        if images.nrows() != labels.len() {
            return Err(Error::CountMismatch {
                images: ipath,
                n_images: images.nrows(),
                labels: lpath,
                n_labels: labels.len(),
            });
        }
        Ok(Split { images, labels })
    };
    Ok(Mnist {
        train: split(FILES[0], FILES[1])?,
        test: split(FILES[2], FILES[3])?,
    })
}

#[cfg(test)]
mod tests;
