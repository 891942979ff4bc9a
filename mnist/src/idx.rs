//! The IDX container: a big-endian header (magic, dimensions) and a body.

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};

use crate::IMAGE_LEN;
use crate::error::{Error, Result};

const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;

/// `dir/name.gz` if present, else `dir/name`.
pub fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    Err(Error::Missing {
        dir: dir.to_path_buf(),
        name: name.to_string(),
    })
}

/// The decompressed content of `bytes` (gzip is recognised by its magic).
/// Bytes after the end of the gzip stream are an error, not ignored.
fn decompress(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // The buffered decoder consumes exactly the stream, so what is left
        // in `rest` afterwards is whatever follows it.
        let mut rest = bytes;
        flate2::bufread::GzDecoder::new(&mut rest)
            .read_to_end(&mut out)
            .map_err(|source| Error::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        if !rest.is_empty() {
            return Err(Error::Gzip {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!(
                    "{} bytes after the end of the gzip stream",
                    rest.len()
                )),
            });
        }
        Ok(out)
    } else if path.extension().is_some_and(|e| e == "gz") {
        Err(Error::Gzip {
            path: path.to_path_buf(),
            source: std::io::Error::other("not a gzip stream"),
        })
    } else {
        Ok(bytes.to_vec())
    }
}

fn be_u32(path: &Path, data: &[u8], at: usize, header_len: usize) -> Result<u32> {
    match data.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(Error::Truncated {
            path: path.to_path_buf(),
            expected: header_len,
            found: data.len(),
        }),
    }
}

/// Parses an images file (magic 2051, n × 28 × 28).
pub fn parse_images(path: &Path, bytes: &[u8]) -> Result<Array2<u8>> {
    let data = decompress(path, bytes)?;
    let magic = be_u32(path, &data, 0, 16)?;
    if magic != IMAGES_MAGIC {
        return Err(Error::BadMagic {
            path: path.to_path_buf(),
            expected: IMAGES_MAGIC,
            found: magic,
        });
    }
    let n = be_u32(path, &data, 4, 16)? as usize;
    let (rows, cols) = (be_u32(path, &data, 8, 16)?, be_u32(path, &data, 12, 16)?);
    if rows as usize * cols as usize != IMAGE_LEN || rows != 28 {
        return Err(Error::BadDimensions {
            path: path.to_path_buf(),
            rows,
            cols,
        });
    }
    let body = &data[16..];
    let expected = n.saturating_mul(IMAGE_LEN);
    if body.len() != expected {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            expected,
            found: body.len(),
        });
    }
    Array2::from_shape_vec((n, IMAGE_LEN), body.to_vec()).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })
}

/// Parses a labels file (magic 2049, n labels in 0..=9).
pub fn parse_labels(path: &Path, bytes: &[u8]) -> Result<Array1<u8>> {
    let data = decompress(path, bytes)?;
    let magic = be_u32(path, &data, 0, 8)?;
    if magic != LABELS_MAGIC {
        return Err(Error::BadMagic {
            path: path.to_path_buf(),
            expected: LABELS_MAGIC,
            found: magic,
        });
    }
    let n = be_u32(path, &data, 4, 8)? as usize;
    let body = &data[8..];
    if body.len() != n {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            expected: n,
            found: body.len(),
        });
    }
    if let Some(index) = body.iter().position(|&l| l > 9) {
        return Err(Error::BadLabel {
            path: path.to_path_buf(),
            index,
            value: body[index],
        });
    }
    Ok(Array1::from(body.to_vec()))
}
