//! Element-wise activations. Their backward passes use the stored output.

use super::Layer;
use crate::math;

macro_rules! activation {
    ($ty:ident, $kind:literal, $doc:literal) => {
        #[doc = $doc]
        pub struct $ty {
            name: String,
            shape: Vec<usize>,
        }

        impl $ty {
            /// An activation over per-sample tensors of `shape`.
            pub fn new(name: &str, shape: Vec<usize>) -> Self {
                Self {
                    name: name.to_string(),
                    shape,
                }
            }
        }

        impl Layer for $ty {
            fn name(&self) -> &str {
                &self.name
            }
            fn kind(&self) -> String {
                $kind.into()
            }
            fn out_shape(&self) -> Vec<usize> {
                self.shape.clone()
            }
            fn in_len(&self) -> usize {
                self.shape.iter().product()
            }
            fn forward(&mut self, _params: &[f32], x: &[f32], y: &mut [f32], batch: usize) {
                let n = self.in_len() * batch;
                for (o, &i) in y[..n].iter_mut().zip(&x[..n]) {
                    *o = Self::f(i);
                }
            }
            fn backward(
                &mut self,
                _params: &[f32],
                _x: &[f32],
                y: &[f32],
                dy: &[f32],
                dx: Option<&mut [f32]>,
                _dparams: &mut [f32],
                batch: usize,
            ) {
                let Some(dx) = dx else { return };
                let n = self.in_len() * batch;
                for ((d, &g), &o) in dx[..n].iter_mut().zip(&dy[..n]).zip(&y[..n]) {
                    *d = g * Self::df_from_output(o);
                }
            }
        }
    };
}

activation!(Relu, "relu", "Rectified linear unit, `max(x, 0)`.");
activation!(Tanh, "tanh", "Hyperbolic tangent.");

impl Relu {
    #[inline(always)]
    fn f(x: f32) -> f32 {
        if x > 0.0 { x } else { 0.0 }
    }
    #[inline(always)]
    fn df_from_output(y: f32) -> f32 {
        if y > 0.0 { 1.0 } else { 0.0 }
    }
}

impl Tanh {
    #[inline(always)]
    fn f(x: f32) -> f32 {
        math::tanh(x)
    }
    #[inline(always)]
    fn df_from_output(y: f32) -> f32 {
        1.0 - y * y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck;

    #[test]
    fn gradients_match_finite_differences() {
        gradcheck::check(&mut Relu::new("relu", vec![3, 4]), 2, 1e-3);
        gradcheck::check(&mut Tanh::new("tanh", vec![3, 4]), 2, 1e-2);
    }
}
