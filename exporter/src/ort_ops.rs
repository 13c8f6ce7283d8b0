//! ONNX Runtime's fused operators, as the decoder's ORT lowering uses them
//! ([`crate::decoder::DecoderOps::OrtFused`]): each replaces a run of primitive nodes by
//! one kernel, so a decoded token runs a few nodes per layer instead of dozens (at batch 1
//! a token's time is the sum of its nodes' dispatch costs plus the weight reads).
//!
//! tract runs none of them; a bundle carries this lowering beside the portable one
//! (docs/BUNDLE.md). Their semantics, as ONNX Runtime 1.32's CPU kernels implement them
//! (the golden cases check the whole graph against the reference):
//! * `SimplifiedLayerNormalization` (ONNX domain in ONNX Runtime): RMSNorm over the last
//!   axis, `x / sqrt(mean(x^2) + eps) * gamma`.
//! * `com.microsoft.SkipSimplifiedLayerNormalization`: the same on `x + skip`, with the
//!   sum itself as output 3 (the residual stream goes on from it).
//! * `com.microsoft.RotaryEmbedding`: rotate-half rotary over `[B, S, heads * hd]`, angles
//!   looked up by `position_ids` in `[max positions, hd / 2]` cos and sin tables.
//! * `com.microsoft.GroupQueryAttention`: causal GQA over `[B, S, heads * hd]` with the
//!   cache in `[B, kvh, slots, hd]`; when the runtime passes one buffer as both the past and
//!   the present cache (of the context's length), the new keys and values are written in
//!   place and nothing is concatenated. `attention_bias` (`[B, 1, S, T]`) masks padding.

use crate::graph::{Attr, GraphBuilder};

/// The contrib domain and the version of it the bundles declare.
const MS_DOMAIN: &str = "com.microsoft";

/// RMSNorm over the last axis of `x` with weight `gamma`.
pub fn simplified_layer_norm(g: &mut GraphBuilder, x: &str, gamma: &str, eps: f64) -> String {
    g.node(
        "SimplifiedLayerNormalization",
        &[x, gamma],
        vec![
            ("axis", Attr::Int(-1)),
            ("epsilon", Attr::Float(eps as f32)),
        ],
    )
}

/// RMSNorm of `x + skip`; returns (normalized, `x + skip`).
pub fn skip_simplified_layer_norm(
    g: &mut GraphBuilder,
    x: &str,
    skip: &str,
    gamma: &str,
    eps: f64,
) -> (String, String) {
    g.use_opset(MS_DOMAIN, 1);
    let y = g.fresh("SkipSimplifiedLayerNormalization");
    let sum = g.fresh("residual");
    g.node_with_outputs(
        "SkipSimplifiedLayerNormalization",
        MS_DOMAIN,
        &[x, skip, gamma],
        &[&y, "", "", &sum],
        vec![("epsilon", Attr::Float(eps as f32))],
    );
    (y, sum)
}

/// Rotate-half rotary embedding of `x` `[B, S, heads * hd]` at `position_ids` `[B, S]`.
pub fn rotary_embedding(
    g: &mut GraphBuilder,
    x: &str,
    position_ids: &str,
    cos: &str,
    sin: &str,
    heads: usize,
) -> String {
    g.use_opset(MS_DOMAIN, 1);
    let y = g.fresh("RotaryEmbedding");
    g.node_with_outputs(
        "RotaryEmbedding",
        MS_DOMAIN,
        &[x, position_ids, cos, sin],
        &[&y],
        vec![
            ("interleaved", Attr::Int(0)),
            ("num_heads", Attr::Int(heads as i64)),
        ],
    );
    y
}

/// The per-call inputs of [`group_query_attention`] besides q, k, v and the cache.
pub struct GqaInputs<'a> {
    /// `[B]` int32: every row's last slot (`T - 1`: all rows have `T` slots).
    pub seqlens_k: &'a str,
    /// Scalar int32 `T`: slots after this call.
    pub total_sequence_length: &'a str,
    /// `[B, 1, S, T]` additive mask.
    pub attention_bias: &'a str,
}

/// Grouped-query attention; returns (output `[B, S, nh * hd]`, present key, present value).
pub fn group_query_attention(
    g: &mut GraphBuilder,
    qkv: [&str; 3],
    past: [&str; 2],
    inputs: &GqaInputs<'_>,
    heads: usize,
    kv_heads: usize,
) -> (String, String, String) {
    g.use_opset(MS_DOMAIN, 1);
    let (o, k, v) = (g.fresh("GQA"), g.fresh("present_k"), g.fresh("present_v"));
    g.node_with_outputs(
        "GroupQueryAttention",
        MS_DOMAIN,
        &[
            qkv[0],
            qkv[1],
            qkv[2],
            past[0],
            past[1],
            inputs.seqlens_k,
            inputs.total_sequence_length,
            "", // cos_cache: rotary is applied before, at the runtime's positions
            "", // sin_cache
            "", // position_ids
            inputs.attention_bias,
        ],
        &[&o, &k, &v],
        vec![
            ("num_heads", Attr::Int(heads as i64)),
            ("kv_num_heads", Attr::Int(kv_heads as i64)),
        ],
    );
    (o, k, v)
}
