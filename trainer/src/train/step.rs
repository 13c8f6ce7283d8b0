//! One optimizer step: forward and backward over the micro-batches, the loss normalised
//! by the target tokens of the whole step, clip, AdamW.

use anyhow::{ensure, Result};
use tch::Tensor;

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

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean token loss of the step.
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    pub targets: i64,
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
    let targets: i64 = micro_batches.iter().map(|b| b.num_targets).sum();
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
    let grad_norm = clip_grad_norm(&opt.tensors(), grad_clip);
    ensure!(
        loss.is_finite() && grad_norm.is_finite(),
        "non-finite loss ({loss}) or gradient norm ({grad_norm}); the update was not applied"
    );
    opt.step(lr);
    Ok(StepStats {
        loss,
        grad_norm,
        lr,
        targets,
    })
}
