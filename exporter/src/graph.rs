//! A small ONNX graph builder: nodes with fresh value names, constants, weights streamed to
//! an external data file, and the handful of ops the bundles use (docs/BUNDLE.md lists
//! them: only ops that both tract and ONNX Runtime run).
//!
//! Values are plain `String` names, so the model code (vision.rs, merger.rs, decoder.rs)
//! reads like the reference implementation: `let h = g.matmul(&x, &w);`.

use std::collections::HashMap;

use ove_core::onnx_proto::{
    attribute_type, data_location, data_type, tensor_shape_proto, type_proto, AttributeProto,
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::data_file::DataFile;

/// ONNX IR version the bundles declare (docs/BUNDLE.md).
pub const IR_VERSION: i64 = 8;
/// Default-domain opset the bundles use (docs/BUNDLE.md).
pub const OPSET: i64 = 17;
/// Initializers of at least this many bytes go to the external data file; smaller ones
/// (norm weights, shape constants) stay inline where they cost nothing to parse.
pub const EXTERNAL_THRESHOLD: usize = 1024;

/// One dimension of a graph input or output: fixed or symbolic (`dim_param`).
#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(usize),
    Sym(std::borrow::Cow<'static, str>),
}

impl Dim {
    /// A symbolic dimension with a fixed name (`"P"`, `"K"`).
    pub fn sym(name: &'static str) -> Self {
        Dim::Sym(name.into())
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Dim::Fixed(n)
    }
}

impl From<&'static str> for Dim {
    fn from(s: &'static str) -> Self {
        Dim::Sym(s.into())
    }
}

/// An attribute value for [`GraphBuilder::node`].
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// Builds one `GraphProto`, writing large initializers to `data` as they are added.
pub struct GraphBuilder {
    name: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    data: DataFile,
    counter: usize,
    /// Module path prefixed to new value names (`visual.blocks.3.attn/MatMul_120`).
    scope: String,
    /// Scalar and shape constants already emitted, so each is stored once.
    consts: HashMap<String, String>,
    extra_opsets: Vec<(String, i64)>,
    /// Default-domain opset ([`OPSET`] unless [`GraphBuilder::set_opset`] raised it).
    opset: i64,
    /// Initializers of another graph of the bundle, by name, reused instead of written
    /// again ([`GraphBuilder::share_initializers`]).
    shared: HashMap<String, TensorProto>,
}

impl GraphBuilder {
    pub fn new(name: &str, data: DataFile) -> Self {
        Self {
            name: name.to_string(),
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            data,
            counter: 0,
            scope: String::new(),
            consts: HashMap::new(),
            extra_opsets: Vec::new(),
            opset: OPSET,
            shared: HashMap::new(),
        }
    }

    /// Takes the initializers another graph of the bundle wrote, built from the same
    /// tensors by the same code, so two graphs over the same weights store them once: an
    /// external one added again by [`Self::initializer`] points at the bytes already in the
    /// other graph's data file (a name whose type, shape or length differs is written
    /// anew), and [`Self::reuse_shared`] takes any of them, inline ones included, without
    /// its bytes being computed again.
    pub fn share_initializers(&mut self, from: impl IntoIterator<Item = TensorProto>) {
        self.shared
            .extend(from.into_iter().filter_map(|t| Some((t.name.clone()?, t))));
    }

    /// Whether another graph shared an initializer called `name` ([`Self::share_initializers`]).
    pub fn has_shared(&self, name: &str) -> bool {
        self.shared.contains_key(name)
    }

    /// Reuses the shared initializer `name` (see [`Self::share_initializers`]) without its
    /// bytes being computed again; false when no graph shared one of that name. For weights
    /// that are expensive to produce (quantized matrices): the caller knows the same code
    /// made the shared one from the same tensor.
    pub fn reuse_shared(&mut self, name: &str) -> bool {
        match self.shared.get(name) {
            Some(t) => {
                self.initializers.push(t.clone());
                true
            }
            None => false,
        }
    }

    /// Sets the default-domain opset (21 for INT4 `DequantizeLinear`); call it before any
    /// node is added, since some ops (ReduceMean) are emitted differently from opset 18.
    pub fn set_opset(&mut self, version: i64) {
        self.opset = version;
    }

