//! int4 weight-only quantization of Linear layers at export time (`ove export --int4`).
//!
//! [`Int4Linear`] is a [`LinearEmitter`]: for each Linear weight the graph builders ask it
//! for, it either falls back to the float path ([`DenseLinear`]) or reads the weight as
//! f32, quantizes it with `ove-quant` and writes the quantized initializers straight to the
//! graph's data file before the next weight is read, so memory stays bounded by the
//! largest single tensor (its f32 copy plus the packed result).
//!
//! * target `ort`: `com.microsoft::MatMulNBits(A, B, scales[, zero_points])`, bits 4; ONNX
//!   Runtime runs it natively and tract 0.23.9 maps it onto its block-quant kernels.
//! * target `tensorrt`: an INT4 `[K, N]` initializer behind an opset-21 blocked
//!   `DequantizeLinear` (axis 0, block 64 or 128, symmetric) feeding a plain `MatMul`.
//!   Such a `DequantizeLinear` has no partial blocks, so a K that is not a multiple of the
//!   block (the golden MLP's down_proj, K = 160; the patch embedding, K = 588) is
//!   zero-padded: the INT4 weight is `[K', N]` with `K' = K` rounded up to the block and
//!   zero rows past K, and the activation goes through a constant `Pad` (zeros after its
//!   last column) before the `MatMul`, so the product is unchanged. The manifest records
//!   such a tensor as `dequantizelinear-int4-kpad{K}to{K'}`; its error metrics are those
//!   of the real K rows.

use std::cell::RefCell;

use anyhow::{bail, Context, Result};
use ove_core::manifest::QuantizedTensor;
use ove_core::onnx_proto::data_type;
use ove_quant::{
    quantize_matmul_nbits, quantize_trt_int4, MatMulNBitsConfig, MatMulNBitsWeight, WeightView,
    TRT_BLOCK_SIZES,
};

use crate::graph::{Attr, GraphBuilder};
use crate::nn::{DenseLinear, LinearEmitter};
use crate::weights::{LinearWeight, Weights};

/// Which runtime the quantized graph is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Int4Target {
    /// ONNX Runtime (and tract): `com.microsoft::MatMulNBits`.
    #[default]
    Ort,
    /// TensorRT: INT4 initializer + opset-21 blocked `DequantizeLinear` + `MatMul`.
    TensorRt,
}

impl Int4Target {
    /// The name the manifest records: "ort" or "tensorrt".
    pub fn as_str(self) -> &'static str {
        match self {
            Int4Target::Ort => "ort",
            Int4Target::TensorRt => "tensorrt",
        }
    }

    /// Block size used when none is given: 32 for ONNX Runtime (tract's Q4_0 kernels), 128
    /// for TensorRT (it accepts only 64 and 128).
    pub fn default_block_size(self) -> usize {
        match self {
            Int4Target::Ort => 32,
            Int4Target::TensorRt => 128,
        }
    }

    /// Format name recorded per tensor in the manifest.
    pub fn format(self) -> &'static str {
        match self {
            Int4Target::Ort => "matmulnbits",
            Int4Target::TensorRt => "dequantizelinear-int4",
        }
    }
}

impl std::str::FromStr for Int4Target {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ort" | "onnxruntime" => Ok(Int4Target::Ort),
            "tensorrt" | "trt" => Ok(Int4Target::TensorRt),
            _ => bail!("unsupported int4 target {s:?} (want ort or tensorrt)"),
        }
    }
}

/// What `--int4` quantizes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Int4Options {
    pub target: Int4Target,
    /// Values of K per scale; `None`: [`Int4Target::default_block_size`].
    pub block_size: Option<usize>,
    /// Symmetric (no zero points). TensorRT requires it.
    pub symmetric: bool,
    /// Also quantize `lm_head` (or the tied embedding used as lm_head).
    pub lm_head: bool,
    /// Also quantize the vision encoder's and merger's Linear layers.
    pub vision: bool,
    /// Also quantize the embedding table (`embed_tokens.safetensors`) to the
    /// `GatherBlockQuantized` layout, same block size and symmetry; the runtime dequantizes
    /// only the rows it gathers. A tied lm_head keeps its own (float or `lm_head`) weights.
    pub embeddings: bool,
    /// `MatMulNBits` attribute `accuracy_level` (ort target): 0 (not written) computes in
    /// f32 on exactly dequantized weights; 1-4 let ONNX Runtime use lower-precision
    /// activations (4, the default: int8, its fast CPU kernels). tract ignores it. At most
    /// 4; 0 for the TensorRT target.
    pub accuracy_level: u8,
}

