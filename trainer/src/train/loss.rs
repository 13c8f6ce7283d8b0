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
    let h = *hidden.size().last().expect("hidden has no dimensions");
    let targets = targets.reshape([-1]);
    let keep = targets.ne(IGNORE_INDEX).nonzero().squeeze_dim(1);
    let count = keep.size()[0];
    if count == 0 {
        // Keeps the graph connected so that backward() still works.
        return (hidden.sum(Kind::Float) * 0.0, 0);
    }
    let hidden = hidden.reshape([-1, h]).index_select(0, &keep);
    let logits = lm_head(&hidden).to_kind(Kind::Float);
    let sum = logits.cross_entropy_loss::<Tensor>(
        &targets.index_select(0, &keep),
        None,
        Reduction::Sum,
        IGNORE_INDEX,
        0.0,
    );
    (sum, count)
}
