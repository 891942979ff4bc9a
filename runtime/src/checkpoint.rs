//! Model parameters as `safetensors`, one tensor per named parameter
//! (shared by the device host and the coordinator).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use hearth_worker::ArchInfo;
use safetensors::tensor::{Dtype, TensorView};

/// Writes `params` (laid out as `arch.tensors` says) to `path`.
pub fn save(
    path: &Path,
    arch: &ArchInfo,
    params: &[f32],
    metadata: HashMap<String, String>,
) -> Result<()> {
    ensure!(
        params.len() == arch.param_count,
        "{} parameters for {} which has {}",
        params.len(),
        arch.name,
        arch.param_count
    );
    let bytes: Vec<Vec<u8>> = arch
        .tensors
        .iter()
        .map(|t| {
            params[t.offset..t.offset + t.len]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect()
        })
        .collect();
    let views = arch
        .tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            Ok((
                t.name.clone(),
                TensorView::new(Dtype::F32, t.shape.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let mut meta = metadata;
    meta.insert("arch".into(), arch.name.clone());
    safetensors::serialize_to_file(views, Some(meta), path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads a checkpoint written by [`save`] back into a flat vector for `arch`.
pub fn load(path: &Path, arch: &ArchInfo) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("parsing {}", path.display()))?;
    let mut params = vec![0.0f32; arch.param_count];
    for t in &arch.tensors {
        let view = st
            .tensor(&t.name)
            .with_context(|| format!("{} has no tensor {}", path.display(), t.name))?;
        ensure!(
            view.dtype() == Dtype::F32 && view.shape() == t.shape.as_slice(),
            "{}: wrong dtype or shape",
            t.name
        );
        for (dst, src) in params[t.offset..t.offset + t.len]
            .iter_mut()
            .zip(view.data().chunks_exact(4))
        {
            *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
    }
    Ok(params)
}

/// The architecture name stored in a checkpoint's metadata.
pub fn arch_of(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("parsing {}", path.display()))?;
    meta.metadata()
        .as_ref()
        .and_then(|m| m.get("arch").cloned())
        .with_context(|| {
            format!(
                "{} does not say its architecture: pass --arch",
                path.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_worker::{Model, ModelConfig, OptimizerConfig};

    #[test]
    fn round_trip_keeps_every_bit_and_names_tensors() {
        let m = Model::new(&ModelConfig {
            arch: "lenet5".into(),
            seed: 1,
            optimizer: OptimizerConfig::default(),
        })
        .unwrap();
        let dir = std::env::temp_dir().join(format!("hearth-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        save(&path, &m.describe(), m.params(), HashMap::new()).unwrap();
        let back = load(&path, &m.describe()).unwrap();
        assert_eq!(arch_of(&path).unwrap(), "lenet5");
        assert_eq!(back, m.params());
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("c1.weight").unwrap().shape(), &[6, 1, 5, 5]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
