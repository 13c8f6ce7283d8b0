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
//!
//! One builder, two lowerings ([`DecoderOps`]) with the same inputs, outputs and weights:
//! the projections are the same nodes in both (q/k/v and gate/up each one fused matmul
//! over their weights side by side, split after), so the two graphs of a bundle share
//! every weight byte; norms, rotary and attention are primitive ops that every engine
//! runs (`decoder.onnx`) or ONNX Runtime's fused kernels (`decoder_ort.onnx`).

use anyhow::Result;
use ove_core::config::TextConfig;
use ove_core::graph_io as io;
use ove_core::onnx_proto::data_type;
use ove_core::ModelConfig;

use crate::graph::{Dim, GraphBuilder};
use crate::nn::{activation, rope, Ctx};
use crate::ort_ops;
use crate::weights::LinearWeight;

/// Which operators the decoder graph is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderOps {
    /// Primitive ONNX ops only (MatMul, Softmax, ReduceMean, ...), plus `MatMulNBits` in
    /// int4 bundles: tract and ONNX Runtime both run it (`decoder.onnx`).
    Portable,
    /// ONNX Runtime's fused kernels ([`crate::ort_ops`]): GroupQueryAttention with an
    /// in-place cache, RotaryEmbedding, (Skip)SimplifiedLayerNormalization
    /// (`decoder_ort.onnx`). `kv_f16`: the cache (and attention's inputs) in f16, half the
    /// cache's memory and traffic; the rest of the graph stays f32.
    OrtFused { kv_f16: bool },
}

impl DecoderOps {
    /// ONNX element type of the KV cache inputs and outputs.
    pub fn kv_type(self) -> i32 {
        match self {
            DecoderOps::OrtFused { kv_f16: true } => data_type::FLOAT16,
            _ => data_type::FLOAT,
        }
    }
}

/// Per-call values shared by all layers.
struct Shared {
    /// `[N, nh*hd]`: attention's output back on the stream's rows.
    rows_shape: String,
    position_ids: String,
    lowering: Lowering,
    /// ONNX element type of the cache ([`DecoderOps::kv_type`]).
    kv_type: i32,
}

/// What each lowering computes once per call.
enum Lowering {
    Portable {
        /// `[B, S, nh, hd]` and `[B, S, kvh, hd]`: the 4-D views of a projection's rows.
        q_shape: String,
        kv_shape: String,
        cos: String,
        sin: String,
        /// `attention_bias` repeated once per query head of a KV group: [B, 1, g*S, T].
        bias: String,
    },
    Fused {
        /// `[B, S, nh*hd]` and `[B, S, kvh*hd]`: the 3-D views GQA takes.
        q_shape: String,
        kv_shape: String,
        /// `[max_context, hd / 2]` tables (constant: ONNX Runtime folds them at load).
        cos: String,
        sin: String,
        seqlens_k: String,
        total: String,
        /// `[B, 1, S, T]`.
        bias: String,
    },
}

