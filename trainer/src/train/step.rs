//! One optimizer step: forward and backward over the micro-batches, the loss normalised
//! by the target tokens of the whole step, clip, AdamW.

use std::time::Instant;

use anyhow::{ensure, Result};
use tch::Tensor;

use crate::decoder::{AttentionMask, Qwen3};
use crate::dist::reducer::{GradReducer, ReduceStats};
use crate::dist::zero::ZeroAdamW;
use crate::dist::Dist;
use crate::model::LlavaOneVision;
use crate::train::loss::{head_loss_backward, loss_chunk_rows, token_loss_sum};
use crate::train::optim::{clip_grad_norm, AdamW};
use crate::train::packing::PackedBatch;

/// `(sum of token losses, number of target tokens)` of one packed batch.
pub fn batch_loss_sum(model: &LlavaOneVision, batch: &PackedBatch) -> Result<(Tensor, i64)> {
    let image_embeds = batch_image_embeds(model, batch)?;
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

/// The merged embeddings of a batch's images (vision tower and merger), if it has any.
fn batch_image_embeds(model: &LlavaOneVision, batch: &PackedBatch) -> Result<Option<Tensor>> {
    batch
        .images()
        .map(|im| model.encode_images(&im).map(|o| o.image_embeds))
        .transpose()
}

/// Forward and backward of one packed batch: `scale` x (sum of its token losses) is
/// backpropagated into every trained parameter it reaches; returns that scaled loss and
/// the batch's target count. The decoder's [`crate::decoder::DecoderExec`] says how:
/// with checkpointed layers or not, the loss in chunks of how many rows. A batch that
/// reaches no trained parameter (text only while only the merger trains) is only
/// evaluated.
pub fn batch_backward(
    model: &LlavaOneVision,
    batch: &PackedBatch,
    scale: f64,
) -> Result<(f64, i64)> {
    batch_backward_with(model, batch, scale, &mut |_| {})
}

/// [`batch_backward`], calling `done` as each [`Phase`] ends (the vision tower and the
/// embeddings are part of [`Phase::Forward`]).
pub fn batch_backward_with(
    model: &LlavaOneVision,
    batch: &PackedBatch,
    scale: f64,
    done: &mut dyn FnMut(Phase),
) -> Result<(f64, i64)> {
    let image_embeds = batch_image_embeds(model, batch)?;
    let embeds = model.embed(&batch.input_ids, image_embeds.as_ref())?;
    decoder_backward(
        &model.decoder,
        &embeds,
        &batch.positions,
        &batch.mask(),
        &batch.targets,
        scale,
        done,
    )
}

/// The parts of [`decoder_backward`], in order, for timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The decoder layers and the final norm (without activations when checkpointed).
    Forward,
    /// The LM head and cross-entropy, forward and backward, chunk by chunk.
    HeadLoss,
    /// The backward of the layers (run again first when checkpointed), the embeddings and
    /// whatever made them.
    Backward,
}

/// [`batch_backward`] from the decoder's input embeddings on (what `ove-train
/// bench-train` times): `scale` x (sum of the token losses of `targets`) backpropagated
/// through the decoder into `embeds`' graph. `done` is called as each [`Phase`] ends.
pub fn decoder_backward(
    decoder: &Qwen3,
    embeds: &Tensor,
    positions: &Tensor,
    mask: &AttentionMask,
    targets: &Tensor,
    scale: f64,
    done: &mut dyn FnMut(Phase),
) -> Result<(f64, i64)> {
    let chunk = loss_chunk_rows(
        decoder.exec.loss_chunk_rows,
        decoder.config.vocab_size as i64,
    );
    let head = |h: &Tensor| decoder.logits(h);
    let (hidden, kept) = if decoder.exec.checkpoint_layers {
        let (hidden, kept) = decoder.forward_checkpointed(embeds, positions, mask)?;
        (hidden, Some(kept))
    } else {
        (decoder.forward_embeds(embeds, positions, mask, None)?, None)
    };
    done(Phase::Forward);
    let loss = head_loss_backward(&hidden, targets, head, scale, chunk)?;
    done(Phase::HeadLoss);
    let out = (loss.loss, loss.count);
    loss.backward_trunk()?;
    if let (Some(kept), true) = (kept, out.1 > 0) {
        kept.backward(decoder, embeds)?;
    }
    done(Phase::Backward);
    Ok(out)
}

