//! A trained Hearth model as an ONNX file (opset 13): the graph follows the
//! model's own description ([`ArchInfo`]) layer by layer, and the
//! parameters become its initializers.
//!
//! Input `pixels`: float32 `[N, 1, 28, 28]`, values 0–255 (divided by 255 in
//! the graph, as the trainer does). Output `probabilities`: float32
//! `[N, 10]`, the softmax of the last layer.

mod proto;

use hearth_worker::{ArchInfo, LayerInfo, TensorInfo};
use proto::Message;

/// The ONNX opset the graph uses.
pub const OPSET: i64 = 13;
/// ONNX IR version of the file (the one that goes with opset 13).
const IR_VERSION: i64 = 7;
/// Name of the graph's input.
pub const INPUT: &str = "pixels";
/// Name of the graph's output.
pub const OUTPUT: &str = "probabilities";

/// ONNX `TensorProto.DataType.FLOAT`.
const FLOAT: i64 = 1;
/// ONNX `AttributeProto.AttributeType`.
const ATTR_INT: i64 = 2;
const ATTR_INTS: i64 = 7;

/// An attribute of a node.
enum Attr {
    Int(i64),
    Ints(Vec<i64>),
}

/// The graph being built: nodes, initializers, and the last value's name.
struct Graph<'a> {
    arch: &'a ArchInfo,
    params: &'a [f32],
    nodes: Vec<Message>,
    initializers: Vec<Message>,
    last: String,
}

impl<'a> Graph<'a> {
    fn node(&mut self, op: &str, name: &str, inputs: &[&str], attrs: &[(&str, Attr)]) {
        self.node_to(op, name, inputs, attrs, format!("{name}.out"));
    }

    /// A node whose output is named `output`.
    fn node_to(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
        output: String,
    ) {
        let mut n = Message::new();
        for i in inputs {
            n = n.string(1, i);
        }
        n = n.string(2, &output).string(3, name).string(4, op);
        for (key, value) in attrs {
            let a = Message::new().string(1, key);
            let a = match value {
                Attr::Int(v) => a.int(3, *v).int(20, ATTR_INT),
                Attr::Ints(vs) => a.ints(8, vs).int(20, ATTR_INTS),
            };
            n = n.message(5, &a);
        }
        self.nodes.push(n);
        self.last = output;
    }

    /// `values` as an initializer of shape `dims` named `name`.
    fn initializer(&mut self, name: &str, dims: &[i64], values: &[f32]) {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = Message::new()
            .ints(1, dims)
            .int(2, FLOAT)
            .string(8, name)
            .bytes(9, &raw);
        self.initializers.push(t);
    }

    fn tensor(&self, layer: &str, what: &str) -> Result<&'a TensorInfo, String> {
        let name = format!("{layer}.{what}");
        self.arch
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("{} has no tensor {name}", self.arch.name))
    }

    /// The layer's weight and bias as initializers (the weight reshaped to
    /// `weight_dims` if given); their names.
    fn weights(
        &mut self,
        layer: &str,
        weight_dims: Option<Vec<i64>>,
    ) -> Result<(String, String), String> {
        let (w, b) = (self.tensor(layer, "weight")?, self.tensor(layer, "bias")?);
        let slice = |t: &TensorInfo| {
            self.params
                .get(t.offset..t.offset + t.len)
                .ok_or_else(|| format!("{} is outside the parameters", t.name))
        };
        let (wv, bv) = (slice(w)?, slice(b)?);
        let dims = weight_dims.unwrap_or_else(|| w.shape.iter().map(|&d| d as i64).collect());
        self.initializer(&w.name, &dims, wv);
        self.initializer(&b.name, &[b.len as i64], bv);
        Ok((w.name.clone(), b.name.clone()))
    }

    /// A dense layer: flatten, then `x · Wᵀ + b`.
    fn dense(&mut self, layer: &LayerInfo, weight_dims: Option<Vec<i64>>) -> Result<(), String> {
        let (w, b) = self.weights(&layer.name, weight_dims)?;
        let x = self.last.clone();
        self.node(
            "Flatten",
            &format!("{}.flatten", layer.name),
            &[&x],
            &[("axis", Attr::Int(1))],
        );
        let x = self.last.clone();
        self.node(
            "Gemm",
            &layer.name,
            &[&x, &w, &b],
            &[("transB", Attr::Int(1))],
        );
        Ok(())
    }

    fn layer(&mut self, layer: &LayerInfo) -> Result<(), String> {
        let x = self.last.clone();
        let kind = layer.kind.as_str();
        let pool = [
            ("kernel_shape", Attr::Ints(vec![2, 2])),
            ("strides", Attr::Ints(vec![2, 2])),
        ];
        match kind {
            "relu" => self.node("Relu", &layer.name, &[&x], &[]),
            "tanh" => self.node("Tanh", &layer.name, &[&x], &[]),
            "max-pool 2x2" => self.node("MaxPool", &layer.name, &[&x], &pool),
            "avg-pool 2x2" => self.node("AveragePool", &layer.name, &[&x], &pool),
            "dense" => self.dense(layer, None)?,
            _ if kind.starts_with("conv2d") && kind.contains("computed as dense") => {
                // A convolution as large as its input: a dense layer over
                // the flattened input, with the 4-D weight as a matrix.
                let w = self.tensor(&layer.name, "weight")?;
                let rows = *w.shape.first().ok_or("a weight without a shape")? as i64;
                let dims = vec![rows, w.len as i64 / rows.max(1)];
                self.dense(layer, Some(dims))?;
            }
            _ if kind.starts_with("conv2d") => {
                let (k, pad) = conv_geometry(kind)?;
                let (w, b) = self.weights(&layer.name, None)?;
                self.node(
                    "Conv",
                    &layer.name,
                    &[&x, &w, &b],
                    &[
                        ("kernel_shape", Attr::Ints(vec![k, k])),
                        ("pads", Attr::Ints(vec![pad; 4])),
                        ("strides", Attr::Ints(vec![1, 1])),
                    ],
                );
            }
            other => {
                return Err(format!(
                    "layer {} is a {other}, which has no ONNX form here",
                    layer.name
                ));
            }
        }
        Ok(())
    }
}