/// The q, k and v projections of the normalized stream `x` (`[N, heads * hd]` each) at
/// module path `p`.
fn qkv(cx: &mut Ctx, t: &TextConfig, p: &str, x: &str) -> Result<[String; 3]> {
    let (h, nh, kvh, hd) = (
        t.hidden_size,
        t.num_attention_heads,
        t.num_key_value_heads,
        t.head_dim(),
    );
    let parts = [
        format!("{p}.q_proj"),
        format!("{p}.k_proj"),
        format!("{p}.v_proj"),
    ];
    let prefixes: Vec<&str> = parts.iter().map(String::as_str).collect();
    let [q, k, v]: [String; 3] = cx
        .linear_fused(
            x,
            &format!("{p}.qkv_proj"),
            &prefixes,
            h,
            &[nh * hd, kvh * hd, kvh * hd],
            t.attention_bias,
        )?
        .try_into()
        .expect("three parts in, three out");
    Ok([q, k, v])
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
    let past_dims = [Dim::sym("B"), kvh.into(), Dim::sym("K"), hd.into()];
    let past_k = cx.g.input(&io::past_key(l), sh.kv_type, &past_dims);
    let past_v = cx.g.input(&io::past_value(l), sh.kv_type, &past_dims);

    let [q, k, v] = qkv(cx, t, &p, x)?; // [N, heads * hd]
    let (o, present_k, present_v) = match &sh.lowering {
        Lowering::Portable {
            q_shape,
            kv_shape,
            cos,
            sin,
            bias,
        } => {
            let q = cx.g.node("Reshape", &[&q, q_shape], vec![]); // [B, S, nh, hd]
            let q = cx.rms_norm(&q, &format!("{p}.q_norm"), hd, eps)?;
            let k = cx.g.node("Reshape", &[&k, kv_shape], vec![]);
            let k = cx.rms_norm(&k, &format!("{p}.k_norm"), hd, eps)?;
            let v = cx.g.node("Reshape", &[&v, kv_shape], vec![]);
            let g = &mut cx.g;
            let q = g.transpose(&q, &[0, 2, 1, 3]); // [B, nh, S, hd]
            let q = rope(g, &q, cos, sin, hd);
            let k = g.transpose(&k, &[0, 2, 1, 3]); // [B, kvh, S, hd]
            let k = rope(g, &k, cos, sin, hd);
            let v = g.transpose(&v, &[0, 2, 1, 3]);
            let present_k = g.concat(&[&past_k, &k], 2); // [B, kvh, T, hd]
            let present_v = g.concat(&[&past_v, &v], 2);

            // GQA without repeating the cache: query head kv*g + j reads KV head kv, so
            // the g heads of a group become g*S rows of one [g*S, hd] @ [hd, T] product
            // per KV head.
            let q = g.reshape(&q, &[0, kvh as i64, -1, hd as i64]); // [B, kvh, g*S, hd]
            let kt = g.transpose(&present_k, &[0, 1, 3, 2]);
            let scores = g.matmul(&q, &kt); // [B, kvh, g*S, T]
            let scores = g.scale(&scores, 1.0 / (hd as f32).sqrt());
            let scores = g.add(&scores, bias);
            let probs = g.softmax(&scores, -1);
            let o = g.matmul(&probs, &present_v); // [B, kvh, g*S, hd]
            let o = g.reshape(&o, &[0, nh as i64, -1, hd as i64]); // [B, nh, S, hd]
            let o = g.transpose(&o, &[0, 2, 1, 3]);
            (o, present_k, present_v)
        }
        Lowering::Fused {
            q_shape,
            kv_shape,
            cos,
            sin,
            seqlens_k,
            total,
            bias,
        } => {
            let qn =
                cx.w.vector(&mut cx.g, &format!("{p}.q_norm.weight"), &[hd], &[hd])?;
            let kn =
                cx.w.vector(&mut cx.g, &format!("{p}.k_norm.weight"), &[hd], &[hd])?;
            let g = &mut cx.g;
            // Per-head RMSNorm over [N, heads, hd] views.
            let q = g.reshape(&q, &[-1, nh as i64, hd as i64]);
            let k = g.reshape(&k, &[-1, kvh as i64, hd as i64]);
            let q = ort_ops::simplified_layer_norm(g, &q, &qn, eps);
            let k = ort_ops::simplified_layer_norm(g, &k, &kn, eps);
            let q = g.node("Reshape", &[&q, q_shape], vec![]); // [B, S, nh*hd]
            let k = g.node("Reshape", &[&k, kv_shape], vec![]);
            let v = g.node("Reshape", &[&v, kv_shape], vec![]);
            let q = ort_ops::rotary_embedding(g, &q, &sh.position_ids, cos, sin, nh);
            let k = ort_ops::rotary_embedding(g, &k, &sh.position_ids, cos, sin, kvh);
            // GQA computes in its inputs' type, the cache's.
            let half = sh.kv_type != data_type::FLOAT;
            let [q, k, v] = [q, k, v].map(|t| if half { g.cast(&t, sh.kv_type) } else { t });
            let (o, pk, pv) = ort_ops::group_query_attention(
                g,
                [&q, &k, &v],
                [&past_k, &past_v],
                &ort_ops::GqaInputs {
                    seqlens_k,
                    total_sequence_length: total,
                    attention_bias: bias,
                },
                nh,
                kvh,
            );
            let o = if half {
                g.cast(&o, data_type::FLOAT)
            } else {
                o
            };
            (o, pk, pv)
        }
    };
    let o = cx.g.node("Reshape", &[&o, &sh.rows_shape], vec![]); // [N, nh*hd]
    let o = cx.linear(&o, &format!("{p}.o_proj"), nh * hd, h, false)?;
    Ok((o, present_k, present_v))
}

