//! The merger (projector): LayerNorm `ln_q` on each patch token, then each 2x2 block of
//! neighbouring patches (consecutive rows in the reference patch order) concatenated to
//! 4D -> Linear -> GELU -> Linear to the decoder's hidden size: one LLM token per block.

use anyhow::Result;
use ove_core::ModelConfig;

use crate::nn::{gelu, Ctx};

/// `tokens` [P, D] -> image embeddings [P/4, H].
pub fn merger(cx: &mut Ctx, cfg: &ModelConfig, tokens: &str, ln_eps: f64) -> Result<String> {
    let v = &cfg.vision_config;
    let (d, m, h) = (v.hidden_size, v.merger_hidden(), cfg.text_config.hidden_size);
    cx.g.set_scope("visual.merger");
    let x = cx.layer_norm(tokens, "visual.merger.ln_q", d, ln_eps)?;
    // Patches of one merge block are consecutive rows, so concatenating them is a reshape.
    let x = cx.g.reshape(&x, &[-1, m as i64]);
    let x = cx.linear(&x, "visual.merger.mlp.0", m, m, true)?;
    let x = gelu(&mut cx.g, &x);
    cx.linear(&x, "visual.merger.mlp.2", m, h, true)
}