impl Default for Int4Options {
    /// What `ove export --int4` does: the decoder's linear layers and lm_head (the largest
    /// single read of a decoded token) in int4, ONNX Runtime target, symmetric, block 32,
    /// accuracy level 4 (int8 activations: ONNX Runtime's fast kernels). Its cost against
    /// [`Int4Options::exact`] is measured in tests/tests/int4.rs.
    fn default() -> Self {
        Self {
            target: Int4Target::Ort,
            block_size: None,
            symmetric: true,
            lm_head: true,
            vision: false,
            embeddings: false,
            accuracy_level: 4,
        }
    }
}

impl Int4Options {
    /// `ove export --int4 --int4-exact`: the decoder's linear layers only (lm_head keeps the
    /// bundle dtype), accuracy level 0 (f32 matmuls on the exactly dequantized weights): the
    /// closest int4 gets to the float model. The base for the TensorRT target too.
    pub fn exact() -> Self {
        Self {
            lm_head: false,
            accuracy_level: 0,
            ..Self::default()
        }
    }

    /// The block size in effect.
    pub fn block_size(&self) -> usize {
        self.block_size
            .unwrap_or_else(|| self.target.default_block_size())
    }

    /// Checks the combination of options before anything is read or written.
    pub fn validate(&self) -> Result<()> {
        let bs = self.block_size();
        match self.target {
            Int4Target::Ort => {
                if !(16..=256).contains(&bs) || !bs.is_power_of_two() {
                    bail!(
                        "--block-size {bs}: MatMulNBits needs a power of two from 16 to 256 (32 is tract's fast path)"
                    );
                }
            }
            Int4Target::TensorRt => {
                if !TRT_BLOCK_SIZES.contains(&bs) {
                    bail!("--block-size {bs}: --target tensorrt accepts only 64 or 128");
                }
                if !self.symmetric {
                    bail!("--int4-asym: --target tensorrt supports only symmetric int4 weights");
                }
            }
        }
        if self.accuracy_level > 4 {
            bail!(
                "--int4-accuracy-level {}: MatMulNBits accepts 0 to 4",
                self.accuracy_level
            );
        }
        if self.accuracy_level != 0 && self.target != Int4Target::Ort {
            bail!(
                "--int4-accuracy-level is a MatMulNBits attribute: --target ort only \
                 (TensorRT picks its own precision)"
            );
        }
        Ok(())
    }

    /// The parts the manifest lists as quantized.
    pub fn parts(&self) -> Vec<String> {
        let mut p = vec!["decoder_linear".to_string()];
        if self.lm_head {
            p.push("lm_head".into());
        }
        if self.vision {
            p.push("vision".into());
        }
        if self.embeddings {
            p.push("embeddings".into());
        }
        p
    }
}

/// Quantizes the Linear weights `select` picks; the rest go through [`DenseLinear`].
pub struct Int4Linear<'a> {
    opts: &'a Int4Options,
    select: Box<dyn Fn(&str) -> bool + 'a>,
    records: RefCell<Vec<QuantizedTensor>>,
}

impl<'a> Int4Linear<'a> {
    pub fn new(opts: &'a Int4Options, select: impl Fn(&str) -> bool + 'a) -> Self {
        Self {
            opts,
            select: Box::new(select),
            records: RefCell::new(Vec::new()),
        }
    }

    /// The manifest records of the tensors quantized so far, in graph order.
    pub fn into_records(self) -> Vec<QuantizedTensor> {
        self.records.into_inner()
    }

    fn record(&self, name: &str, m: &ove_quant::ErrorMetrics) {
        self.record_as(name, m, self.opts.target.format().to_string());
    }

