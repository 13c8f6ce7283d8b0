//! The layers the model parts are made of, as ONNX subgraphs: Linear, LayerNorm,
//! RMSNorm, GELU, SiLU and rotary embedding. Norms are decomposed into elementwise ops
//! and ReduceMean (tract and ONNX Runtime both run those; fused norm ops they don't share),
//! in exactly the node patterns ONNX Runtime's LayerNorm / SimplifiedLayerNorm fusions
//! recognise (Pow 2, ReduceMean, Add eps, Sqrt, Div, Mul, Add), so it still fuses them.

use anyhow::{Context, Result};
use ove_core::activation::Activation;

use crate::graph::GraphBuilder;
use crate::weights::{LinearWeight, Weights};

/// How a Linear weight becomes graph nodes: `x [.., in] -> x W^T [.., out]`.
///
/// The float exporter stores the transposed weight and emits a MatMul; a quantizer
/// replaces this one function (e.g. with a MatMulNBits node) and nothing else changes.
pub trait LinearEmitter {
    fn matmul(
        &self,
        g: &mut GraphBuilder,
        w: &Weights,
        x: &str,
        weight: &LinearWeight,
    ) -> Result<String>;

    /// `x [.., in] -> [.., sum of outs]`: the Linear layers `parts` (same `in`) as one
    /// product over their weights side by side, stored as one initializer called `name`
    /// (a fused q/k/v or gate/up projection: one matmul instead of three or two). `None`
    /// when this emitter cannot store them as one matrix; the caller then multiplies each
    /// part alone.
    fn matmul_fused(
        &self,
        _g: &mut GraphBuilder,
        _w: &Weights,
        _x: &str,
        _name: &str,
        _parts: &[LinearWeight],
    ) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Weights stored in the bundle dtype, `[in, out]`, multiplied by a plain MatMul.
pub struct DenseLinear;

impl LinearEmitter for DenseLinear {
    fn matmul(
        &self,
        g: &mut GraphBuilder,
        w: &Weights,
        x: &str,
        weight: &LinearWeight,
    ) -> Result<String> {
        let rhs = w.matmul_rhs(g, weight)?;
        Ok(g.matmul(x, &rhs))
    }

    fn matmul_fused(
        &self,
        g: &mut GraphBuilder,
        w: &Weights,
        x: &str,
        name: &str,
        parts: &[LinearWeight],
    ) -> Result<Option<String>> {
        let rhs = w.matmul_rhs_fused(g, name, parts)?;
        Ok(Some(g.matmul(x, &rhs)))
    }
}

/// What the model-part builders work with: the graph, the checkpoint's weights and the
/// Linear emitter.
pub struct Ctx<'a> {
    pub g: GraphBuilder,
    pub w: &'a Weights<'a>,
    pub linear_emitter: &'a dyn LinearEmitter,
}

impl Ctx<'_> {
    /// `nn.Linear` at module path `prefix` (`{prefix}.weight` [out, in], optional
    /// `{prefix}.bias` [out]).
    pub fn linear(
        &mut self,
        x: &str,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<String> {
        let name = format!("{prefix}.weight");
        self.linear_weight(
            x,
            &LinearWeight::new(&name, out_dim, in_dim),
            bias.then_some(prefix),
        )
    }

    /// A Linear whose weight is described explicitly; `bias_prefix` names its module when
    /// it has a bias.
    pub fn linear_weight(
        &mut self,
        x: &str,
        weight: &LinearWeight,
        bias_prefix: Option<&str>,
    ) -> Result<String> {
        let y = self.linear_emitter.matmul(&mut self.g, self.w, x, weight)?;
        match bias_prefix {
            None => Ok(y),
            Some(p) => {
                let n = weight.out_dim;
                let b = self
                    .w
                    .vector(&mut self.g, &format!("{p}.bias"), &[n], &[n])?;
                Ok(self.g.add(&y, &b))
            }
        }
    }

    /// The Linear layers at module paths `prefixes` (same `in_dim`, output widths
    /// `out_dims`, each with a bias when `bias`) applied to the same `x`, as one fused
    /// product called `fused` (module path of the stored weight) split back into the parts'
    /// outputs, when the emitter can fuse them; otherwise one product each. Either way the
    /// values are each part's own `x W^T + b`.
    pub fn linear_fused(
        &mut self,
        x: &str,
        fused: &str,
        prefixes: &[&str],
        in_dim: usize,
        out_dims: &[usize],
        bias: bool,
    ) -> Result<Vec<String>> {
        let names: Vec<String> = prefixes.iter().map(|p| format!("{p}.weight")).collect();
        let parts: Vec<LinearWeight> = names
            .iter()
            .zip(out_dims)
            .map(|(n, &o)| LinearWeight::new(n, o, in_dim))
            .collect();
        let name = format!("{fused}.weight");
        match self
            .linear_emitter
            .matmul_fused(&mut self.g, self.w, x, &name, &parts)?
        {
            Some(y) => {
                let sizes: Vec<i64> = out_dims.iter().map(|&o| o as i64).collect();
                let outs = self.g.split(&y, -1, &sizes);
                if !bias {
                    return Ok(outs);
                }
                outs.iter()
                    .zip(prefixes.iter().zip(out_dims))
                    .map(|(y, (p, &n))| {
                        let b = self
                            .w
                            .vector(&mut self.g, &format!("{p}.bias"), &[n], &[n])?;
                        Ok(self.g.add(y, &b))
                    })
                    .collect()
            }
            None => parts
                .iter()
                .zip(prefixes)
                .map(|(w, p)| self.linear_weight(x, w, bias.then_some(*p)))
                .collect(),
        }
    }

    /// `nn.LayerNorm(dim, eps)` over the last axis at module path `prefix`.
    pub fn layer_norm(&mut self, x: &str, prefix: &str, dim: usize, eps: f64) -> Result<String> {
        let w = self
            .w
            .vector(&mut self.g, &format!("{prefix}.weight"), &[dim], &[dim])?;
        let b = self
            .w
            .vector(&mut self.g, &format!("{prefix}.bias"), &[dim], &[dim])?;
        let g = &mut self.g;
        let mean = g.reduce_mean(x, &[-1]);
        let d = g.sub(x, &mean);
        let sq = g.pow(&d, 2.0);
        let var = g.reduce_mean(&sq, &[-1]);
        let e = g.scalar(eps as f32);
        let var = g.add(&var, &e);
        let den = g.sqrt(&var);
        let y = g.div(&d, &den);
        let y = g.mul(&y, &w);
        Ok(g.add(&y, &b))
    }

    /// RMSNorm (`x / sqrt(mean(x^2) + eps) * weight`) over the last axis, weight
    /// `{prefix}.weight` [dim].
    pub fn rms_norm(&mut self, x: &str, prefix: &str, dim: usize, eps: f64) -> Result<String> {
        let w = self
            .w
            .vector(&mut self.g, &format!("{prefix}.weight"), &[dim], &[dim])?;
        let g = &mut self.g;
        let sq = g.pow(x, 2.0);
        let var = g.reduce_mean(&sq, &[-1]);
        let e = g.scalar(eps as f32);
        let var = g.add(&var, &e);
        let den = g.sqrt(&var);
        let y = g.div(x, &den);
        Ok(g.mul(&y, &w))
    }
}