/// Gated MLP of layer `l`: down(act(gate(x)) * up(x)), act = `hidden_act` (SiLU in Qwen3).
fn mlp(cx: &mut Ctx, t: &TextConfig, l: usize, x: &str) -> Result<String> {
    let p = format!("model.layers.{l}.mlp");
    cx.g.set_scope(&p);
    let (h, i) = (t.hidden_size, t.intermediate_size);
    let (gate, up) = (format!("{p}.gate_proj"), format!("{p}.up_proj"));
    let [gate, up]: [String; 2] = cx
        .linear_fused(
            x,
            &format!("{p}.gate_up_proj"),
            &[&gate, &up],
            h,
            &[i, i],
            false,
        )?
        .try_into()
        .expect("two parts in, two out");
    let a = activation(&mut cx.g, &t.hidden_act, "text_config.hidden_act", &gate)?;
    let a = cx.g.mul(&a, &up);
    cx.linear(&a, &format!("{p}.down_proj"), i, h, false)
}

/// The per-call values of the lowering `ops`, from the graph inputs.
fn lowering(
    g: &mut GraphBuilder,
    t: &TextConfig,
    ops: DecoderOps,
    pos: &str,
    bias: &str,
    max_context: usize,
) -> Lowering {
    let hd = t.head_dim();
    let (nh, kvh) = (t.num_attention_heads, t.num_key_value_heads);
    let f = t.rope_inv_freq();
    let bs = g.node("Shape", &[pos], vec![]); // (B, S)
    match ops {
        DecoderOps::Portable => {
            // RoPE angles [B, 1, S, hd] (broadcast over heads): position * [f ; f] (one
            // product per element, as the reference).
            let f2: Vec<f32> = f.iter().chain(f.iter()).copied().collect();
            let freqs = g.const_f32("model.rotary_emb.inv_freq", &[1, hd], &f2);
            let posf = g.cast(pos, data_type::FLOAT);
            let posf = g.unsqueeze(&posf, &[1, 3]); // [B, 1, S, 1]
            let angles = g.matmul(&posf, &freqs);
            let cos = g.cos(&angles);
            let sin = g.sin(&angles);
            let groups = t.gqa_groups();
            let bias = if groups == 1 {
                bias.to_string()
            } else {
                let parts: Vec<&str> = (0..groups).map(|_| bias).collect();
                g.concat(&parts, 1)
            };
            let bias = g.unsqueeze(&bias, &[1]); // [B, 1, g*S, T]
            let mut heads = |n: usize| {
                let rest = g.ints(&[n as i64, hd as i64]);
                g.concat(&[&bs, &rest], 0)
            };
            let (q_shape, kv_shape) = (heads(nh), heads(kvh));
            Lowering::Portable {
                q_shape,
                kv_shape,
                cos,
                sin,
                bias,
            }
        }
        DecoderOps::OrtFused { .. } => {
            // cos/sin tables of every position the bundle allows: the same f32 products
            // position * f as the portable graph's, so the same angles.
            let freqs = g.const_f32("model.rotary_emb.inv_freq", &[1, f.len()], &f);
            let (zero, limit, one) = (g.scalar(0.0), g.scalar(max_context as f32), g.scalar(1.0));
            let positions = g.node("Range", &[&zero, &limit, &one], vec![]);
            let positions = g.unsqueeze(&positions, &[1]); // [M, 1]
            let angles = g.matmul(&positions, &freqs); // [M, hd / 2]
            let cos = g.cos(&angles);
            let sin = g.sin(&angles);
            // T from the bias's last axis; every row has T slots (padding is masked).
            let shape = g.node("Shape", &[bias], vec![]);
            let t_slots = g.slice(&shape, 0, 2, 3); // [1]
            let t32 = g.cast(&t_slots, data_type::INT32);
            let total = g.reshape(&t32, &[]); // scalar
            let one = g.ints(&[1]);
            let one32 = g.cast(&one, data_type::INT32);
            let last = g.sub(&t32, &one32);
            let b = g.slice(&bs, 0, 0, 1);
            let seqlens_k = g.node("Expand", &[&last, &b], vec![]); // [B]
            let bias = g.unsqueeze(bias, &[1]); // [B, 1, S, T]
                                                // In the cache's type (f16: -1e9 becomes -inf, still exactly zero weight).
            let bias = if ops.kv_type() == data_type::FLOAT {
                bias
            } else {
                g.cast(&bias, ops.kv_type())
            };
            let mut width = |n: usize| {
                let rest = g.ints(&[(n * hd) as i64]);
                g.concat(&[&bs, &rest], 0)
            };
            let (q_shape, kv_shape) = (width(nh), width(kvh));
            Lowering::Fused {
                q_shape,
                kv_shape,
                cos,
                sin,
                seqlens_k,
                total,
                bias,
            }
        }
    }
}

