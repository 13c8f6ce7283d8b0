//! The Qwen3 decoder with a KV cache: one graph for prefill (S new tokens, K = 0) and
//! decode (S = 1), per docs/BUNDLE.md, over a batch of B sequences (rows). Every row has
//! its own positions, bias and cache rows, so rows of different lengths share a call: the
//! runtime pads them and masks the padding (`ove_runtime::mask`). At B = 1 the graph
//! computes exactly what the unbatched graph of schema <= 3 did.
//!
//! Positions and the causal mask come in as inputs (`position_ids`, `attention_bias`):
//! building them in the graph needs Trilu / runtime-start Slice, which tract lacks.
//! The token embedding lookup is the runtime's (image rows are spliced in there), so the
//! graph starts from `inputs_embeds`.

use anyhow::Result;
use ove_core::config::TextConfig;
use ove_core::graph_io as io;
use ove_core::onnx_proto::data_type;
use ove_core::ModelConfig;

use crate::graph::Dim;
use crate::nn::{activation, rope, Ctx};
use crate::weights::LinearWeight;

/// Per-call values shared by all layers.
struct Shared {
    /// `[B, S, nh, hd]` and `[B, S, kvh, hd]`: the 4-D views of a projection's rows.
    q_shape: String,
    kv_shape: String,
    /// `[N, nh*hd]`: attention's output back on the stream's rows.
    rows_shape: String,
    cos: String,
    sin: String,
    /// `attention_bias` repeated once per query head of a KV group: [B, 1, g*S, T].
    bias: String,
}

/// Grouped-query self-attention of layer `l`; returns the output and the new cache.
fn attention(
    cx: &mut Ctx,
    t: &TextConfig,
    l: usize,
    x: &str,
    sh: &Shared,
) -> Result<(String, String, String)> {
    let (h, nh, kvh, hd) = (
        t.hidden_size,
        t.num_attention_heads,
        t.num_key_value_heads,
        t.head_dim(),
    );
    let p = format!("model.layers.{l}.self_attn");
    cx.g.set_scope(&p);
    let eps = t.rms_norm_eps;
    let past_k = cx.g.input(
        &io::past_key(l),
        data_type::FLOAT,
        &[Dim::sym("B"), kvh.into(), Dim::sym("K"), hd.into()],
    );
    let past_v = cx.g.input(
        &io::past_value(l),
        data_type::FLOAT,
        &[Dim::sym("B"), kvh.into(), Dim::sym("K"), hd.into()],
    );

    let q = cx.linear(x, &format!("{p}.q_proj"), h, nh * hd, t.attention_bias)?;
    // The stream is [N, H], N = B*S rows; attention works on [B, S, heads, hd] views.
    let q = cx.g.node("Reshape", &[&q, &sh.q_shape], vec![]); // [B, S, nh, hd]
    let q = cx.rms_norm(&q, &format!("{p}.q_norm"), hd, eps)?;
    let k = cx.linear(x, &format!("{p}.k_proj"), h, kvh * hd, t.attention_bias)?;
    let k = cx.g.node("Reshape", &[&k, &sh.kv_shape], vec![]);
    let k = cx.rms_norm(&k, &format!("{p}.k_norm"), hd, eps)?;
    let v = cx.linear(x, &format!("{p}.v_proj"), h, kvh * hd, t.attention_bias)?;
    let v = cx.g.node("Reshape", &[&v, &sh.kv_shape], vec![]);

    let g = &mut cx.g;
    let q = g.transpose(&q, &[0, 2, 1, 3]); // [B, nh, S, hd]
    let q = rope(g, &q, &sh.cos, &sh.sin, hd);
    let k = g.transpose(&k, &[0, 2, 1, 3]); // [B, kvh, S, hd]
    let k = rope(g, &k, &sh.cos, &sh.sin, hd);
    let v = g.transpose(&v, &[0, 2, 1, 3]);
    let present_k = g.concat(&[&past_k, &k], 2); // [B, kvh, T, hd]
    let present_v = g.concat(&[&past_v, &v], 2);

    // GQA without repeating the cache: query head kv*g + j reads KV head kv, so the g
    // heads of a group become g*S rows of one [g*S, hd] @ [hd, T] product per KV head.
    let q = g.reshape(&q, &[0, kvh as i64, -1, hd as i64]); // [B, kvh, g*S, hd]
    let kt = g.transpose(&present_k, &[0, 1, 3, 2]);
    let scores = g.matmul(&q, &kt); // [B, kvh, g*S, T]
    let scores = g.scale(&scores, 1.0 / (hd as f32).sqrt());
    let scores = g.add(&scores, &sh.bias);
    let probs = g.softmax(&scores, -1);
    let o = g.matmul(&probs, &present_v); // [B, kvh, g*S, hd]
    let o = g.reshape(&o, &[0, nh as i64, -1, hd as i64]); // [B, nh, S, hd]
    let o = g.transpose(&o, &[0, 2, 1, 3]);
    let o = g.node("Reshape", &[&o, &sh.rows_shape], vec![]); // [N, nh*hd]
    let o = cx.linear(&o, &format!("{p}.o_proj"), nh * hd, h, false)?;
    Ok((o, present_k, present_v))
}

