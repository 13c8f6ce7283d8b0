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

/// Several linear layers on the same input as one GEMM: their weights stacked along the
/// output dimension (and their biases, when all have one), the output split back. The
/// weights stay separate parameters with their checkpoint names; the stacking is a copy
/// a forward (small next to the GEMM at training sizes), and autograd splits the gradient.
pub fn linear_fused<const N: usize>(x: &Tensor, parts: [&Linear; N]) -> [Tensor; N] {
    let weights = parts.map(|l| &l.weight);
    let biases: Option<Vec<&Tensor>> = parts.iter().map(|l| l.bias.as_ref()).collect();
    let sizes = parts.map(|l| l.weight.size()[0]);
    let stacked_bias = biases.as_ref().map(|b| Tensor::cat(b, 0));
    let outs = x
        .linear(&Tensor::cat(&weights, 0), stacked_bias.as_ref())
        .split_with_sizes(sizes.as_slice(), -1);
    let mut outs: [Tensor; N] = outs.try_into().expect("one output a linear");
    if biases.is_none() {
        // Some without a bias: add the biases there are after the split.
        for (out, l) in outs.iter_mut().zip(parts) {
            if let Some(b) = &l.bias {
                *out = &*out + b;
            }
        }
    }
    outs
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
///
/// When the weight has the activation's dtype (a bf16 or an f32 model) this is ATen's
/// `rms_norm`, which PyTorch 2.11 runs as one fused kernel on CUDA (`_fused_rms_norm`,
/// forward and backward) instead of six elementwise ones; it normalises in f32 as Qwen3
/// does and rounds once, after the weight (Hugging Face rounds before it: the same in f32,
/// within a bf16 rounding in bf16). Mixed dtypes take the spelled-out form.
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
        if self.weight.kind() == kind {
            let dim = *x.size().last().expect("RMSNorm input has no dimensions");
            return x.rms_norm([dim], Some(&self.weight), self.eps);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Hugging Face's Qwen3RMSNorm, spelled out.
    fn reference(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
        let x32 = x.to_kind(Kind::Float);
        let var = x32.square().mean_dim(-1, true, Kind::Float);
        w * (x32 * (var + eps).rsqrt()).to_kind(x.kind())
    }

    #[test]
    fn fused_linears_equal_the_separate_ones() {
        tch::manual_seed(5);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let x = Tensor::randn([2, 3, 8], (Kind::Float, Device::Cpu));
        let a = Linear::new(vs.root() / "a", 8, 6, true);
        let b = Linear::new(vs.root() / "b", 8, 4, true);
        let c = Linear::new(vs.root() / "c", 8, 5, false);
        tch::no_grad(|| {
            for l in [&a, &b] {
                let _ = l.bias.as_ref().unwrap().shallow_clone().normal_(0.0, 1.0);
            }
        });
        let check = |fused: &[Tensor], parts: &[&Linear]| {
            for (f, l) in fused.iter().zip(parts) {
                let d = (f - l.forward(&x)).abs().max().double_value(&[]);
                assert!(d <= 1e-6, "{d}");
            }
        };
        check(&linear_fused(&x, [&a, &b]), &[&a, &b]);
        check(&linear_fused(&x, [&c, &c]), &[&c, &c]);
        check(&linear_fused(&x, [&a, &c, &b]), &[&a, &c, &b]);
    }

    #[test]
    fn fused_rms_norm_matches_qwen3s_values_and_gradients() {
        tch::manual_seed(3);
        // bf16: the weight's gradient sums 15 rows of magnitude ~1 in bf16 (ulp 2^-7
        // relative), and the fused kernel and the spelled-out ops reduce them in different
        // orders, which also change with libtorch's thread split: up to ~3 ulps apart
        // (1.7e-2 seen under a loaded `cargo test`). A wrong formula is off by O(1).
        for (kind, tol) in [(Kind::Float, 1e-6), (Kind::BFloat16, 3e-2)] {
            let x = (Tensor::randn([3, 5, 64], (Kind::Float, Device::Cpu)) * 3.0)
                .to_kind(kind)
                .set_requires_grad(true);
            let w = (Tensor::randn([64], (Kind::Float, Device::Cpu)) + 1.0)
                .to_kind(kind)
                .set_requires_grad(true);
            let norm = RmsNorm {
                weight: w.shallow_clone(),
                eps: 1e-6,
            };
            let upstream = Tensor::randn([3, 5, 64], (Kind::Float, Device::Cpu)).to_kind(kind);
            let fused = norm.forward(&x);
            (&fused * &upstream).sum(Kind::Float).backward();
            let (gx, gw) = (x.grad().copy(), w.grad().copy());
            let (mut x2, mut w2) = (x.detach().copy(), w.detach().copy());
            x2 = x2.set_requires_grad(true);
            w2 = w2.set_requires_grad(true);
            let spelled = reference(&x2, &w2, 1e-6);
            (&spelled * &upstream).sum(Kind::Float).backward();
            let diff = |a: &Tensor, b: &Tensor| {
                let (a, b) = (a.to_kind(Kind::Float), b.to_kind(Kind::Float));
                ((&a - &b).abs() / (b.abs() + 1.0)).max().double_value(&[])
            };
            assert_eq!(fused.kind(), kind);
            let d = [
                diff(&fused, &spelled),
                diff(&gx, &x2.grad()),
                diff(&gw, &w2.grad()),
            ];
            assert!(d.iter().all(|&d| d <= tol), "{kind:?}: {d:?}");
        }
    }
}
