//! The training loss: the sum of the per-token cross-entropies over the target tokens,
//! divided by the number of target tokens (over the whole optimizer step).

use tch::{Kind, Reduction, Tensor};

/// Target id of a position that is not trained on.
pub const IGNORE_INDEX: i64 = -100;

/// `(sum of token losses, number of target tokens)` for final hidden states `[B, T, H]`
/// and targets `[B, T]` (`targets[t]` is the token position `t` must predict, or
/// [`IGNORE_INDEX`]). Only the target positions go through `lm_head` (`[.., H] -> [.., V]`),
/// which keeps the `[T, V]` logits of long rows out of memory.
pub fn token_loss_sum(
    hidden: &Tensor,
    targets: &Tensor,
    lm_head: impl Fn(&Tensor) -> Tensor,
) -> (Tensor, i64) {
    let Some((hidden, targets)) = target_rows(hidden, targets) else {
        // Keeps the graph connected so that backward() still works.
        return (hidden.sum(Kind::Float) * 0.0, 0);
    };
    let logits = lm_head(&hidden).to_kind(Kind::Float);
    let sum =
        logits.cross_entropy_loss::<Tensor>(&targets, None, Reduction::Sum, IGNORE_INDEX, 0.0);
    (sum, targets.size()[0])
}

/// The rows of hidden states `[B, T, H]` whose target `[B, T]` is trained on, as `[N, H]`,
/// with those `N` targets; `None` when there are none.
fn target_rows(hidden: &Tensor, targets: &Tensor) -> Option<(Tensor, Tensor)> {
    let h = *hidden.size().last().expect("hidden has no dimensions");
    let targets = targets.reshape([-1]);
    let keep = targets.ne(IGNORE_INDEX).nonzero().squeeze_dim(1);
    (keep.size()[0] > 0).then(|| {
        (
            hidden.reshape([-1, h]).index_select(0, &keep),
            targets.index_select(0, &keep),
        )
    })
}

/// Backpropagates `grad` (the gradient of some loss with respect to `t`) through `t`'s
/// graph: the backward of `sum(t * grad)`, whose gradient with respect to `t` is `grad`
/// exactly. tch's `backward()` takes no output gradient; the chunked loss and the
/// checkpointed layers resume a backward this way.
pub fn backward_from(t: &Tensor, grad: &Tensor) -> anyhow::Result<()> {
    Ok((t * grad).sum(Kind::Float).f_backward()?)
}

/// f32 logits one loss chunk may hold when the row count is not given: 1 GiB.
const CHUNK_LOGIT_BYTES: i64 = 1 << 30;

/// Target rows per chunk of [`head_loss_backward`]: `rows`, or as many as fit
/// [`CHUNK_LOGIT_BYTES`] of f32 logits over `vocab` (at least 1).
pub fn loss_chunk_rows(rows: Option<i64>, vocab: i64) -> i64 {
    rows.unwrap_or(CHUNK_LOGIT_BYTES / (4 * vocab.max(1)))
        .max(1)
}

/// Forward and backward of the LM head and the cross-entropy: `scale` x (sum of the token
/// losses) is backpropagated into the head's parameters and onto a detached copy of the
/// target rows of `hidden`; [`HeadLoss::backward_trunk`] then carries it on through
/// `hidden`'s graph.
///
/// The target rows go through the head `chunk_rows` at a time, each chunk's backward run
/// at once, so at most one chunk of `[rows, V]` logits (and their gradient) exists at a
/// time instead of all of them. The same gradients as one backward of
/// [`token_loss_sum`] (the sums run in another order).
pub fn head_loss_backward(
    hidden: &Tensor,
    targets: &Tensor,
    lm_head: impl Fn(&Tensor) -> Tensor,
    scale: f64,
    chunk_rows: i64,
) -> anyhow::Result<HeadLoss> {
    let Some((selected, targets)) = target_rows(hidden, targets) else {
        return Ok(HeadLoss {
            loss: 0.0,
            count: 0,
            trunk: None,
        });
    };
    let count = targets.size()[0];
    let leaf = selected
        .detach()
        .set_requires_grad(selected.requires_grad());
    let mut total = Tensor::zeros([], (Kind::Float, hidden.device()));
    let mut start = 0;
    while start < count {
        let n = chunk_rows.min(count - start);
        let logits = lm_head(&leaf.narrow(0, start, n)).to_kind(Kind::Float);
        let sum = logits.cross_entropy_loss::<Tensor>(
            &targets.narrow(0, start, n),
            None,
            Reduction::Sum,
            IGNORE_INDEX,
            0.0,
        ) * scale;
        if sum.requires_grad() {
            sum.f_backward()?;
        }
        total += sum.detach();
        start += n;
    }
    Ok(HeadLoss {
        loss: total.double_value(&[]),
        count,
        trunk: selected.requires_grad().then(|| (selected, leaf.grad())),
    })
}

/// What [`head_loss_backward`] leaves: the scaled loss, the target count, and the
/// gradient of the selected hidden rows still to go through the trunk.
pub struct HeadLoss {
    pub loss: f64,
    pub count: i64,
    trunk: Option<(Tensor, Tensor)>,
}

impl HeadLoss {
    /// The backward of the trunk (decoder layers, embeddings, vision) from the gradient
    /// the head left on the hidden rows.
    pub fn backward_trunk(self) -> anyhow::Result<()> {
        if let Some((selected, grad)) = self.trunk {
            backward_from(&selected, &grad)?;
        }
        Ok(())
    }
}
