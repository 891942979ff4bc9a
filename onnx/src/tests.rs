use super::*;
use hearth_worker::{Model, ModelConfig};

fn arch(name: &str) -> (ArchInfo, Vec<f32>) {
    let m = Model::new(&ModelConfig {
        arch: name.into(),
        seed: 3,
        optimizer: Default::default(),
    })
    .unwrap();
    (m.describe(), m.params().to_vec())
}

#[test]
fn convolution_sizes_are_read_from_the_layer_kind() {
    assert_eq!(conv_geometry("conv2d 5x5 pad 2"), Ok((5, 2)));
    assert_eq!(conv_geometry("conv2d 3x3 pad 0"), Ok((3, 0)));
    assert!(conv_geometry("conv2d 5x5").is_err());
    assert!(conv_geometry("conv2d fivexfive pad 2").is_err());
}

#[test]
fn every_architecture_exports_and_bad_parameters_do_not() {
    for name in hearth_worker::ARCHITECTURES {
        let (a, p) = arch(name);
        let bytes = export(&a, &p).unwrap();
        // The parameters are all in it, as raw float32.
        assert!(bytes.len() > 4 * a.param_count, "{name}");
        assert!(export(&a, &p[1..]).is_err());
        let mut nan = p.clone();
        nan[7] = f32::NAN;
        assert!(export(&a, &nan).unwrap_err().contains("parameter 7"));
    }
    let (mut a, p) = arch("lenet5");
    a.layers[1].kind = "gelu".into();
    assert!(export(&a, &p).unwrap_err().contains("gelu"));
}