    fn record_as(&self, name: &str, m: &ove_quant::ErrorMetrics, format: String) {
        self.records.borrow_mut().push(QuantizedTensor {
            name: name.to_string(),
            format,
            bits: 4,
            block_size: self.opts.block_size(),
            symmetric: self.opts.symmetric,
            rel_frobenius_error: m.relative_frobenius,
            max_abs_error: m.max_abs,
        });
    }
}

/// K as the TensorRT graph stores it: rounded up to a whole number of blocks. The weight
/// rows past K are zero and the activation is zero-padded to match, so the product is
/// unchanged.
pub fn trt_padded_k(k: usize, block_size: usize) -> usize {
    k.next_multiple_of(block_size)
}

/// Prefix of the manifest format of a TensorRT tensor whose K was zero-padded; the full
/// format is `dequantizelinear-int4-kpad{K}to{padded K}` (e.g. `...-kpad160to192`).
pub const TRT_PADDED_FORMAT: &str = "dequantizelinear-int4-kpad";

/// The manifest format of a TensorRT tensor with `k` input features.
fn trt_format(k: usize, block_size: usize) -> String {
    let kp = trt_padded_k(k, block_size);
    if kp == k {
        Int4Target::TensorRt.format().to_string()
    } else {
        format!("{TRT_PADDED_FORMAT}{k}to{kp}")
    }
}

/// A PyTorch `[n, k]` weight with zero columns appended up to `[n, kp]`.
///
/// The quantizer maps the zeros to code 0 (exact: symmetric, no zero point), so they add
/// nothing to the error sums and the recorded metrics are those of the real `[n, k]` part
/// (no block is all padding: `kp - k < block size`).
fn pad_k(data: &[f32], n: usize, k: usize, kp: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n * kp];
    for (dst, src) in out.chunks_exact_mut(kp).zip(data.chunks_exact(k)) {
        dst[..k].copy_from_slice(src);
    }
    out
}

/// The f32 `{name}.scales` initializer of a quantized weight (either layout).
fn scales_initializer(
    g: &mut GraphBuilder,
    name: &str,
    shape: [usize; 2],
    scales: &[f32],
) -> Result<String> {
    let bytes: Vec<u8> = scales.iter().flat_map(|x| x.to_le_bytes()).collect();
    g.initializer(&format!("{name}.scales"), data_type::FLOAT, &shape, &bytes)
}

/// A Linear weight as f32 `[out, in]` values, checked against its dims.
fn read_linear(w: &Weights, weight: &LinearWeight) -> Result<Vec<f32>> {
    let (name, k, n) = (weight.name, weight.in_dim, weight.out_dim);
    let data = w.f32(name, &weight.stored_shape)?;
    if data.len() != k * n {
        bail!(
            "tensor {name}: shape {:?} does not flatten to [{n}, {k}]",
            weight.stored_shape
        );
    }
    Ok(data)
}

