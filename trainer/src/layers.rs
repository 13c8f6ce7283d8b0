//! The small building blocks every model part shares: linear layers, the two norms,
//! rotate-half rotary embedding and attention over one segment.
//!
//! Each layer owns its parameters through an `nn::Path`, so a parameter's name in the
//! `VarStore` is its module path: `visual.blocks.0.attn.qkv.weight` comes from
//! `root / "visual" / "blocks" / 0 / "attn" / "qkv"` plus `"weight"`.

use tch::nn::{self, Init, Module};
use tch::{Kind, Tensor};

/// Standard deviation of the normal initialisation (the Hugging Face `initializer_range`).
/// Loading a checkpoint overwrites every value; this only matters for a fresh model.
pub const INIT_STD: f64 = 0.02;

fn normal() -> Init {
    Init::Randn {
        mean: 0.,
        stdev: INIT_STD,
    }
}

/// `y = x W^T (+ b)`, weight `[out, in]` as PyTorch stores it.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(vs: nn::Path, in_dim: usize, out_dim: usize, bias: bool) -> Self {
        let weight = vs.var("weight", &[out_dim as i64, in_dim as i64], normal());
        let bias = bias.then(|| vs.var("bias", &[out_dim as i64], Init::Const(0.)));
        Self { weight, bias }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// LayerNorm with weight and bias over the last dimension.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(vs: nn::Path, dim: usize, eps: f64) -> Self {
        Self {
            weight: vs.var("weight", &[dim as i64], Init::Const(1.)),
            bias: vs.var("bias", &[dim as i64], Init::Const(0.)),
            eps,
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let dim = *x.size().last().expect("LayerNorm input has no dimensions");
        x.layer_norm([dim], Some(&self.weight), Some(&self.bias), self.eps, false)
    }
}

/// Qwen3's RMSNorm: computed in f32, `weight * (x / sqrt(mean(x^2) + eps))`.
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(vs: nn::Path, dim: usize, eps: f64) -> Self {
        Self {
            weight: vs.var("weight", &[dim as i64], Init::Const(1.)),
            eps,
        }
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let var = x32.square().mean_dim(-1, true, Kind::Float);
        let normed = (x32 * (var + self.eps).rsqrt()).to_kind(kind);
        &self.weight * normed
    }
}

/// `[x1, x2] -> [-x2, x1]` over the last dimension.
pub fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size().last().copied().unwrap_or(0) / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[-x2, x1], -1)
}

/// Rotate-half rotary embedding in f32: `x cos + rotate_half(x) sin`, cast back to x's kind.
/// `cos`/`sin` must broadcast against `x`.
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let kind = x.kind();
    let x = x.to_kind(Kind::Float);
    (&x * cos + rotate_half(&x) * sin).to_kind(kind)
}

/// Exact (erf) GELU.
pub fn gelu(x: &Tensor) -> Tensor {
    x.gelu("none")
}

/// The activation named by a config's `hidden_act` (parsed by `ove_core::activation`, the
/// same names the exporter accepts).
pub fn activation(name: &str) -> anyhow::Result<fn(&Tensor) -> Tensor> {
    use ove_core::activation::Activation;
    Ok(match name.parse::<Activation>()? {
        Activation::Gelu => gelu,
        Activation::QuickGelu => |x: &Tensor| x * (x * 1.702).sigmoid(),
        Activation::GeluTanh => |x: &Tensor| x.gelu("tanh"),
        Activation::Silu => |x: &Tensor| x.silu(),
    })
}
