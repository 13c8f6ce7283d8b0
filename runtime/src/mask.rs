//! The decoder's per-step `position_ids` and `attention_bias`, computed in Rust.
//!
//! They are inputs of decoder.onnx rather than computed inside it because tract cannot run
//! the ONNX forms that build them from shapes (Trilu with a shape-derived k, Slice with a
//! runtime start); see docs/BUNDLE.md.

/// The bias of a masked position: large enough that softmax gives it exactly 0 in f32,
/// small enough that adding it to a score never overflows.
pub const MASKED: f32 = -1e9;

/// Absolute positions of `new` tokens that follow `past` cached ones (plain 1-D RoPE:
/// image tokens take positions like any other token).
pub fn position_ids(past: usize, new: usize) -> Vec<i64> {
    (past..past + new).map(|p| p as i64).collect()
}

/// The causal bias `[new, past + new]`: row `i` (absolute position `past + i`) may attend
/// to every cached token and to the new tokens up to and including itself.
pub fn causal_bias(past: usize, new: usize) -> Vec<f32> {
    let total = past + new;
    let mut bias = vec![0.0f32; new * total];
    for (i, row) in bias.chunks_exact_mut(total.max(1)).enumerate().take(new) {
        for b in &mut row[past + i + 1..] {
            *b = MASKED;
        }
    }
    bias
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_is_lower_triangular() {
        let m = MASKED;
        assert_eq!(
            causal_bias(0, 3),
            vec![0.0, m, m, 0.0, 0.0, m, 0.0, 0.0, 0.0]
        );
        assert_eq!(position_ids(0, 3), vec![0, 1, 2]);
    }

    #[test]
    fn decode_step_sees_the_whole_cache() {
        assert_eq!(causal_bias(4, 1), vec![0.0; 5]);
        assert_eq!(position_ids(4, 1), vec![4]);
    }

    #[test]
    fn chunk_after_cache() {
        let m = MASKED;
        assert_eq!(
            causal_bias(2, 2),
            vec![0.0, 0.0, 0.0, m, 0.0, 0.0, 0.0, 0.0]
        );
        assert!(causal_bias(0, 0).is_empty());
    }
}