impl Int4Linear<'_> {
    /// One weight in `MatMulNBits` layout (ort target), its error recorded.
    fn quantize_ort(&self, w: &Weights, weight: &LinearWeight) -> Result<MatMulNBitsWeight> {
        let name = weight.name;
        let data = read_linear(w, weight)?;
        let view = WeightView::torch_linear(&data, weight.out_dim, weight.in_dim)
            .with_context(|| format!("tensor {name}: quantizing"))?;
        let q = quantize_matmul_nbits(
            view,
            MatMulNBitsConfig {
                block_size: self.opts.block_size(),
                symmetric: self.opts.symmetric,
            },
        )
        .with_context(|| format!("tensor {name}: quantizing"))?;
        self.record(name, &q.metrics);
        Ok(q.tensor)
    }

    /// The `MatMulNBits` node of weight `name` (`[k, n]`) from initializers another graph
    /// of the bundle already wrote (the ORT decoder over decoder.onnx's weights): nothing
    /// is read or quantized again. `None` when they are not there.
    fn reuse_shared(
        &self,
        g: &mut GraphBuilder,
        x: &str,
        name: &str,
        k: usize,
        n: usize,
    ) -> Option<String> {
        let mut names = vec![format!("{name}.q4"), format!("{name}.scales")];
        if !self.opts.symmetric {
            names.push(format!("{name}.zero_points"));
        }
        if !names.iter().all(|n| g.has_shared(n)) {
            return None;
        }
        for n in &names {
            g.reuse_shared(n);
        }
        let a = ove_quant::MatMulNBitsAttributes {
            k: k as i64,
            n: n as i64,
            bits: i64::from(MatMulNBitsWeight::BITS),
            block_size: self.opts.block_size() as i64,
        };
        Some(self.matmul_nbits_node(g, x, &names, &a))
    }

    /// `com.microsoft::MatMulNBits(x, {name}.q4, {name}.scales[, {name}.zero_points])`.
    fn emit_matmul_nbits(
        &self,
        g: &mut GraphBuilder,
        x: &str,
        name: &str,
        t: &MatMulNBitsWeight,
    ) -> Result<String> {
        let b = g.initializer(&format!("{name}.q4"), data_type::UINT8, &t.b_shape(), &t.b)?;
        let s = scales_initializer(g, name, t.scales_shape(), &t.scales)?;
        let mut inputs = vec![b, s];
        if let (Some(zp), Some(shape)) = (&t.zero_points, t.zero_points_shape()) {
            inputs.push(g.initializer(
                &format!("{name}.zero_points"),
                data_type::UINT8,
                &shape,
                zp,
            )?);
        }
        Ok(self.matmul_nbits_node(g, x, &inputs, &t.attributes()))
    }

    fn matmul_nbits_node(
        &self,
        g: &mut GraphBuilder,
        x: &str,
        weights: &[String],
        a: &ove_quant::MatMulNBitsAttributes,
    ) -> String {
        g.use_opset("com.microsoft", 1);
        let out = g.fresh("MatMulNBits");
        let inputs: Vec<&str> = std::iter::once(x)
            .chain(weights.iter().map(String::as_str))
            .collect();
        let mut attrs = vec![
            ("K", Attr::Int(a.k)),
            ("N", Attr::Int(a.n)),
            ("bits", Attr::Int(a.bits)),
            ("block_size", Attr::Int(a.block_size)),
        ];
        if self.opts.accuracy_level != 0 {
            attrs.push((
                "accuracy_level",
                Attr::Int(i64::from(self.opts.accuracy_level)),
            ));
        }
        g.node_with_outputs("MatMulNBits", "com.microsoft", &inputs, &[&out], attrs);
        out
    }
}

