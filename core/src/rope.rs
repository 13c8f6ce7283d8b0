//! Rotary position embeddings: the inverse frequencies of the decoder's 1-D rotary and the
//! encoder's 2-D rotary, defined once for the trainer, the exporter and the runtime.
//!
//! The values are computed in f32 the way PyTorch does (`1 / theta ** (arange(0, dim, 2) /
//! dim)` with an f32 exponent), so that an exported graph's constants and the trainer's
//! tensors are the same numbers as the reference's.

use crate::config::{TextConfig, VisionConfig};

/// Theta of RICE-ViT's 2-D rotary when `vision_config` does not state one (`rope_theta`):
/// the released checkpoints leave it out and the upstream encoder uses 10000.
pub const DEFAULT_VISION_ROPE_THETA: f64 = 10000.0;

/// Rotary inverse frequencies `1 / theta^(2i/dim)`, i < dim/2, in f32 as PyTorch computes
/// them (f32 exponent, f32 pow, f32 reciprocal).
pub fn inv_freq(theta: f64, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / dim as f32))
        .collect()
}

impl TextConfig {
    /// The decoder's `head_dim / 2` inverse frequencies (`rope_theta`).
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        inv_freq(self.rope_theta, self.head_dim())
    }
}

impl VisionConfig {
    /// The encoder's rotary theta: `rope_theta` from the config, else
    /// [`DEFAULT_VISION_ROPE_THETA`].
    pub fn rope_theta(&self) -> f64 {
        self.rope_theta.unwrap_or(DEFAULT_VISION_ROPE_THETA)
    }

    /// The encoder's `head_dim / 4` inverse frequencies per axis: one rotary of dimension
    /// `head_dim / 2` for the patch row and the same for the column.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let f = inv_freq(self.rope_theta(), self.head_dim() / 2);
        debug_assert_eq!(f.len(), self.rotary_freqs());
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known values, not the formula again: theta 10000 over dim 4 is [1, 1/100], and the
    /// released 4B decoder (head_dim 128, theta 5e6) starts at 1 and ends near 2.5e-7.
    #[test]
    fn known_frequencies() {
        assert_eq!(inv_freq(10000.0, 4), vec![1.0, 0.01]);
        let f = inv_freq(5e6, 128);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        let last = f64::from(f[63]);
        // 5e6^(-126/128) = 2.545e-7.
        assert!((last - 5e6f64.powf(-126.0 / 128.0)).abs() < 1e-12, "{last}");
    }
}