/// Exact GELU, `x * 0.5 * (1 + erf(x / sqrt 2))` (PyTorch's default, not the tanh form),
/// in the node order of PyTorch's ONNX export (Div, Erf, Add, Mul x, Mul 0.5), which ONNX
/// Runtime's Gelu fusion recognises.
pub fn gelu(g: &mut GraphBuilder, x: &str) -> String {
    let r2 = g.scalar(std::f32::consts::SQRT_2);
    let s = g.div(x, &r2);
    let e = g.erf(&s);
    let one = g.scalar(1.0);
    let e = g.add(&e, &one);
    let y = g.mul(x, &e);
    g.scale(&y, 0.5)
}

/// SiLU: `x * sigmoid(x)`.
pub fn silu(g: &mut GraphBuilder, x: &str) -> String {
    let s = g.sigmoid(x);
    g.mul(x, &s)
}

/// The activation a config's `hidden_act` names, as the trainer computes it (`field` names the
/// config entry in the error, e.g. `text_config.hidden_act`): an unknown name is refused, never
/// exported as another activation.
pub fn activation(g: &mut GraphBuilder, name: &str, field: &str, x: &str) -> Result<String> {
    let act: Activation = name
        .parse()
        .with_context(|| format!("config.json {field}"))?;
    Ok(match act {
        Activation::Gelu => gelu(g, x),
        Activation::Silu => silu(g, x),
        // x * sigmoid(1.702 x)
        Activation::QuickGelu => {
            let s = g.scale(x, 1.702);
            let s = g.sigmoid(&s);
            g.mul(x, &s)
        }
        // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), PyTorch's approximate='tanh'.
        Activation::GeluTanh => {
            let x3 = g.pow(x, 3.0);
            let x3 = g.scale(&x3, 0.044715);
            let inner = g.add(x, &x3);
            let inner = g.scale(&inner, (2.0 / std::f32::consts::PI).sqrt());
            let t = g.tanh(&inner);
            let one = g.scalar(1.0);
            let t = g.add(&t, &one);
            let y = g.mul(x, &t);
            g.scale(&y, 0.5)
        }
    })
}

/// Rotary embedding, rotate-half style: `x * cos + rotate_half(x) * sin`, where
/// `rotate_half([a; b]) = [-b; a]` over the last axis of size `dim`; `cos`/`sin`
/// broadcast against `x`.
pub fn rope(g: &mut GraphBuilder, x: &str, cos: &str, sin: &str, dim: usize) -> String {
    let half = (dim / 2) as i64;
    let a = g.slice(x, -1, 0, half);
    let b = g.slice(x, -1, half, dim as i64);
    let nb = g.neg(&b);
    let rot = g.concat(&[&nb, &a], -1);
    let xc = g.mul(x, cos);
    let rs = g.mul(&rot, sin);
    g.add(&xc, &rs)
}