/// Where a step's time went, in seconds (on a GPU without synchronisation, so the split
/// between phases is approximate there; on the CPU it is exact).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct StepTimes {
    /// Forward passes, losses and backward passes of this rank's micro-batches: the sum
    /// of the next three.
    pub forward_backward: f64,
    /// The vision tower, the embeddings and the decoder layers, forward.
    #[serde(default)]
    pub forward: f64,
    /// The LM head and cross-entropy, forward and backward, chunk by chunk.
    #[serde(default)]
    pub head_loss: f64,
    /// The backward below the LM head (checkpointed layers run again first); in a
    /// data-parallel run, gradient buckets start their all-reduce during it.
    #[serde(default)]
    pub backward: f64,
    /// Collectives the step waited for: the target count, the loss, gradients (the part
    /// of their all-reduce the backward did not hide, or ZeRO-1's reduce-scatter), the
    /// gradient norm, the weights (ZeRO-1's all-gather).
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
    /// The gradient all-reduce of a data-parallel step (not ZeRO-1's).
    pub reduce: Option<ReduceStats>,
}

/// The optimizer a step drives: one process's [`AdamW`], the same with gradients summed
/// over a data-parallel group (by a [`GradReducer`] on its parameters), or ZeRO-1's
/// sharded one.
pub enum StepOptimizer<'a, 'g> {
    Local(&'a mut AdamW),
    DataParallel(&'a mut AdamW, &'a mut GradReducer<'g>),
    Zero1(&'a mut ZeroAdamW, &'g Dist),
}

impl<'g> StepOptimizer<'_, 'g> {
    fn dist(&self) -> Option<&'g Dist> {
        match self {
            Self::Local(_) => None,
            Self::DataParallel(_, r) => Some(r.dist()),
            Self::Zero1(_, d) => Some(d),
        }
    }

    /// The reducer to arm before the step's last backward (data parallel only).
    fn reducer(&self) -> Option<&GradReducer<'g>> {
        match self {
            Self::DataParallel(_, r) => Some(r),
            _ => None,
        }
    }

    fn zero_grad(&mut self) {
        match self {
            Self::Local(o) | Self::DataParallel(o, _) => o.zero_grad(),
            Self::Zero1(o, _) => o.zero_grad(),
        }
    }

    /// Gradients clipped (ZeRO-1: reduce-scattered first) and applied; the norm before
    /// clipping. Adds the time of the collectives to `comm`.
    fn clip_and_step(&mut self, lr: f64, grad_clip: f64, loss: f64, comm: &mut f64) -> Result<f64> {
        let check = |grad_norm: f64| {
            ensure!(
                loss.is_finite() && grad_norm.is_finite(),
                "non-finite loss ({loss}) or gradient norm ({grad_norm}); the update was not \
                 applied"
            );
            Ok(())
        };
        match self {
            Self::Local(o) | Self::DataParallel(o, _) => {
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
    mut opt: StepOptimizer<'_, '_>,
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
    let last = micro_batches.len().checked_sub(1);
    for (k, batch) in micro_batches.iter().enumerate() {
        // Gradients become final in the last backward: below the LM head of the last
        // micro-batch (the head's chunks accumulate into it before).
        let reducer = (Some(k) == last).then(|| opt.reducer()).flatten();
        let mut mark = Instant::now();
        loss += batch_backward_with(model, batch, 1.0 / targets as f64, &mut |phase| {
            let seconds = mark.elapsed().as_secs_f64();
            mark = Instant::now();
            match phase {
                Phase::Forward => times.forward += seconds,
                Phase::HeadLoss => {
                    times.head_loss += seconds;
                    if let Some(r) = reducer {
                        r.arm();
                    }
                }
                Phase::Backward => times.backward += seconds,
            }
        })?
        .0;
    }
    times.forward_backward = t.elapsed().as_secs_f64();
    // Before any other collective: the buckets the backward did not start, in order.
    let reduce = match &mut opt {
        StepOptimizer::DataParallel(_, r) => Some(r.finish()?),
        _ => None,
    };
    if let Some(r) = reduce {
        times.communication += r.seconds;
    }
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
        reduce,
    })
}
