//! Fully connected layer: `y = W·x + b` for each sample.

use super::{Layer, TensorSpec};
use crate::gemm::{gemm_nn, gemm_nt};

/// `outputs × inputs` weights and `outputs` biases.
///
/// `weight_shape` only names the tensor (LeNet-5's C5 is a 5×5 convolution
/// over a 5×5 input, which is exactly a dense layer with a 4-D weight).
pub struct Dense {
    name: String,
    kind: String,
    inputs: usize,
    outputs: usize,
    weight_shape: Vec<usize>,
    fans: (usize, usize),
}

impl Dense {
    /// A plain dense layer.
    pub fn new(name: &str, inputs: usize, outputs: usize) -> Self {
        Self {
            name: name.to_string(),
            kind: "dense".to_string(),
            inputs,
            outputs,
            weight_shape: vec![outputs, inputs],
            fans: (inputs, outputs),
        }
    }

    /// A `k × k` convolution that covers its whole `cin × k × k` input (1×1 output).
    pub fn full_conv(name: &str, cin: usize, cout: usize, k: usize) -> Self {
        Self {
            name: name.to_string(),
            kind: format!("conv2d {k}x{k} (covers its input: computed as dense)"),
            inputs: cin * k * k,
            outputs: cout,
            weight_shape: vec![cout, cin, k, k],
            fans: (cin * k * k, cout * k * k),
        }
    }
}

impl Layer for Dense {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> String {
        self.kind.clone()
    }

    fn out_shape(&self) -> Vec<usize> {
        if self.weight_shape.len() == 4 {
            vec![self.outputs, 1, 1]
        } else {
            vec![self.outputs]
        }
    }

    fn in_len(&self) -> usize {
        self.inputs
    }

    fn tensors(&self) -> Vec<TensorSpec> {
        vec![
            TensorSpec {
                name: "weight",
                shape: self.weight_shape.clone(),
                xavier_fans: Some(self.fans),
                wd_mult: 1.0,
            },
            TensorSpec {
                name: "bias",
                shape: vec![self.outputs],
                xavier_fans: None,
                wd_mult: 0.0,
            },
        ]
    }

    fn forward(&mut self, params: &[f32], x: &[f32], y: &mut [f32], batch: usize) {
        let (ni, no) = (self.inputs, self.outputs);
        let (w, bias) = params.split_at(no * ni);
        for row in y[..batch * no].chunks_exact_mut(no) {
            crate::simd::copy(row, bias);
        }
        gemm_nt(batch, no, ni, x, ni, w, ni, y, no, true);
    }

    fn backward(
        &mut self,
        params: &[f32],
        x: &[f32],
        _y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dparams: &mut [f32],
        batch: usize,
    ) {
        let (ni, no) = (self.inputs, self.outputs);
        let w = &params[..no * ni];
        let (dw, dbias) = dparams.split_at_mut(no * ni);
        // dW += dYᵀ · X  (dY is batch × no, read transposed)
        gemm_nn(no, ni, batch, dy, 1, no, x, ni, dw, ni, true);
        // db += column sums of dY, one fixed order per output
        for (o, db) in dbias.iter_mut().enumerate() {
            let mut s = 0.0;
            for b in 0..batch {
                s += dy[b * no + o];
            }
            *db += s;
        }
        if let Some(dx) = dx {
            // dX = dY · W
            gemm_nn(batch, ni, no, dy, no, 1, w, ni, dx, ni, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck;

    #[test]
    fn gradients_match_finite_differences() {
        gradcheck::check(&mut Dense::new("fc", 7, 5), 3, 1e-2);
        gradcheck::check(&mut Dense::full_conv("c5", 2, 3, 2), 2, 1e-2);
    }
}
