//! The architectures a model can be built as, by name.

use crate::error::{Error, Result};
use crate::layers::{Conv2d, Dense, Layer, Pool2x2, PoolKind, Relu, Tanh};

/// Architecture names accepted by [`build`].
pub const ARCHITECTURES: &[&str] = &["lenet5", "lenet5-tanh", "lenet-mxnet"];

/// Side of the (square) input image.
pub const IMAGE_SIDE: usize = 28;
/// Bytes per input image.
pub const IMAGE_LEN: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of classes.
pub const CLASSES: usize = 10;

/// Builds the layers of architecture `name`.
///
/// - `lenet5`: LeNet-5 (28×28 padded to 32×32; C1 6@5×5, S2, C3 16@5×5, S4,
///   C5 120@5×5, F6 84, 10), with ReLU and max-pooling; 61,706 parameters.
/// - `lenet5-tanh`: the same network as published in 1998: tanh and average
///   pooling (the variant the study's MXNet run resembles).
/// - `lenet-mxnet`: MXNet's example LeNet: conv 20@5×5, tanh, max-pool,
///   conv 50@5×5, tanh, max-pool, dense 500, tanh, dense 10; 431,080 parameters.
pub fn build(name: &str) -> Result<Vec<Box<dyn Layer>>> {
    match name {
        "lenet5" => Ok(lenet5(true)),
        "lenet5-tanh" => Ok(lenet5(false)),
        "lenet-mxnet" => Ok(lenet_mxnet()),
        _ => Err(Error::UnknownArchitecture {
            name: name.to_string(),
            known: ARCHITECTURES.join(", "),
        }),
    }
}

fn act(modern: bool, name: &str, shape: Vec<usize>) -> Box<dyn Layer> {
    if modern {
        Box::new(Relu::new(name, shape))
    } else {
        Box::new(Tanh::new(name, shape))
    }
}

fn lenet5(modern: bool) -> Vec<Box<dyn Layer>> {
    let pool = if modern { PoolKind::Max } else { PoolKind::Avg };
    vec![
        Box::new(Conv2d::new("c1", 1, 6, 5, 2, 28, 28)),
        act(modern, "c1.act", vec![6, 28, 28]),
        Box::new(Pool2x2::new("s2", pool, 6, 28, 28)),
        Box::new(Conv2d::new("c3", 6, 16, 5, 0, 14, 14)),
        act(modern, "c3.act", vec![16, 10, 10]),
        Box::new(Pool2x2::new("s4", pool, 16, 10, 10)),
        Box::new(Dense::full_conv("c5", 16, 120, 5)),
        act(modern, "c5.act", vec![120, 1, 1]),
        Box::new(Dense::new("f6", 120, 84)),
        act(modern, "f6.act", vec![84]),
        Box::new(Dense::new("output", 84, CLASSES)),
    ]
}

fn lenet_mxnet() -> Vec<Box<dyn Layer>> {
    vec![
        Box::new(Conv2d::new("conv1", 1, 20, 5, 0, 28, 28)),
        Box::new(Tanh::new("conv1.act", vec![20, 24, 24])),
        Box::new(Pool2x2::new("pool1", PoolKind::Max, 20, 24, 24)),
        Box::new(Conv2d::new("conv2", 20, 50, 5, 0, 12, 12)),
        Box::new(Tanh::new("conv2.act", vec![50, 8, 8])),
        Box::new(Pool2x2::new("pool2", PoolKind::Max, 50, 8, 8)),
        Box::new(Dense::new("fc1", 800, 500)),
        Box::new(Tanh::new("fc1.act", vec![500])),
        Box::new(Dense::new("fc2", 500, CLASSES)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_count(name: &str) -> usize {
        build(name)
            .unwrap()
            .iter()
            .flat_map(|l| l.tensors())
            .map(|t| t.numel())
            .sum()
    }

    #[test]
    fn parameter_counts_match_the_published_networks() {
        assert_eq!(param_count("lenet5"), 61_706);
        assert_eq!(param_count("lenet5-tanh"), 61_706);
        assert_eq!(param_count("lenet-mxnet"), 431_080);
    }

    #[test]
    fn layer_shapes_chain() {
        for name in ARCHITECTURES {
            let layers = build(name).unwrap();
            assert_eq!(layers[0].in_len(), IMAGE_LEN);
            for w in layers.windows(2) {
                assert_eq!(
                    w[0].out_len(),
                    w[1].in_len(),
                    "{name}: {} -> {}",
                    w[0].name(),
                    w[1].name()
                );
            }
            assert_eq!(layers.last().unwrap().out_len(), CLASSES);
        }
    }

    #[test]
    fn unknown_name_is_an_error_listing_known_ones() {
        let err = build("resnet").err().unwrap().to_string();
        assert!(err.contains("resnet") && err.contains("lenet5"), "{err}");
    }
}