impl LinearEmitter for Int4Linear<'_> {
    /// Parts that are all quantized for ONNX Runtime become one `MatMulNBits` over their
    /// columns side by side (each part quantized, and its error recorded, on its own:
    /// the layout is column-major, so that is the stacked weight's quantization); parts
    /// none of which is quantized are one float MatMul. TensorRT's layout, and a mix of
    /// quantized and float parts, are not fused.
    fn matmul_fused(
        &self,
        g: &mut GraphBuilder,
        w: &Weights,
        x: &str,
        name: &str,
        parts: &[LinearWeight],
    ) -> Result<Option<String>> {
        let selected: Vec<bool> = parts.iter().map(|p| (self.select)(p.name)).collect();
        if selected.iter().all(|&s| !s) {
            return DenseLinear.matmul_fused(g, w, x, name, parts);
        }
        if self.opts.target != Int4Target::Ort || selected.iter().any(|&s| !s) {
            return Ok(None);
        }
        let (k, n) = (parts[0].in_dim, parts.iter().map(|p| p.out_dim).sum());
        if let Some(y) = self.reuse_shared(g, x, name, k, n) {
            return Ok(Some(y));
        }
        let qs = parts
            .iter()
            .map(|p| self.quantize_ort(w, p))
            .collect::<Result<Vec<_>>>()?;
        let fused = MatMulNBitsWeight::concat_columns(&qs)
            .with_context(|| format!("fusing the weights of {name}"))?;
        drop(qs);
        self.emit_matmul_nbits(g, x, name, &fused).map(Some)
    }

    fn matmul(
        &self,
        g: &mut GraphBuilder,
        w: &Weights,
        x: &str,
        weight: &LinearWeight,
    ) -> Result<String> {
        if !(self.select)(weight.name) {
            return DenseLinear.matmul(g, w, x, weight);
        }
        let name = weight.name;
        if self.opts.target == Int4Target::Ort {
            if let Some(y) = self.reuse_shared(g, x, name, weight.in_dim, weight.out_dim) {
                return Ok(y);
            }
            let q = self.quantize_ort(w, weight)?;
            return self.emit_matmul_nbits(g, x, name, &q);
        }
        let (k, n) = (weight.in_dim, weight.out_dim);
        let bs = self.opts.block_size();
        let data = read_linear(w, weight)?;
        let view = WeightView::torch_linear(&data, n, k)
            .with_context(|| format!("tensor {name}: quantizing"))?;
        match self.opts.target {
            Int4Target::Ort => unreachable!("handled above"),
            Int4Target::TensorRt => {
                // A blocked DequantizeLinear has no partial blocks: K is zero-padded up to
                // a whole number of blocks (see `trt_padded_k`).
                let kp = trt_padded_k(k, bs);
                let q = if kp == k {
                    quantize_trt_int4(view, bs)
                } else {
                    tracing::info!(
                        tensor = name,
                        k,
                        padded_k = kp,
                        "K zero-padded to whole TensorRT blocks"
                    );
                    let padded = pad_k(&data, n, k, kp);
                    let view = WeightView::torch_linear(&padded, n, kp)
                        .with_context(|| format!("tensor {name}: quantizing"))?;
                    quantize_trt_int4(view, bs)
                }
                .with_context(|| format!("tensor {name}: quantizing"))?;
                drop(data);
                self.record_as(name, &q.metrics, trt_format(k, bs));
                let t = &q.tensor;
                let wq = g.initializer(
                    &format!("{name}.int4"),
                    data_type::INT4,
                    &t.data_shape(),
                    &t.data,
                )?;
                let s = scales_initializer(g, name, t.scales_shape(), &t.scales)?;
                let deq = g.node(
                    "DequantizeLinear",
                    &[&wq, &s],
                    vec![("axis", Attr::Int(0)), ("block_size", Attr::Int(bs as i64))],
                );
                let x = if kp == k {
                    x.to_string()
                } else {
                    // Zeros after the last column of a [.., K] input of any rank (the
                    // decoder's are [B, S, K], the vision tower's [P, K]): pads over the
                    // last axis only (Pad's `axes` input, opset 18; constant mode, value
                    // 0: the defaults).
                    let pads = g.ints(&[0, (kp - k) as i64]);
                    let axes = g.ints(&[-1]);
                    g.node("Pad", &[x, &pads, "", &axes], vec![])
                };
                Ok(g.matmul(&x, &deq))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_k_keeps_the_metrics_of_the_real_rows() {
        let (n, k, bs) = (3, 70, 64);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let kp = trt_padded_k(k, bs);
        assert_eq!(kp, 128);
        let padded = pad_k(&w, n, k, kp);
        let q = quantize_trt_int4(WeightView::torch_linear(&padded, n, kp).unwrap(), bs).unwrap();
        // Padding dequantizes to exact zeros; the real part's metrics equal the padded ones.
        let deq = q.tensor.dequantize(); // [kp, n]
        let mut real = Vec::new();
        let mut orig = Vec::new();
        for row in 0..n {
            for col in 0..kp {
                let d = deq[col * n + row];
                if col < k {
                    real.push(d);
                    orig.push(w[row * k + col]);
                } else {
                    assert_eq!(d, 0.0);
                }
            }
        }
        let m = ove_quant::error_metrics(&orig, &real);
        assert!((m.relative_frobenius - q.metrics.relative_frobenius).abs() < 1e-12);
        assert_eq!(m.max_abs, q.metrics.max_abs);
        assert_eq!(trt_format(k, bs), "dequantizelinear-int4-kpad70to128");
        assert_eq!(trt_format(128, bs), "dequantizelinear-int4");
    }
}
