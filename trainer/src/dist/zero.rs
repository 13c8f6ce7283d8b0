//! ZeRO-1: the optimizer state sharded over the ranks. The trained parameters (the
//! optimizer's order, sorted by name) are split into `world` consecutive groups of about
//! equal size, whole parameters each; rank r owns group r and keeps only its f32 master
//! weights and AdamW moments. In the flat vector the collectives work on, group r fills
//! block r (`[r n, (r + 1) n)`, n the largest group, padded with zeros). A step
//! reduce-scatters the gradients (each rank receives the sum of its block), clips by the
//! global norm (every parameter's squared norm, all-reduced, summed as one process sums
//! them), updates its block with the same fused kernel as [`AdamW`], and all-gathers the
//! new weights (in the parameters' dtype) into every rank's parameters. Whole parameters
//! per rank keep each norm and each update exactly what one process computes.
//!
//! Checkpoints hold the gathered state ([`ZeroAdamW::gather`] builds the [`AdamW`] one
//! process would have), so a run resumes on any world size, with or without ZeRO.

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Kind, Tensor};

use super::{bytes_of, on_device_contiguous, Dist, ReduceOp};
use crate::train::fused::fused_adamw;
use crate::train::optim::{AdamW, AdamWConfig, ParamState};

/// Bytes of optimizer state one rank holds, and what one process would hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OptimizerMemory {
    pub world: usize,
    pub trained_params: i64,
    /// Moments (and f32 masters of low-precision parameters) of this rank's slice.
    pub state_bytes_per_rank: u64,
    /// The same without sharding (every rank holds it all).
    pub state_bytes_unsharded: u64,
}

/// The unsharded optimizer's state bytes: two f32 moments a parameter, plus an f32
/// master of a bf16/f16 one.
pub fn unsharded_state_bytes(opt: &AdamW) -> u64 {
    opt.params
        .iter()
        .map(|p| {
            let n = p.param.numel() as i64;
            bytes_of(n, Kind::Float) * if p.master.is_some() { 3 } else { 2 }
        })
        .sum()
}

#[derive(Debug)]
pub struct ZeroAdamW {
    pub config: AdamWConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    decays: Vec<bool>,
    /// Where each parameter sits in the flat vector.
    offsets: Vec<i64>,
    numels: Vec<i64>,
    /// The parameters this rank owns (indices, in order).
    mine: Vec<usize>,
    /// The parameters' dtype (all trained parameters share it).
    kind: Kind,
    /// The group's device: where the shard, the moments and the flat buffers live.
    device: Device,
    /// Elements a rank's block holds (its group, padded to the largest group).
    shard: i64,
    /// Where this rank's block starts in the flat vector.
    lo: i64,
    /// f32 masters of this rank's block when the parameters are bf16/f16; f32
    /// parameters are their own masters, updated in place.
    master: Option<Tensor>,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Optimizer steps taken.
    pub steps: i64,
    unsharded_bytes: u64,
}

/// `parts` placed at `offsets` in a zero vector of `len` elements of `kind` on `device`.
fn place(parts: &[Tensor], offsets: &[i64], len: i64, kind: Kind, device: Device) -> Tensor {
    let out = Tensor::zeros([len], (kind, device));
    for (t, &at) in parts.iter().zip(offsets) {
        let n = t.numel() as i64;
        out.narrow(0, at, n)
            .copy_(&on_device_contiguous(t, device).to_kind(kind).view([-1]));
    }
    out
}

/// Splits consecutive sizes into `world` consecutive groups of about equal sum (group r
/// ends where the running total first reaches (r + 1) / world of the whole); the group
/// of each item.
pub fn split_groups(sizes: &[i64], world: usize) -> Vec<usize> {
    let total: i64 = sizes.iter().sum();
    let mut group = 0usize;
    let mut before = 0i64;
    sizes
        .iter()
        .map(|&n| {
            // Move on while this group already holds its share.
            while group + 1 < world && before * world as i64 >= total * (group as i64 + 1) {
                group += 1;
            }
            before += n;
            group
        })
        .collect()
}

