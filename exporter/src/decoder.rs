//! The Qwen3 decoder with a KV cache: one graph for prefill (S new tokens, K = 0) and
//! decode (S = 1), per docs/BUNDLE.md.
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

/// Per-sequence values shared by all layers.
struct Shared {
    cos: String,
    sin: String,
    /// `attention_bias` repeated once per query head of a KV group: [g*S, T].
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
        &[kvh.into(), Dim::sym("K"), hd.into()],
    );
    let past_v = cx.g.input(
        &io::past_value(l),
        data_type::FLOAT,
        &[kvh.into(), Dim::sym("K"), hd.into()],
    );

    let q = cx.linear(x, &format!("{p}.q_proj"), h, nh * hd, t.attention_bias)?;
    let q = cx.g.reshape(&q, &[0, nh as i64, hd as i64]); // [S, nh, hd]
    let q = cx.rms_norm(&q, &format!("{p}.q_norm"), hd, eps)?;
    let k = cx.linear(x, &format!("{p}.k_proj"), h, kvh * hd, t.attention_bias)?;
    let k = cx.g.reshape(&k, &[0, kvh as i64, hd as i64]);
    let k = cx.rms_norm(&k, &format!("{p}.k_norm"), hd, eps)?;
    let v = cx.linear(x, &format!("{p}.v_proj"), h, kvh * hd, t.attention_bias)?;
    let v = cx.g.reshape(&v, &[0, kvh as i64, hd as i64]);

    let g = &mut cx.g;
    let q = g.transpose(&q, &[1, 0, 2]); // [nh, S, hd]
    let q = rope(g, &q, &sh.cos, &sh.sin, hd);
    let k = g.transpose(&k, &[1, 0, 2]); // [kvh, S, hd]
    let k = rope(g, &k, &sh.cos, &sh.sin, hd);
    let v = g.transpose(&v, &[1, 0, 2]);
    let present_k = g.concat(&[&past_k, &k], 1); // [kvh, T, hd]
    let present_v = g.concat(&[&past_v, &v], 1);

    // GQA without repeating the cache: query head kv*g + j reads KV head kv, so the g
    // heads of a group become g*S rows of one [g*S, hd] @ [hd, T] product per KV head.
    let q = g.reshape(&q, &[kvh as i64, -1, hd as i64]); // [kvh, g*S, hd]
    let kt = g.transpose(&present_k, &[0, 2, 1]);
    let scores = g.matmul(&q, &kt); // [kvh, g*S, T]
    let scores = g.scale(&scores, 1.0 / (hd as f32).sqrt());
    let scores = g.add(&scores, &sh.bias);
    let probs = g.softmax(&scores, -1);
    let o = g.matmul(&probs, &present_v); // [kvh, g*S, hd]
    let o = g.reshape(&o, &[nh as i64, -1, hd as i64]); // [nh, S, hd]
    let o = g.transpose(&o, &[1, 0, 2]);
    let o = g.reshape(&o, &[0, (nh * hd) as i64]);
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
    let mut x = g.input(
        io::INPUTS_EMBEDS,
        data_type::FLOAT,
        &[Dim::sym("S"), h.into()],
    );
    let pos = g.input(io::POSITION_IDS, data_type::INT64, &[Dim::sym("S")]);
    let bias = g.input(
        io::ATTENTION_BIAS,
        data_type::FLOAT,
        &[Dim::sym("S"), Dim::sym("T")],
    );
    let logits_index = g.input(io::LOGITS_INDEX, data_type::INT64, &[Dim::sym("L")]);

    // RoPE angles [S, hd]: position * [f ; f] (one product per element, as the reference).
    g.set_scope("model.rotary_emb");
    let f = t.rope_inv_freq();
    let f2: Vec<f32> = f.iter().chain(f.iter()).copied().collect();
    let freqs = g.const_f32("model.rotary_emb.inv_freq", &[1, hd], &f2);
    let posf = g.cast(&pos, data_type::FLOAT);
    let posf = g.unsqueeze(&posf, &[1]);
    let angles = g.matmul(&posf, &freqs);
    let cos = g.cos(&angles);
    let sin = g.sin(&angles);
    let groups = t.gqa_groups();
    let bias = if groups == 1 {
        bias
    } else {
        let parts: Vec<&str> = (0..groups).map(|_| bias.as_str()).collect();
        g.concat(&parts, 0)
    };
    let sh = Shared { cos, sin, bias };

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

    // Only the requested rows get the final norm and the (large) lm_head product.
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
        let dims = [kvh.into(), Dim::sym("T"), hd.into()];
        g.output(pk, &io::present_key(l), data_type::FLOAT, &dims);
        g.output(pv, &io::present_value(l), data_type::FLOAT, &dims);
    }
    Ok(())
}