/// Gated MLP of layer `l`: down(act(gate(x)) * up(x)), act = `hidden_act` (SiLU in Qwen3).
fn mlp(cx: &mut Ctx, t: &TextConfig, l: usize, x: &str) -> Result<String> {
    let p = format!("model.layers.{l}.mlp");
    cx.g.set_scope(&p);
    let (h, i) = (t.hidden_size, t.intermediate_size);
    let gate = cx.linear(x, &format!("{p}.gate_proj"), h, i, false)?;
    let up = cx.linear(x, &format!("{p}.up_proj"), h, i, false)?;
    let a = activation(&mut cx.g, &t.hidden_act, "text_config.hidden_act", &gate)?;
    let a = cx.g.mul(&a, &up);
    cx.linear(&a, &format!("{p}.down_proj"), i, h, false)
}

/// Builds the whole decoder graph.
pub fn build(cx: &mut Ctx, cfg: &ModelConfig) -> Result<()> {
    let t = &cfg.text_config;
    let (h, hd, kvh) = (t.hidden_size, t.head_dim(), t.num_key_value_heads);
    let eps = t.rms_norm_eps;
    let g = &mut cx.g;
    let (b, s) = (Dim::sym("B"), Dim::sym("S"));
    // The rows of all sequences, row-major ([N, H], N = B*S): the stream keeps this one
    // dim rather than B*S recomputed from a reshape, whose product of symbols tract's
    // int4 (Q4_0) matmul gets wrong.
    let x = g.input(
        io::INPUTS_EMBEDS,
        data_type::FLOAT,
        &[Dim::sym("N"), h.into()],
    );
    let pos = g.input(io::POSITION_IDS, data_type::INT64, &[b.clone(), s.clone()]);
    let bias = g.input(io::ATTENTION_BIAS, data_type::FLOAT, &[b, s, Dim::sym("T")]);
    let logits_index = g.input(io::LOGITS_INDEX, data_type::INT64, &[Dim::sym("L")]);

    // RoPE angles [B, 1, S, hd] (broadcast over heads): position * [f ; f] (one product
    // per element, as the reference).
    g.set_scope("model.rotary_emb");
    let f = t.rope_inv_freq();
    let f2: Vec<f32> = f.iter().chain(f.iter()).copied().collect();
    let freqs = g.const_f32("model.rotary_emb.inv_freq", &[1, hd], &f2);
    let posf = g.cast(&pos, data_type::FLOAT);
    let posf = g.unsqueeze(&posf, &[1, 3]); // [B, 1, S, 1]
    let angles = g.matmul(&posf, &freqs);
    let cos = g.cos(&angles);
    let sin = g.sin(&angles);
    let groups = t.gqa_groups();
    let bias = if groups == 1 {
        bias
    } else {
        let parts: Vec<&str> = (0..groups).map(|_| bias.as_str()).collect();
        g.concat(&parts, 1)
    };
    let bias = g.unsqueeze(&bias, &[1]); // [B, 1, g*S, T]
    let bs = g.node("Shape", &[&pos], vec![]); // (B, S)
    let heads = |g: &mut crate::graph::GraphBuilder, n: usize| {
        let rest = g.ints(&[n as i64, hd as i64]);
        g.concat(&[&bs, &rest], 0)
    };
    let q_shape = heads(g, t.num_attention_heads);
    let kv_shape = heads(g, kvh);
    let n = g.node("Shape", &[&x], vec![]);
    let n = g.slice(&n, 0, 0, 1);
    let width = g.ints(&[(t.num_attention_heads * hd) as i64]);
    let rows_shape = g.concat(&[&n, &width], 0);
    let sh = Shared {
        q_shape,
        kv_shape,
        rows_shape,
        cos,
        sin,
        bias,
    };
    let mut x = x;

    let mut presents = Vec::new();
    for l in 0..t.num_hidden_layers {
        cx.g.set_scope(format!("model.layers.{l}"));
        let r = cx.rms_norm(&x, &format!("model.layers.{l}.input_layernorm"), h, eps)?;
        let (a, pk, pv) = attention(cx, t, l, &r, &sh)?;
        cx.g.set_scope(format!("model.layers.{l}"));
        x = cx.g.add(&x, &a);
        let r = cx.rms_norm(
            &x,
            &format!("model.layers.{l}.post_attention_layernorm"),
            h,
            eps,
        )?;
        let m = mlp(cx, t, l, &r)?;
        cx.g.set_scope(format!("model.layers.{l}"));
        x = cx.g.add(&x, &m);
        presents.push((pk, pv));
    }

    // Only the requested rows (of all B x S, row-major) get the final norm and the
    // (large) lm_head product.
    cx.g.set_scope("model.norm");
    let x = cx.g.gather(&x, &logits_index, 0);
    let x = cx.rms_norm(&x, "model.norm", h, eps)?;
    cx.g.set_scope("lm_head");
    let head = if t.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    let logits = cx.linear_weight(&x, &LinearWeight::new(head, t.vocab_size, h), None)?;

    let g = &mut cx.g;
    g.output(
        &logits,
        io::LOGITS,
        data_type::FLOAT,
        &[Dim::sym("L"), t.vocab_size.into()],
    );
    for (l, (pk, pv)) in presents.iter().enumerate() {
        let dims = [Dim::sym("B"), kvh.into(), Dim::sym("T"), hd.into()];
        g.output(pk, &io::present_key(l), data_type::FLOAT, &dims);
        g.output(pv, &io::present_value(l), data_type::FLOAT, &dims);
    }
    Ok(())
}