impl ZeroAdamW {
    /// Shards `full` (a fresh [`AdamW`], or one loaded from a checkpoint): this rank keeps
    /// its block of the masters and moments; the rest is dropped.
    pub fn from_full(full: AdamW, dist: &Dist) -> Result<Self> {
        let world = dist.world();
        let device = dist.device();
        let kind = full.params.first().map_or(Kind::Float, |p| p.param.kind());
        for p in &full.params {
            ensure!(
                p.param.kind() == kind,
                "ZeRO-1 needs every trained parameter in one dtype: {} is {:?}, {} is {:?}",
                full.params[0].name,
                kind,
                p.name,
                p.param.kind()
            );
            ensure!(
                p.param.device() == device && p.param.is_contiguous(),
                "ZeRO-1 over a group on {device:?}: {} is on {:?}",
                p.name,
                p.param.device()
            );
        }
        let numels: Vec<i64> = full.params.iter().map(|p| p.param.numel() as i64).collect();
        let groups = split_groups(&numels, world);
        let mut sums = vec![0i64; world];
        let mut local = Vec::with_capacity(numels.len());
        for (&n, &g) in numels.iter().zip(&groups) {
            local.push(sums[g]);
            sums[g] += n;
        }
        let shard = sums.iter().copied().max().unwrap_or(0).max(1);
        let offsets: Vec<i64> = groups
            .iter()
            .zip(&local)
            .map(|(&g, &at)| g as i64 * shard + at)
            .collect();
        let lo = dist.rank() as i64 * shard;
        let mine: Vec<usize> = (0..numels.len())
            .filter(|&i| groups[i] == dist.rank())
            .collect();
        // This rank's block of per-parameter tensors (f32).
        let block = |parts: Vec<Tensor>| -> Tensor {
            let own: Vec<Tensor> = mine.iter().map(|&i| parts[i].shallow_clone()).collect();
            let at: Vec<i64> = mine.iter().map(|&i| offsets[i] - lo).collect();
            place(&own, &at, shard, Kind::Float, device)
        };
        let low_precision = kind != Kind::Float && kind != Kind::Double;
        let master = low_precision.then(|| {
            block(
                full.params
                    .iter()
                    .map(|p| p.master.as_ref().unwrap_or(&p.param).detach())
                    .collect(),
            )
        });
        let exp_avg = block(
            full.params
                .iter()
                .map(|p| p.exp_avg.shallow_clone())
                .collect(),
        );
        let exp_avg_sq = block(
            full.params
                .iter()
                .map(|p| p.exp_avg_sq.shallow_clone())
                .collect(),
        );
        let unsharded_bytes = unsharded_state_bytes(&full);
        Ok(Self {
            config: full.config,
            names: full.params.iter().map(|p| p.name.clone()).collect(),
            decays: full.params.iter().map(|p| p.decay).collect(),
            params: full
                .params
                .iter()
                .map(|p| p.param.shallow_clone())
                .collect(),
            offsets,
            numels,
            mine,
            kind,
            device,
            shard,
            lo,
            master,
            exp_avg,
            exp_avg_sq,
            steps: full.steps,
            unsharded_bytes,
        })
    }

    /// The trained parameters.
    pub fn tensors(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.shallow_clone()).collect()
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    pub fn memory(&self, world: usize) -> OptimizerMemory {
        let vectors = if self.master.is_some() { 3 } else { 2 };
        OptimizerMemory {
            world,
            trained_params: self.numels.iter().sum(),
            state_bytes_per_rank: bytes_of(self.shard, Kind::Float) * vectors,
            state_bytes_unsharded: self.unsharded_bytes,
        }
    }

    /// Parameter `i`'s part of a block-sized vector.
    fn part(&self, block: &Tensor, i: usize) -> Tensor {
        block.narrow(0, self.offsets[i] - self.lo, self.numels[i])
    }