/// Builds the whole decoder graph in the lowering `ops`; `max_context` bounds the positions
/// (the fused lowering's rotary tables have that many rows).
pub fn build(cx: &mut Ctx, cfg: &ModelConfig, ops: DecoderOps, max_context: usize) -> Result<()> {
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

    g.set_scope("model.rotary_emb");
    let lowering = lowering(g, t, ops, &pos, &bias, max_context);
    let n = g.node("Shape", &[&x], vec![]);
    let n = g.slice(&n, 0, 0, 1);
    let width = g.ints(&[(t.num_attention_heads * hd) as i64]);
    let rows_shape = g.concat(&[&n, &width], 0);
    let sh = Shared {
        rows_shape,
        position_ids: pos,
        lowering,
        kv_type: ops.kv_type(),
    };

    // The residual stream `x`; the fused lowering adds each block's output to it inside
    // the next norm (SkipSimplifiedLayerNormalization), so `pending` holds that output.
    let mut x = x;
    let mut pending: Option<String> = None;
    let mut presents = Vec::new();
    for l in 0..t.num_hidden_layers {
        cx.g.set_scope(format!("model.layers.{l}"));
        let r = norm_add(
            cx,
            ops,
            &mut x,
            pending.take(),
            l,
            "input_layernorm",
            h,
            eps,
        )?;
        let (a, pk, pv) = attention(cx, t, l, &r, &sh)?;
        cx.g.set_scope(format!("model.layers.{l}"));
        let r = norm_add(
            cx,
            ops,
            &mut x,
            Some(a),
            l,
            "post_attention_layernorm",
            h,
            eps,
        )?;
        let m = mlp(cx, t, l, &r)?;
        pending = Some(m);
        presents.push((pk, pv));
    }
    cx.g.set_scope("model.norm");
    if let Some(m) = pending {
        x = cx.g.add(&x, &m);
    }

    // Only the requested rows (of all B x S, row-major) get the final norm and the
    // (large) lm_head product.
    let x = cx.g.gather(&x, &logits_index, 0);
    let x = match ops {
        DecoderOps::Portable => cx.rms_norm(&x, "model.norm", h, eps)?,
        DecoderOps::OrtFused { .. } => {
            let w = cx.w.vector(&mut cx.g, "model.norm.weight", &[h], &[h])?;
            ort_ops::simplified_layer_norm(&mut cx.g, &x, &w, eps)
        }
    };
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
        g.output(pk, &io::present_key(l), ops.kv_type(), &dims);
        g.output(pv, &io::present_value(l), ops.kv_type(), &dims);
    }
    Ok(())
}

/// Adds `delta` (a block's output, if any) to the residual stream `x` and returns the
/// RMSNorm `model.layers.{l}.{norm}` of the result: an Add and the primitive norm, or one
/// SkipSimplifiedLayerNormalization that gives both.
#[allow(clippy::too_many_arguments)]
fn norm_add(
    cx: &mut Ctx,
    ops: DecoderOps,
    x: &mut String,
    delta: Option<String>,
    l: usize,
    norm: &str,
    h: usize,
    eps: f64,
) -> Result<String> {
    let prefix = format!("model.layers.{l}.{norm}");
    match ops {
        DecoderOps::Portable => {
            if let Some(d) = delta {
                *x = cx.g.add(x, &d);
            }
            cx.rms_norm(x, &prefix, h, eps)
        }
        DecoderOps::OrtFused { .. } => {
            let w =
                cx.w.vector(&mut cx.g, &format!("{prefix}.weight"), &[h], &[h])?;
            Ok(match delta {
                None => ort_ops::simplified_layer_norm(&mut cx.g, x, &w, eps),
                Some(d) => {
                    let (y, sum) = ort_ops::skip_simplified_layer_norm(&mut cx.g, x, &d, &w, eps);
                    *x = sum;
                    y
                }
            })
        }
    }
}
