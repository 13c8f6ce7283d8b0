//! AdamW (decoupled weight decay, as `torch.optim.AdamW`) over the trainable parameters
//! only, and global-norm gradient clipping.
//!
//! Low-precision (bf16/f16) parameters get an f32 master copy here: the update is computed
//! and accumulated in f32 on the master, and the parameter receives its rounded value, so
//! small updates are not lost to bf16 rounding. f32 parameters are updated in place.
//!
//! Frozen parameters (`requires_grad` false, see [`crate::train::stage::set_trainable`])
//! get no gradient and no optimizer state: the optimizer never sees them.

use anyhow::Result;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::train::fused::{foreach_copy, fused_adamw, grad_for};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Applied to matrices only; norms, biases and 1-D vectors are not decayed.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// One trained parameter and its moment estimates.
#[derive(Debug)]
pub struct ParamState {
    pub name: String,
    pub param: Tensor,
    pub decay: bool,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
    /// f32 master weights of a bf16/f16 parameter (`None` for f32 parameters).
    pub master: Option<Tensor>,
}

#[derive(Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub params: Vec<ParamState>,
    /// Optimizer steps taken.
    pub steps: i64,
}

impl AdamW {
    /// State for every variable of `vs` that requires a gradient, sorted by name.
    pub fn new(vs: &VarStore, config: AdamWConfig) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params: Vec<ParamState> = vars
            .into_iter()
            .map(|(name, param)| ParamState {
                decay: param.dim() >= 2,
                exp_avg: param.zeros_like().to_kind(Kind::Float),
                exp_avg_sq: param.zeros_like().to_kind(Kind::Float),
                master: (param.kind() != Kind::Float && param.kind() != Kind::Double)
                    .then(|| param.detach().to_kind(Kind::Float)),
                name,
                param,
            })
            .collect();
        // Every trained parameter gets a (zero) gradient now, so every step updates all of
        // them (moments decay, weight decay applies) whether the batch reached them or not,
        // as Megatron's always-allocated gradient buffers do. A run resumed in a fresh
        // process then steps exactly as the uninterrupted one.
        let terms: Vec<Tensor> = params
            .iter()
            .map(|p| (&p.param * 0.0).sum(Kind::Float))
            .collect();
        if !terms.is_empty() {
            tch::with_grad(|| Tensor::stack(&terms, 0).sum(Kind::Float).backward());
        }
        let mut opt = Self {
            config,
            params,
            steps: 0,
        };
        opt.zero_grad();
        opt
    }

    /// The trained parameters.
    pub fn tensors(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|p| p.param.shallow_clone())
            .collect()
    }

    /// Clears every gradient of the trained parameters.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.param.zero_grad();
        }
    }

    /// One AdamW update at learning rate `lr` (every trained parameter has a gradient, zero
    /// where the step did not reach it; an undefined one is skipped), through libtorch's
    /// fused kernel (`torch.optim.AdamW(fused=True)`): one call for the decayed matrices,
    /// one for the rest, on the f32 masters of low-precision parameters, then one foreach
    /// copy of the masters into those parameters.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.steps += 1;
        let c = self.config;
        tch::no_grad(|| -> Result<()> {
            for decayed in [true, false] {
                let group: Vec<&ParamState> = self
                    .params
                    .iter()
                    .filter(|p| (p.decay && c.weight_decay != 0.0) == decayed)
                    .filter(|p| p.param.grad().defined())
                    .collect();
                let target = |p: &ParamState| p.master.as_ref().unwrap_or(&p.param).shallow_clone();
                let targets: Vec<Tensor> = group.iter().map(|p| target(p)).collect();
                let grads: Vec<Tensor> = group
                    .iter()
                    .map(|p| grad_for(target(p).kind(), &p.param.grad()))
                    .collect();
                let m: Vec<Tensor> = group.iter().map(|p| p.exp_avg.shallow_clone()).collect();
                let v: Vec<Tensor> = group.iter().map(|p| p.exp_avg_sq.shallow_clone()).collect();
                // The fused kernel takes one dtype a call: f32 masters and f32 parameters
                // may share it, but keep them apart in case a double parameter comes along.
                let mut kinds: Vec<Kind> = targets.iter().map(|t| t.kind()).collect();
                kinds.sort_by_key(|k| format!("{k:?}"));
                kinds.dedup();
                for kind in kinds {
                    let pick = |ts: &[Tensor]| -> Vec<Tensor> {
                        ts.iter()
                            .zip(&targets)
                            .filter(|(_, t)| t.kind() == kind)
                            .map(|(x, _)| x.shallow_clone())
                            .collect()
                    };
                    fused_adamw(
                        &pick(&targets),
                        &pick(&grads),
                        &pick(&m),
                        &pick(&v),
                        self.steps,
                        lr,
                        &c,
                        if decayed { c.weight_decay } else { 0.0 },
                    )?;
                }
            }
            let (params, masters): (Vec<Tensor>, Vec<Tensor>) = self
                .params
                .iter()
                .filter(|p| p.param.grad().defined())
                .filter_map(|p| {
                    p.master
                        .as_ref()
                        .map(|m| (p.param.shallow_clone(), m.shallow_clone()))
                })
                .unzip();
            foreach_copy(&params, &masters)
        })
    }

    /// The same update written out elementwise (~8 kernels a parameter): the reference the
    /// fused kernel is tested against.
    pub fn step_elementwise(&mut self, lr: f64) {
        self.steps += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.steps as i32);
        let bias2 = 1.0 - c.beta2.powi(self.steps as i32);
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.param.grad();
                if !grad.defined() {
                    continue;
                }
                let grad = grad.to_kind(Kind::Float);
                let mut target = match &p.master {
                    Some(m) => m.shallow_clone(),
                    None => p.param.shallow_clone(),
                };
                if p.decay && c.weight_decay != 0.0 {
                    let _ = target.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                // m = b1 m + (1 - b1) g ; v = b2 v + (1 - b2) g^2
                let _ = p.exp_avg.lerp_(&grad, 1.0 - c.beta1);
                let _ = p.exp_avg_sq.lerp_(&grad.square(), 1.0 - c.beta2);
                // p -= lr / bias1 * m / (sqrt(v / bias2) + eps), written as
                // p += m / (-(bias1 / lr) (sqrt(v) / sqrt(bias2) + eps)) to save passes.
                if lr != 0.0 {
                    let k = -bias1 / lr;
                    let mut denom = p.exp_avg_sq.sqrt();
                    let _ = denom
                        .g_mul_scalar_(k / bias2.sqrt())
                        .g_add_scalar_(k * c.eps);
                    let _ = target.addcdiv_(&p.exp_avg, &denom);
                }
                if p.master.is_some() {
                    p.param.copy_(&target);
                }
            }
        });
    }
}

/// Scales the gradients of `params` so that their global L2 norm is at most `max_norm`;
/// returns the norm before clipping.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    if grads.is_empty() {
        return 0.0;
    }
    let total = tch::no_grad(|| {
        let sq: Vec<Tensor> = grads
            .iter()
            .map(|g| {
                if g.kind() == Kind::Float {
                    g.square().sum(Kind::Float)
                } else {
                    // bf16/f16: accumulate in f32 without an f32 copy of the gradient.
                    g.norm_scalaropt_dtype(2.0, Kind::Float).square()
                }
            })
            .collect();
        Tensor::stack(&sq, 0)
            .sum(Kind::Float)
            .sqrt()
            .double_value(&[])
    });
    let scale = max_norm / (total + 1e-6);
    if scale < 1.0 {
        tch::no_grad(|| {
            for g in &grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_scalar_(scale);
            }
        });
    }
    total
}