    /// Reduce-scatters the gradients, clips them to `max_norm` by their global norm,
    /// updates this rank's parameters at learning rate `lr` and all-gathers the weights.
    /// Returns the gradient norm before clipping and the seconds spent in collectives.
    pub fn step(&mut self, dist: &Dist, lr: f64, max_norm: f64) -> Result<(f64, f64)> {
        let c = self.config;
        let padded = self.shard * dist.world() as i64;
        let comm = std::cell::Cell::new(0.0);
        let timed = |f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
            let t = Instant::now();
            let r = f();
            comm.set(comm.get() + t.elapsed().as_secs_f64());
            r
        };
        tch::no_grad(|| -> Result<(f64, f64)> {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .zip(&self.numels)
                .map(|(p, &n)| {
                    let g = p.grad();
                    if g.defined() {
                        g
                    } else {
                        Tensor::zeros([n], (self.kind, self.device))
                    }
                })
                .collect();
            let grad_flat = place(&grads, &self.offsets, padded, self.kind, self.device);
            drop(grads);
            let summed = Tensor::zeros([self.shard], (self.kind, self.device));
            timed(&mut || {
                dist.group
                    .reduce_scatter(&summed, &grad_flat)?
                    .wait()
                    .context("reduce-scattering gradients")
            })?;
            drop(grad_flat);
            let mut g = summed.to_kind(Kind::Float);
            // Each parameter's squared norm, from its owner; summed and rooted in f32 as
            // one process's clip_grad_norm does.
            let sq = Tensor::zeros([self.params.len() as i64], (Kind::Float, self.device));
            for &i in &self.mine {
                sq.get(i as i64)
                    .copy_(&self.part(&g, i).square().sum(Kind::Float));
            }
            timed(&mut || {
                dist.group
                    .all_reduce(&sq, ReduceOp::Sum)?
                    .wait()
                    .context("all-reducing the gradient norms")
            })?;
            let norm = sq.sum(Kind::Float).sqrt().double_value(&[]);
            if !norm.is_finite() {
                bail!("non-finite gradient norm ({norm}); the update was not applied");
            }
            let scale = max_norm / (norm + 1e-6);
            if scale < 1.0 {
                let _ = g.g_mul_scalar_(scale);
            }
            self.steps += 1;
            // The same fused kernel as one process's AdamW, parameter by parameter: the
            // decayed matrices with the weight decay, the rest without.
            for decayed in [true, false] {
                let own: Vec<usize> = self
                    .mine
                    .iter()
                    .copied()
                    .filter(|&i| (self.decays[i] && c.weight_decay != 0.0) == decayed)
                    .collect();
                let targets: Vec<Tensor> = own
                    .iter()
                    .map(|&i| match &self.master {
                        Some(m) => self.part(m, i),
                        None => self.params[i].view([-1]),
                    })
                    .collect();
                let pick = |t: &Tensor| own.iter().map(|&i| self.part(t, i)).collect::<Vec<_>>();
                fused_adamw(
                    &targets,
                    &pick(&g),
                    &pick(&self.exp_avg),
                    &pick(&self.exp_avg_sq),
                    self.steps,
                    lr,
                    &c,
                    if decayed { c.weight_decay } else { 0.0 },
                )?;
            }
            // This rank's new weights, in the parameters' dtype, to everyone.
            let own: Vec<Tensor> = match &self.master {
                Some(m) => self.mine.iter().map(|&i| self.part(m, i)).collect(),
                None => self
                    .mine
                    .iter()
                    .map(|&i| self.params[i].shallow_clone())
                    .collect(),
            };
            let at: Vec<i64> = self
                .mine
                .iter()
                .map(|&i| self.offsets[i] - self.lo)
                .collect();
            let block = place(&own, &at, self.shard, self.kind, self.device);
            let new = Tensor::zeros([padded], (self.kind, self.device));
            timed(&mut || {
                dist.group
                    .all_gather(&new, &block)?
                    .wait()
                    .context("all-gathering the weights")
            })?;
            for (i, p) in self.params.iter().enumerate() {
                if self.master.is_none() && self.mine.contains(&i) {
                    continue; // updated in place above
                }
                let mut p = p.shallow_clone();
                p.copy_(&new.narrow(0, self.offsets[i], self.numels[i]).view_as(&p));
            }
            Ok((norm, comm.get()))
        })
    }

    /// The whole optimizer state, gathered from every rank (all ranks must call it): the
    /// [`AdamW`] one process would hold, for a checkpoint.
    pub fn gather(&self, dist: &Dist) -> Result<AdamW> {
        let padded = self.shard * dist.world() as i64;
        let gather = |part: &Tensor, what: &str| -> Result<Tensor> {
            let out = Tensor::zeros([padded], (Kind::Float, self.device));
            dist.group
                .all_gather(&out, part)?
                .wait()
                .with_context(|| format!("gathering the optimizer's {what}"))?;
            Ok(out)
        };
        let m = gather(&self.exp_avg, "first moments")?;
        let v = gather(&self.exp_avg_sq, "second moments")?;
        let w = self
            .master
            .as_ref()
            .map(|t| gather(t, "master weights"))
            .transpose()?;
        let params = (0..self.params.len())
            .map(|i| {
                let p = &self.params[i];
                let cut = |t: &Tensor| {
                    t.narrow(0, self.offsets[i], self.numels[i])
                        .view_as(p)
                        .copy()
                };
                ParamState {
                    name: self.names[i].clone(),
                    param: p.shallow_clone(),
                    decay: self.decays[i],
                    exp_avg: cut(&m),
                    exp_avg_sq: cut(&v),
                    master: w.as_ref().map(cut),
                }
            })
            .collect();
        Ok(AdamW {
            config: self.config,
            params,
            steps: self.steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::split_groups;

    #[test]
    fn groups_are_consecutive_and_balanced() {
        assert_eq!(split_groups(&[4, 4, 4, 4], 2), vec![0, 0, 1, 1]);
        assert_eq!(split_groups(&[10, 1, 1, 1], 2), vec![0, 1, 1, 1]);
        assert_eq!(split_groups(&[1, 1, 1], 1), vec![0, 0, 0]);
        // More ranks than parameters: some groups stay empty.
        assert_eq!(split_groups(&[5], 3), vec![0]);
        let g = split_groups(&[3, 3, 3, 3, 3, 3], 3);
        assert_eq!(g, vec![0, 0, 1, 1, 2, 2]);
    }
}