    /// The default-domain opset the graph declares.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// A fresh value name, `hint` followed by a counter (hints are the module paths, so a
    /// traced value says where it comes from).
    pub fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        if self.scope.is_empty() {
            format!("{hint}_{}", self.counter)
        } else {
            format!("{}/{hint}_{}", self.scope, self.counter)
        }
    }

    /// Sets the module path that prefixes the names of the values created from now on.
    pub fn set_scope(&mut self, scope: impl Into<String>) {
        self.scope = scope.into();
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem_type: i32, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem_type, dims));
        name.to_string()
    }

    /// Declares `value` a graph output called `name`, renaming it everywhere it is used.
    pub fn output(&mut self, value: &str, name: &str, elem_type: i32, dims: &[Dim]) {
        if value != name {
            for node in &mut self.nodes {
                for v in node.input.iter_mut().chain(node.output.iter_mut()) {
                    if v == value {
                        *v = name.to_string();
                    }
                }
            }
        }
        self.outputs.push(value_info(name, elem_type, dims));
    }

    /// Adds a node with one output and returns that output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(op);
        self.node_with_outputs(op, "", inputs, &[&out], attrs);
        out
    }

    /// Adds a node with explicit outputs and domain (for multi-output or contrib ops).
    pub fn node_with_outputs(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) {
        let attribute = attrs
            .into_iter()
            .map(|(name, a)| {
                let mut p = AttributeProto {
                    name: Some(name.to_string()),
                    ..Default::default()
                };
                match a {
                    Attr::Int(i) => {
                        p.r#type = Some(attribute_type::INT);
                        p.i = Some(i);
                    }
                    Attr::Ints(v) => {
                        p.r#type = Some(attribute_type::INTS);
                        p.ints = v;
                    }
                    Attr::Float(f) => {
                        p.r#type = Some(attribute_type::FLOAT);
                        p.f = Some(f);
                    }
                }
                p
            })
            .collect();
        let node_name = self.fresh(op);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(node_name),
            op_type: Some(op.to_string()),
            domain: (!domain.is_empty()).then(|| domain.to_string()),
            attribute,
            doc_string: None,
        });
    }

    /// Declares that the graph uses an operator set besides the default one.
    pub fn use_opset(&mut self, domain: &str, version: i64) {
        if !self.extra_opsets.iter().any(|(d, _)| d == domain) {
            self.extra_opsets.push((domain.to_string(), version));
        }
    }

    /// Adds an initializer from little-endian bytes: inline when small, else appended to
    /// the external data file (written now, so nothing large is kept in memory).
    pub fn initializer(
        &mut self,
        name: &str,
        elem_type: i32,
        dims: &[usize],
        bytes: &[u8],
    ) -> anyhow::Result<String> {
        let mut t = TensorProto {
            name: Some(name.to_string()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(elem_type),
            ..Default::default()
        };
        if let Some(shared) = self.shared.get(name).filter(|o| {
            o.dims == t.dims
                && o.data_type == t.data_type
                && o.external_data.iter().any(|e| {
                    e.key.as_deref() == Some("length")
                        && e.value.as_deref() == Some(&bytes.len().to_string())
                })
        }) {
            self.initializers.push(shared.clone());
            return Ok(name.to_string());
        }
        if bytes.len() >= EXTERNAL_THRESHOLD {
            let (offset, length) = self.data.append(bytes)?;
            let entry = |k: &str, v: String| StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v),
            };
            t.data_location = Some(data_location::EXTERNAL);
            t.external_data = vec![
                entry("location", self.data.location().to_string()),
                entry("offset", offset.to_string()),
                entry("length", length.to_string()),
            ];
        } else {
            t.raw_data = Some(bytes.to_vec());
        }
        self.initializers.push(t);
        Ok(name.to_string())
    }

    /// An f32 constant computed at export time (rotary frequencies and the like).
    pub fn const_f32(&mut self, hint: &str, dims: &[usize], values: &[f32]) -> String {
        let name = self.fresh(hint);
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.inline(&name, data_type::FLOAT, dims, bytes)
    }

    /// An f32 scalar constant (rank 0), stored once per value.
    pub fn scalar(&mut self, x: f32) -> String {
        let key = format!("f32:{:08x}", x.to_bits());
        if let Some(v) = self.consts.get(&key) {
            return v.clone();
        }
        let name = self.fresh("const");
        let v = self.inline(&name, data_type::FLOAT, &[], x.to_le_bytes().to_vec());
        self.consts.insert(key, v.clone());
        v
    }

    /// An i64 vector constant (shapes, axes, slice bounds), stored once per value.
    pub fn ints(&mut self, values: &[i64]) -> String {
        self.i64_const(values, &[values.len()])
    }

    /// An i64 scalar constant (rank 0): a Gather index that drops the axis.
    pub fn int_scalar(&mut self, x: i64) -> String {
        self.i64_const(&[x], &[])
    }

    fn i64_const(&mut self, values: &[i64], dims: &[usize]) -> String {
        let key = format!("i64:{dims:?}:{values:?}");
        if let Some(v) = self.consts.get(&key) {
            return v.clone();
        }
        let name = self.fresh("const");
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        let v = self.inline(&name, data_type::INT64, dims, bytes);
        self.consts.insert(key, v.clone());
        v
    }

    fn inline(&mut self, name: &str, elem_type: i32, dims: &[usize], bytes: Vec<u8>) -> String {
        self.initializers.push(TensorProto {
            name: Some(name.to_string()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(elem_type),
            raw_data: Some(bytes),
            ..Default::default()
        });
        name.to_string()
    }

    // ---- ops ----

    pub fn matmul(&mut self, a: &str, b: &str) -> String {
        self.node("MatMul", &[a, b], vec![])
    }
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }
    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.node("Sub", &[a, b], vec![])
    }
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.node("Mul", &[a, b], vec![])
    }
    pub fn div(&mut self, a: &str, b: &str) -> String {
        self.node("Div", &[a, b], vec![])
    }
    pub fn neg(&mut self, a: &str) -> String {
        let m1 = self.scalar(-1.0);
        self.mul(a, &m1)
    }
    /// `a ^ e` for a constant exponent (`Pow(x, 2)` is the square ONNX Runtime's norm
    /// fusions look for; tract turns it into a plain square).
    pub fn pow(&mut self, a: &str, e: f32) -> String {
        let c = self.scalar(e);
        self.node("Pow", &[a, &c], vec![])
    }
    pub fn sqrt(&mut self, a: &str) -> String {
        self.node("Sqrt", &[a], vec![])
    }
    pub fn erf(&mut self, a: &str) -> String {
        self.node("Erf", &[a], vec![])
    }
    pub fn sigmoid(&mut self, a: &str) -> String {
        self.node("Sigmoid", &[a], vec![])
    }
    pub fn tanh(&mut self, a: &str) -> String {
        self.node("Tanh", &[a], vec![])
    }
    pub fn cos(&mut self, a: &str) -> String {
        self.node("Cos", &[a], vec![])
    }
    pub fn sin(&mut self, a: &str) -> String {
        self.node("Sin", &[a], vec![])
    }
    /// Multiplies by a scalar constant.
    pub fn scale(&mut self, a: &str, s: f32) -> String {
        let c = self.scalar(s);
        self.mul(a, &c)
    }
    pub fn cast(&mut self, a: &str, to: i32) -> String {
        self.node("Cast", &[a], vec![("to", Attr::Int(to as i64))])
    }
    pub fn softmax(&mut self, a: &str, axis: i64) -> String {
        self.node("Softmax", &[a], vec![("axis", Attr::Int(axis))])
    }
    /// Mean over `axes`, keeping them (an attribute up to opset 17, an input from 18).
    pub fn reduce_mean(&mut self, a: &str, axes: &[i64]) -> String {
        if self.opset >= 18 {
            let ax = self.ints(axes);
            return self.node("ReduceMean", &[a, &ax], vec![("keepdims", Attr::Int(1))]);
        }
        self.node(
            "ReduceMean",
            &[a],
            vec![
                ("axes", Attr::Ints(axes.to_vec())),
                ("keepdims", Attr::Int(1)),
            ],
        )
    }
    /// Reshape to a constant shape (0 copies the input dim, -1 is inferred).
    pub fn reshape(&mut self, a: &str, shape: &[i64]) -> String {
        let s = self.ints(shape);
        self.node("Reshape", &[a, &s], vec![])
    }
    pub fn transpose(&mut self, a: &str, perm: &[i64]) -> String {
        self.node("Transpose", &[a], vec![("perm", Attr::Ints(perm.to_vec()))])
    }
    pub fn concat(&mut self, parts: &[&str], axis: i64) -> String {
        self.node("Concat", parts, vec![("axis", Attr::Int(axis))])
    }
    pub fn unsqueeze(&mut self, a: &str, axes: &[i64]) -> String {
        let ax = self.ints(axes);
        self.node("Unsqueeze", &[a, &ax], vec![])
    }
    /// Slice with constant bounds on one axis.
    pub fn slice(&mut self, a: &str, axis: i64, start: i64, end: i64) -> String {
        let (s, e, ax) = (self.ints(&[start]), self.ints(&[end]), self.ints(&[axis]));
        self.node("Slice", &[a, &s, &e, &ax], vec![])
    }
    /// Splits `a` along `axis` into parts of the given sizes (Split with a `split` input,
    /// opset 13+); returns the parts' names.
    pub fn split(&mut self, a: &str, axis: i64, sizes: &[i64]) -> Vec<String> {
        let s = self.ints(sizes);
        let outs: Vec<String> = sizes.iter().map(|_| self.fresh("Split")).collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.node_with_outputs(
            "Split",
            "",
            &[a, &s],
            &refs,
            vec![("axis", Attr::Int(axis))],
        );
        outs
    }
    pub fn gather(&mut self, a: &str, indices: &str, axis: i64) -> String {
        self.node("Gather", &[a, indices], vec![("axis", Attr::Int(axis))])
    }

    /// Finishes the graph into a model (the data file is flushed and closed).
    pub fn finish(self, producer: &str) -> anyhow::Result<(ModelProto, u64)> {
        let data_bytes = self.data.finish()?;
        let mut opset_import = vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(self.opset),
        }];
        opset_import.extend(
            self.extra_opsets
                .into_iter()
                .map(|(d, v)| OperatorSetIdProto {
                    domain: Some(d),
                    version: Some(v),
                }),
        );
        let model = ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import,
            producer_name: Some("ove-exporter".into()),
            producer_version: Some(producer.to_string()),
            graph: Some(GraphProto {
                node: self.nodes,
                name: Some(self.name),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok((model, data_bytes))
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Sym(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        doc_string: None,
    }
}