/// Kernel side and padding of a layer kind like "conv2d 5x5 pad 2".
fn conv_geometry(kind: &str) -> Result<(i64, i64), String> {
    let bad = || format!("cannot read a convolution's size from {kind:?}");
    let mut words = kind.split_whitespace().skip(1);
    let k = words
        .next()
        .and_then(|s| s.split('x').next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let pad = match (words.next(), words.next()) {
        (Some("pad"), Some(p)) => p.parse().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    Ok((k, pad))
}

fn value_info(name: &str, dims: &[Result<i64, &str>]) -> Message {
    let mut shape = Message::new();
    for d in dims {
        let dim = match d {
            Ok(v) => Message::new().int(1, *v),
            Err(param) => Message::new().string(2, param),
        };
        shape = shape.message(1, &dim);
    }
    let tensor = Message::new().int(1, FLOAT).message(2, &shape);
    let ty = Message::new().message(1, &tensor);
    Message::new().string(1, name).message(2, &ty)
}

/// The ONNX file of a model of architecture `arch` with parameters `params`.
pub fn export(arch: &ArchInfo, params: &[f32]) -> Result<Vec<u8>, String> {
    if params.len() != arch.param_count {
        return Err(format!(
            "{} parameters for {}, which has {}",
            params.len(),
            arch.name,
            arch.param_count
        ));
    }
    if let Some(i) = params.iter().position(|p| !p.is_finite()) {
        return Err(format!("parameter {i} is {}", params[i]));
    }
    let mut g = Graph {
        arch,
        params,
        nodes: Vec::new(),
        initializers: Vec::new(),
        last: INPUT.to_string(),
    };
    g.initializer("pixel_scale", &[], &[255.0]);
    g.node("Div", "scale", &[INPUT, "pixel_scale"], &[]);
    for layer in &arch.layers {
        g.layer(layer)?;
    }
    let logits = g.last.clone();
    let axis = [("axis", Attr::Int(1))];
    g.node_to("Softmax", "softmax", &[&logits], &axis, OUTPUT.into());
    let classes = arch
        .layers
        .last()
        .map_or(0, |l| l.output_shape.iter().product::<usize>()) as i64;
    let mut graph = Message::new();
    for n in &g.nodes {
        graph = graph.message(1, n);
    }
    graph = graph.string(2, &arch.name);
    for t in &g.initializers {
        graph = graph.message(5, t);
    }
    let mut input_dims = vec![Err("N")];
    input_dims.extend(arch.input_shape.iter().map(|&d| Ok(d as i64)));
    graph = graph
        .message(11, &value_info(INPUT, &input_dims))
        .message(12, &value_info(OUTPUT, &[Err("N"), Ok(classes)]));
    let opset = Message::new().string(1, "").int(2, OPSET);
    Ok(Message::new()
        .int(1, IR_VERSION)
        .string(2, "hearth")
        .string(3, env!("CARGO_PKG_VERSION"))
        .message(7, &graph)
        .message(8, &opset)
        .into_bytes())
}

#[cfg(test)]
mod tests;
