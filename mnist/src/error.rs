//! Load errors; each names the file it is about.

use std::path::PathBuf;

/// Why MNIST could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("while reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Neither `NAME` nor `NAME.gz` exists.
    #[error("{} has neither {name} nor {name}.gz", dir.display())]
    Missing {
        /// Directory searched.
        dir: PathBuf,
        /// File name without `.gz`.
        name: String,
    },
    /// The file is not gzip although it is named `.gz`, or the stream is corrupt.
    #[error("while decompressing {}: {source}", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// The IDX header is wrong.
    #[error("while reading {}: expected magic {expected}, found {found}", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// 2051 for images, 2049 for labels.
        expected: u32,
        /// What the file says.
        found: u32,
    },
    /// Image dimensions other than 28×28.
    #[error("while reading {}: images are {rows}x{cols}, expected 28x28", path.display())]
    BadDimensions {
        /// The file.
        path: PathBuf,
        /// Rows per image.
        rows: u32,
        /// Columns per image.
        cols: u32,
    },
    /// The body is shorter (or longer) than the header promises.
    #[error("while reading {}: header promises {expected} bytes of data, file has {found}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// A label outside 0-9.
    #[error("while reading {}: label {value} at index {index} is not a digit", path.display())]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// Sample index.
        index: usize,
        /// The value found.
        value: u8,
    },
    /// Images and labels disagree on the number of samples.
    #[error("{} has {n_images} images but {} has {n_labels} labels", images.display(), labels.display())]
    CountMismatch {
        /// Images file.
        images: PathBuf,
        /// Number of images.
        n_images: usize,
        /// Labels file.
        labels: PathBuf,
        /// Number of labels.
        n_labels: usize,
    },
    /// The file's SHA-256 differs from `SHA256SUMS`.
    #[error("checksum mismatch for {}: SHA256SUMS says {expected}, file is {actual}", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Listed digest.
        expected: String,
        /// Computed digest.
        actual: String,
    },
}

/// Result alias of the loader.
pub type Result<T> = core::result::Result<T, Error>;
