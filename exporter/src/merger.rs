//! The merger (projector): LayerNorm `ln_q` on each patch token, then each 2x2 block of
//! neighbouring patches (consecutive rows in the reference patch order) concatenated to
//! 4D -> Linear -> GELU -> Linear to the decoder's hidden size: one LLM token per block.

use anyhow::Result;
use ove_core::ModelConfig;

use crate::nn::{gelu, Ctx};

/// `tokens` [P, D] -> image embeddings [P/m, H], m the merge unit (4 for 2x2).
///
/// `ln_q` uses `vision_config.layer_norm_eps` (the released code passes it to the merger;
/// Qwen2-VL's merger hard-codes 1e-6 instead). The golden cases decide: with 1e-5 the
/// image_embeds agree to ~2e-7, with 1e-6 only to ~1e-6.
pub fn merger(cx: &mut Ctx, cfg: &ModelConfig, tokens: &str) -> Result<String> {
    let v = &cfg.vision_config;
    let (d, m, h) = (
        v.hidden_size,
        v.merger_hidden(),
        cfg.text_config.hidden_size,
    );
    cx.g.set_scope("visual.merger");
    let x = cx.layer_norm(tokens, "visual.merger.ln_q", d, v.layer_norm_eps)?;
    // Patches of one merge block are consecutive rows, so concatenating them is a reshape.
    let x = cx.g.reshape(&x, &[-1, m as i64]);
    let x = cx.linear(&x, "visual.merger.mlp.0", m, m, true)?;
    let x = gelu(&mut cx.g, &x);
    cx.linear(&x, "visual.merger.mlp.2", m, h, true)
}
