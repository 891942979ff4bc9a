//! What an offered component must show before a device swaps to it, the
//! same on a host and in a tab: the run's parameter layout, and one step
//! from the current parameters on a batch the device trained on that gives
//! a finite loss and finite parameters.

use hearth_worker::ArchInfo;

/// The offered component builds the run's model with the same parameter
/// layout as the one running (`running`).
pub fn same_layout(running: &ArchInfo, offered: &ArchInfo) -> Result<(), String> {
    if offered.param_count != running.param_count || offered.tensors != running.tensors {
        return Err(format!(
            "its {} has {} parameters in another layout than the {} the run trains",
            offered.name, offered.param_count, running.param_count
        ));
    }
    Ok(())
}

/// The self-test step's loss and the parameters after it are finite.
pub fn sound_step(loss: f32, params: &[f32]) -> Result<(), String> {
    if !loss.is_finite() {
        return Err(format!("its self-test loss is {loss}"));
    }
    if let Some(i) = params.iter().position(|v| !v.is_finite()) {
        return Err(format!("its self-test left parameter {i} at {}", params[i]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_worker::{Model, ModelConfig};

    fn arch(name: &str) -> ArchInfo {
        Model::new(&ModelConfig {
            arch: name.into(),
            seed: 1,
            optimizer: Default::default(),
        })
        .unwrap()
        .describe()
    }

    #[test]
    fn another_layout_or_a_non_finite_step_fails() {
        assert!(same_layout(&arch("lenet5"), &arch("lenet5")).is_ok());
        // lenet5-tanh has the same tensors: its layout is the same.
        assert!(same_layout(&arch("lenet5"), &arch("lenet5-tanh")).is_ok());
        let e = same_layout(&arch("lenet5"), &arch("lenet-mxnet")).unwrap_err();
        assert!(e.contains("431080 parameters"), "{e}");
        assert!(sound_step(0.5, &[1.0, 2.0]).is_ok());
        assert!(
            sound_step(f32::NAN, &[1.0])
                .unwrap_err()
                .contains("loss is NaN")
        );
        assert!(
            sound_step(0.5, &[1.0, f32::INFINITY])
                .unwrap_err()
                .contains("parameter 1")
        );
    }
}
