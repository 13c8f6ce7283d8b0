//! The projector (`visual.merger.*`): LayerNorm on each patch vector (`ln_q`), then each
//! 2x2 merge block (4 consecutive rows in the patch order) concatenated to 4D ->
//! Linear(4D, 4D) (`mlp.0`) -> exact GELU -> Linear(4D, H) (`mlp.2`). One LLM token per block.

use tch::nn::{self, Module};
use tch::Tensor;

use ove_core::config::VisionConfig;

use crate::layers::{gelu, LayerNorm, Linear};

/// Epsilon of `ln_q`: the encoder's `layer_norm_eps` (1e-5), not Qwen2-VL's 1e-6. Checked
/// on the golden cases: from the golden vision tokens, eps 1e-5 reproduces image_embeds to
/// 6e-8..1.5e-7, eps 1e-6 only to 9e-7..1.4e-6.
pub fn ln_q_eps(cfg: &VisionConfig) -> f64 {
    cfg.layer_norm_eps
}

#[derive(Debug)]
pub struct Merger {
    pub ln_q: LayerNorm,
    /// `mlp.0`: Linear(4D, 4D).
    pub fc1: Linear,
    /// `mlp.2`: Linear(4D, H).
    pub fc2: Linear,
    merge_unit: i64,
}

impl Merger {
    /// Builds the merger under `vs` (normally `root / "visual" / "merger"`).
    pub fn new(vs: nn::Path, cfg: &VisionConfig) -> Self {
        let hidden = cfg.merger_hidden();
        Self {
            ln_q: LayerNorm::new(&vs / "ln_q", cfg.hidden_size, ln_q_eps(cfg)),
            fc1: Linear::new(&vs / "mlp" / 0, hidden, hidden, true),
            fc2: Linear::new(&vs / "mlp" / 2, hidden, cfg.text_hidden_size, true),
            merge_unit: cfg.merge_unit() as i64,
        }
    }
}

impl Module for Merger {
    /// `[P, D]` patch vectors -> `[P/4, H]` image embeddings.
    fn forward(&self, x: &Tensor) -> Tensor {
        let d = x.size()[1];
        let x = self.ln_q.forward(x).reshape([-1, self.merge_unit * d]);
        self.fc2.forward(&gelu(&self.fc1.forward(&x)))
    }
}
