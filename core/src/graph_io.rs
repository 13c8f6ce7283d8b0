//! The input and output names of the bundle's ONNX graphs (docs/BUNDLE.md), defined once:
//! the exporter writes them, the runtime's backends, bundle checks and TensorRT shape profiles
//! read them.

/// `vision.onnx` input: pre-cut patches `[P, patch_dim]` of all images (f32).
pub const PIXEL_VALUES: &str = "pixel_values";
/// `vision.onnx` input: the (row, column) of every patch `[P, 2]` (i64).
pub const PATCH_POS: &str = "patch_pos";
/// `vision.onnx` input: rows carried over from the previous images' `vision_states` `[C, D]`.
pub const CARRY: &str = "carry";
/// `vision.onnx` input: which rows of `carry ++ vision_states` are `vision_tokens` `[P]` (i64).
pub const WINDOW_INDEX: &str = "window_index";
/// `vision.onnx` output: the rows handed to the merger `[P, D]` (for tracing).
pub const VISION_TOKENS: &str = "vision_tokens";
/// `vision.onnx` output: the ViT output of this image, class token first `[P + 1, D]`.
pub const VISION_STATES: &str = "vision_states";
/// `vision.onnx` output: merged image embeddings `[P / merge_unit, hidden]` (f32).
pub const IMAGE_EMBEDS: &str = "image_embeds";

/// `lines.onnx` (the batched line encoder, optional) takes [`PIXEL_VALUES`] `[B, P, patch_dim]`
/// and [`PATCH_POS`] `[B, P, 2]` (each line's patches, padded to the longest line of the batch)
/// and this: an additive key bias `[B, 1 + P]` (f32), 0 for the class token (column 0) and a
/// line's own patches, -inf for the padding, so a line attends to itself and nothing else.
pub const KEY_BIAS: &str = "key_bias";
/// `lines.onnx` output: every line's encoder output without its class token `[B, P, D]`
/// (a line's first `P_i` rows are what `vision.onnx` gives as `vision_tokens` for it alone).
pub const LINE_TOKENS: &str = "line_tokens";

/// `decoder.onnx` input: token embeddings of the new positions `[S, hidden]` (f32).
pub const INPUTS_EMBEDS: &str = "inputs_embeds";
/// `decoder.onnx` input: the absolute positions of the new tokens `[S]` (i64).
pub const POSITION_IDS: &str = "position_ids";
/// `decoder.onnx` input: additive attention bias `[S, K + S]` (0 or -inf; f32).
pub const ATTENTION_BIAS: &str = "attention_bias";
/// `decoder.onnx` input: which of the new positions to compute logits for `[L]` (i64).
pub const LOGITS_INDEX: &str = "logits_index";
/// `decoder.onnx` output: logits of the new positions `[S, vocab]` (f32).
pub const LOGITS: &str = "logits";

/// Name prefixes of the per-layer KV cache inputs and outputs (`past_key.{layer}`, ...).
pub const PAST_KEY: &str = "past_key";
pub const PAST_VALUE: &str = "past_value";
pub const PRESENT_KEY: &str = "present_key";
pub const PRESENT_VALUE: &str = "present_value";

/// `past_key.{layer}`: the cached keys fed to layer `layer`.
pub fn past_key(layer: usize) -> String {
    format!("{PAST_KEY}.{layer}")
}
/// `past_value.{layer}`.
pub fn past_value(layer: usize) -> String {
    format!("{PAST_VALUE}.{layer}")
}
/// `present_key.{layer}`: the keys after this step (past and new).
pub fn present_key(layer: usize) -> String {
    format!("{PRESENT_KEY}.{layer}")
}
/// `present_value.{layer}`.
pub fn present_value(layer: usize) -> String {
    format!("{PRESENT_VALUE}.{layer}")
}
/// Whether `name` is one of the KV cache inputs (`past_key.N` or `past_value.N`).
pub fn is_past(name: &str) -> bool {
    [PAST_KEY, PAST_VALUE].iter().any(|p| {
        name.strip_prefix(p)
            .and_then(|r| r.strip_prefix('.'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_names() {
        assert_eq!(past_key(0), "past_key.0");
        assert_eq!(present_value(11), "present_value.11");
        assert!(is_past("past_value.3"));
        assert!(!is_past("past_value."));
        assert!(!is_past("present_key.0"));
        assert!(!is_past("past_keys.0"));
    }
}
