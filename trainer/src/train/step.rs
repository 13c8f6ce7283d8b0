//! One optimizer step: forward and backward over the micro-batches, the loss normalised
//! by the target tokens of the whole step, clip, AdamW.

use std::time::Instant;

use anyhow::{ensure, Result};
use tch::Tensor;

use crate::dist::buckets::all_reduce_grads;
use crate::dist::zero::ZeroAdamW;
use crate::dist::Dist;
use crate::model::LlavaOneVision;
use crate::train::loss::token_loss_sum;
use crate::train::optim::{clip_grad_norm, AdamW};
use crate::train::packing::PackedBatch;

/// `(sum of token losses, number of target tokens)` of one packed batch.
pub fn batch_loss_sum(model: &LlavaOneVision, batch: &PackedBatch) -> Result<(Tensor, i64)> {
    let image_embeds = batch
        .images()
        .map(|im| model.encode_images(&im).map(|o| o.image_embeds))
        .transpose()?;
    let hidden = model.hidden_states(
        &batch.input_ids,
        image_embeds.as_ref(),
        Some(&batch.positions),
        &batch.mask(),
        None,
    )?;
    Ok(token_loss_sum(&hidden, &batch.targets, |h| {
        model.decoder.logits(h)
    }))
}

/// Where a step's time went, in seconds (on a GPU without synchronisation, so the split
/// between phases is approximate there; on the CPU it is exact).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct StepTimes {
    /// Forward passes, losses and backward passes of this rank's micro-batches.
    pub forward_backward: f64,
    /// Collectives: the target count, the loss, gradients (all-reduce or reduce-scatter),
    /// the gradient norm, the weights (ZeRO-1's all-gather).
    pub communication: f64,
    /// Clipping and the AdamW update.
    pub optimizer: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean token loss of the step.
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    pub targets: i64,
    pub times: StepTimes,
}

/// The optimizer a step drives: one process's [`AdamW`], the same with gradients summed
/// over a data-parallel group, or ZeRO-1's sharded one.
pub enum StepOptimizer<'a> {
    Local(&'a mut AdamW),
    DataParallel(&'a mut AdamW, &'a Dist),
    Zero1(&'a mut ZeroAdamW, &'a Dist),
}

impl<'a> StepOptimizer<'a> {
    fn dist(&self) -> Option<&'a Dist> {
        match self {
            Self::Local(_) => None,
            Self::DataParallel(_, d) | Self::Zero1(_, d) => Some(d),
        }
    }

    fn zero_grad(&mut self) {
        match self {
            Self::Local(o) | Self::DataParallel(o, _) => o.zero_grad(),
            Self::Zero1(o, _) => o.zero_grad(),
        }
    }

    /// Gradients summed over the group (where there is one), clipped, applied; the norm
    /// before clipping. Adds the time of the collectives to `comm`.
    fn clip_and_step(&mut self, lr: f64, grad_clip: f64, loss: f64, comm: &mut f64) -> Result<f64> {
        let check = |grad_norm: f64| {
            ensure!(
                loss.is_finite() && grad_norm.is_finite(),
                "non-finite loss ({loss}) or gradient norm ({grad_norm}); the update was not \
                 applied"
            );
            Ok(())
        };
        let dist = self.dist();
        match self {
            Self::Local(o) | Self::DataParallel(o, _) => {
                if let Some(d) = dist {
                    let t = Instant::now();
                    all_reduce_grads(d, &o.tensors())?;
                    *comm += t.elapsed().as_secs_f64();
                }
                let norm = clip_grad_norm(&o.tensors(), grad_clip);
                check(norm)?;
                o.step(lr)?;
                Ok(norm)
            }
            Self::Zero1(o, d) => {
                // Every rank sees the same (all-reduced) loss, so all stop together.
                check(0.0)?;
                let (norm, seconds) = o.step(d, lr, grad_clip)?;
                *comm += seconds;
                Ok(norm)
            }
        }
    }
}

/// One optimizer step over `micro_batches`: every micro-batch's summed token loss is
/// divided by the target count of the whole step before its backward, so the step
/// minimises exactly (sum of token losses) / (number of target tokens). A non-finite
/// loss or gradient norm is an error, and the parameters are then left as they were.
pub fn train_step(
    model: &LlavaOneVision,
    opt: &mut AdamW,
    micro_batches: &[PackedBatch],
    lr: f64,
    grad_clip: f64,
) -> Result<StepStats> {
    train_step_with(
        model,
        StepOptimizer::Local(opt),
        micro_batches,
        lr,
        grad_clip,
    )
}

/// [`train_step`] with any [`StepOptimizer`]. In a group, `micro_batches` are this rank's
/// share of the step: the target count and the loss are summed over the ranks, so every
/// rank divides by the whole step's targets and reports the whole step's loss.
pub fn train_step_with(
    model: &LlavaOneVision,
    mut opt: StepOptimizer<'_>,
    micro_batches: &[PackedBatch],
    lr: f64,
    grad_clip: f64,
) -> Result<StepStats> {
    let mut times = StepTimes::default();
    let local: i64 = micro_batches.iter().map(|b| b.num_targets).sum();
    let targets = match opt.dist() {
        Some(d) => {
            let t = Instant::now();
            let all = d.sum_i64(local)?;
            times.communication += t.elapsed().as_secs_f64();
            all
        }
        None => local,
    };
    let t = Instant::now();
    ensure!(targets > 0, "the step has no target tokens");
    opt.zero_grad();
    let mut loss = 0.0;
    for batch in micro_batches {
        let (sum, _) = batch_loss_sum(model, batch)?;
        let scaled = sum / targets as f64;
        // With frozen modules a micro-batch may not reach any trained parameter
        // (e.g. text only while only the merger trains): nothing to backpropagate.
        if scaled.requires_grad() {
            scaled.f_backward()?;
        }
        loss += scaled.double_value(&[]);
    }
    times.forward_backward = t.elapsed().as_secs_f64();
    if let Some(d) = opt.dist() {
        let t = Instant::now();
        loss = d.sum_f64(loss)?;
        times.communication += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    let mut comm = 0.0;
    let grad_norm = opt.clip_and_step(lr, grad_clip, loss, &mut comm)?;
    times.optimizer = (t.elapsed().as_secs_f64() - comm).max(0.0);
    times.communication += comm;
    Ok(StepStats {
        loss,
        grad_norm,
        lr,
        targets,
        times,
    })
}
