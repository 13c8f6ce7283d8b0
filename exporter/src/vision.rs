//! RICE-ViT, the vision encoder: patch embedding, class token, 2-D rotary embedding,
//! pre-LayerNorm and the transformer blocks (spec/MODEL.md, docs/BUNDLE.md).
//!
//! `vision.onnx` encodes one image per run, so attention never has to be masked: the
//! image's patches and its class token attend to each other and to nothing else, exactly as
//! the reference's per-image `cu_seqlens` confine them. `lines.onnx` is the same encoder
//! over a batch of line crops padded to one length ([`Batch`]): a key bias keeps every line
//! to its own tokens, so each line's rows are what it gives alone.

use anyhow::Result;
use ove_core::config::VisionConfig;
use ove_core::graph_io as io;
use ove_core::onnx_proto::data_type;

use crate::graph::{Dim, GraphBuilder};
use crate::nn::{activation, rope, Ctx};
use crate::weights::LinearWeight;

/// Rotary `cos` and `sin` [N, head_dim] for the class token followed by the patches.
///
/// Per patch the angles are `[h*f ; w*f]` (f: the head_dim/4 frequencies of
/// `VisionConfig::rope_inv_freq`), then duplicated to head_dim. Both steps are one MatMul of
/// the (row, col) positions by a constant [2, head_dim] matrix `[[f, 0, f, 0], [0, f, 0, f]]`:
/// each output is a single product plus exact zeros, so it equals the reference's f32 `h * f`
/// bit for bit.
///
/// In a batch the positions are `[B, P, 2]`, the class token's angles are broadcast to
/// every line and `cos`/`sin` come out `[B, 1, N, head_dim]` (one row of heads).
fn rotary(
    cx: &mut Ctx,
    v: &VisionConfig,
    patch_pos: &str,
    batch: Option<&Batch>,
) -> Result<(String, String)> {
    let hd = v.head_dim();
    let f = v.rope_inv_freq();
    let q = f.len();
    let mut m = vec![0f32; 2 * hd];
    for (i, &fi) in f.iter().enumerate() {
        for half in [0, hd / 2] {
            m[half + i] = fi; // row 0: h
            m[hd + half + q + i] = fi; // row 1: w
        }
    }
    let cpe = cx.w.vector(
        &mut cx.g,
        "visual.class_pos_emb",
        &[1, hd / 2],
        &[1, hd / 2],
    )?;
    let g = &mut cx.g;
    let freqs = g.const_f32("visual.rotary.freqs", &[2, hd], &m);
    let pos = g.cast(patch_pos, data_type::FLOAT);
    let patch_angles = g.matmul(&pos, &freqs);
    let class_angles = g.concat(&[&cpe, &cpe], 1);
    let Some(b) = batch else {
        let angles = g.concat(&[&class_angles, &patch_angles], 0);
        return Ok((g.cos(&angles), g.sin(&angles)));
    };
    let class_angles = b.broadcast(g, &class_angles, hd);
    let angles = g.concat(&[&class_angles, &patch_angles], 1);
    let (cos, sin) = (g.cos(&angles), g.sin(&angles));
    Ok((g.unsqueeze(&cos, &[1]), g.unsqueeze(&sin, &[1])))
}

/// What the batched encoder needs besides the single-image one: the batch size and the
/// key bias that keeps each line's attention to its own tokens.
pub struct Batch {
    /// `[1]` (i64): B, from the shape of `pixel_values`.
    size: String,
    /// `[B, 1, 1, N]`: added to every head's scores.
    key_bias: String,
}

impl Batch {
    /// `x` `[1, width]` repeated for every line: `[B, 1, width]`.
    fn broadcast(&self, g: &mut GraphBuilder, x: &str, width: usize) -> String {
        let rest = g.ints(&[1, width as i64]);
        let shape = g.concat(&[&self.size, &rest], 0);
        g.node("Expand", &[x, &shape], vec![])
    }
}

/// Multi-head self-attention of block `i` over all N tokens of the image (of each line, in
/// a batch).
fn attention(
    cx: &mut Ctx,
    v: &VisionConfig,
    i: usize,
    x: &str,
    cos: &str,
    sin: &str,
    batch: Option<&Batch>,
) -> Result<String> {
    let (d, heads, hd) = (v.hidden_size, v.num_heads, v.head_dim());
    let p = format!("visual.blocks.{i}.attn");
    cx.g.set_scope(&p);
    let qkv = cx.linear(x, &format!("{p}.qkv"), d, 3 * d, true)?;
    if let Some(b) = batch {
        let o = batched_attention(&mut cx.g, &qkv, (d, heads, hd), cos, sin, b);
        return cx.linear(&o, &format!("{p}.proj"), d, d, true);
    }
    let g = &mut cx.g;
    // [N, 3D] -> [N, 3, heads, hd] -> [3, heads, N, hd]: rows q, then k, then v.
    let qkv = g.reshape(&qkv, &[0, 3, heads as i64, hd as i64]);
    let qkv = g.transpose(&qkv, &[1, 2, 0, 3]);
    let [q, k, val] = split_rope(g, &qkv, cos, sin, hd);
    let kt = g.transpose(&k, &[0, 2, 1]);
    let scores = g.matmul(&q, &kt);
    let scores = g.scale(&scores, 1.0 / (hd as f32).sqrt());
    let probs = g.softmax(&scores, -1);
    let o = g.matmul(&probs, &val); // [heads, N, hd]
    let o = g.transpose(&o, &[1, 0, 2]);
    let o = g.reshape(&o, &[0, d as i64]);
    cx.linear(&o, &format!("{p}.proj"), d, d, true)
}

/// q, k and v from the projection laid out `[3, ..]`, rotary applied to q and k.
fn split_rope(g: &mut GraphBuilder, qkv: &str, cos: &str, sin: &str, hd: usize) -> [String; 3] {
    let [q, k, v] = [0, 1, 2].map(|j| {
        let idx = g.int_scalar(j);
        g.gather(qkv, &idx, 0)
    });
    let q = rope(g, &q, cos, sin, hd);
    let k = rope(g, &k, cos, sin, hd);
    [q, k, v]
}

/// [`attention`] after the qkv projection, for `[B, N, 3D]`: the same products per line,
/// with the key bias added to the scores before the softmax (0 on a line's own keys, so
/// its scores are unchanged; -inf on the padding, whose weights become exact zeros).
fn batched_attention(
    g: &mut GraphBuilder,
    qkv: &str,
    (d, heads, hd): (usize, usize, usize),
    cos: &str,
    sin: &str,
    b: &Batch,
) -> String {
    // [B, N, 3D] -> [B, N, 3, heads, hd] -> [3, B, heads, N, hd].
    let qkv = g.reshape(qkv, &[0, 0, 3, heads as i64, hd as i64]);
    let qkv = g.transpose(&qkv, &[2, 0, 3, 1, 4]);
    let [q, k, val] = split_rope(g, &qkv, cos, sin, hd);
    let kt = g.transpose(&k, &[0, 1, 3, 2]);
    let scores = g.matmul(&q, &kt);
    let scores = g.scale(&scores, 1.0 / (hd as f32).sqrt());
    let scores = g.add(&scores, &b.key_bias);
    let probs = g.softmax(&scores, -1);
    let o = g.matmul(&probs, &val); // [B, heads, N, hd]
    let o = g.transpose(&o, &[0, 2, 1, 3]);
    g.reshape(&o, &[0, 0, d as i64])
}

/// fc1 -> exact GELU -> fc2 of block `i`.
fn mlp(cx: &mut Ctx, v: &VisionConfig, i: usize, x: &str) -> Result<String> {
    let p = format!("visual.blocks.{i}.mlp");
    cx.g.set_scope(&p);
    let h = cx.linear(
        x,
        &format!("{p}.fc1"),
        v.hidden_size,
        v.intermediate_size,
        true,
    )?;
    let h = activation(&mut cx.g, &v.hidden_act, "vision_config.hidden_act", &h)?;
    cx.linear(
        &h,
        &format!("{p}.fc2"),
        v.intermediate_size,
        v.hidden_size,
        true,
    )
}

/// The encoder: `pixel_values` [P, patch_dim] and `patch_pos` [P, 2] -> the image's
/// states [P + 1, D], class token first (with a `batch`: `[B, P, ..]` -> `[B, P + 1, D]`).
pub fn encoder(
    cx: &mut Ctx,
    v: &VisionConfig,
    pixel_values: &str,
    patch_pos: &str,
    batch: Option<&Batch>,
) -> Result<String> {
    let d = v.hidden_size;
    let eps = v.layer_norm_eps;
    cx.g.set_scope("visual.patch_embed");
    // The convolution's kernel equals the patch, so it is a Linear on the flattened patch
    // (channel-major, like the rows of pixel_values).
    let mut kernel = vec![d, v.in_channels];
    if v.temporal_patch_size > 1 {
        kernel.push(v.temporal_patch_size);
    }
    kernel.extend([v.patch_size, v.patch_size]);
    let patch_w = LinearWeight {
        name: "visual.patch_embed.proj.weight",
        out_dim: d,
        in_dim: v.patch_dim(),
        stored_shape: kernel,
    };
    let patches = cx.linear_weight(pixel_values, &patch_w, None)?;

    cx.g.set_scope("visual");
    let cls =
        cx.w.vector(&mut cx.g, "visual.class_embedding", &[d], &[1, d])?;
    let x = match batch {
        None => cx.g.concat(&[&cls, &patches], 0), // [N = P + 1, D]
        Some(b) => {
            let cls = b.broadcast(&mut cx.g, &cls, d);
            cx.g.concat(&[&cls, &patches], 1) // [B, N, D]
        }
    };
    let (cos, sin) = rotary(cx, v, patch_pos, batch)?;
    cx.g.set_scope("visual.pre_layernorm");
    let mut x = cx.layer_norm(&x, "visual.pre_layernorm", d, eps)?;

    for i in 0..v.depth {
        cx.g.set_scope(format!("visual.blocks.{i}"));
        let h = cx.layer_norm(&x, &format!("visual.blocks.{i}.norm1"), d, eps)?;
        let h = attention(cx, v, i, &h, &cos, &sin, batch)?;
        x = cx.g.add(&x, &h);
        cx.g.set_scope(format!("visual.blocks.{i}"));
        let h = cx.layer_norm(&x, &format!("visual.blocks.{i}.norm2"), d, eps)?;
        let h = mlp(cx, v, i, &h)?;
        x = cx.g.add(&x, &h);
    }
    Ok(x)
}

/// Builds the whole vision graph: encoder, the reference's row window, then the merger.
///
/// The reference (HF `modeling_llavaonevision1_5`) encodes all images of a prompt as one
/// sequence of `[class_i; patches_i]` blocks, then keeps rows `1 ..= total_patches` of it:
/// only the first image's class token is dropped, so from the second image on the rows
/// handed to the merger are shifted (image i's window starts i - 1 rows before its class
/// token). To reproduce that one image per run, the graph takes the rows the runtime
/// carries over from earlier images (`carry` [C, D], the tail of their `vision_states`)
/// and the rows of `carry ++ states` to keep (`window_index` [P]); see docs/BUNDLE.md.
pub fn build(cx: &mut Ctx, cfg: &ove_core::ModelConfig) -> Result<()> {
    let v = &cfg.vision_config;
    let d = v.hidden_size;
    let g: &mut GraphBuilder = &mut cx.g;
    let pix = g.input(
        io::PIXEL_VALUES,
        data_type::FLOAT,
        &[Dim::sym("P"), v.patch_dim().into()],
    );
    let pos = g.input(io::PATCH_POS, data_type::INT64, &[Dim::sym("P"), 2.into()]);
    let carry = g.input(io::CARRY, data_type::FLOAT, &[Dim::sym("C"), d.into()]);
    let window_index = g.input(io::WINDOW_INDEX, data_type::INT64, &[Dim::sym("P")]);
    let states = encoder(cx, v, &pix, &pos, None)?;
    cx.g.set_scope("visual");
    let rows = cx.g.concat(&[&carry, &states], 0);
    let tokens = cx.g.gather(&rows, &window_index, 0);
    let embeds = crate::merger::merger(cx, cfg, &tokens)?;
    let g = &mut cx.g;
    g.output(
        &tokens,
        io::VISION_TOKENS,
        data_type::FLOAT,
        &[Dim::sym("P"), d.into()],
    );
    g.output(
        &embeds,
        io::IMAGE_EMBEDS,
        data_type::FLOAT,
        // One row per merge block: "P/4" for the 2x2 merge.
        &[
            Dim::Sym(format!("P/{}", cfg.vision_config.merge_unit()).into()),
            cfg.text_config.hidden_size.into(),
        ],
    );
    g.output(
        &states,
        io::VISION_STATES,
        data_type::FLOAT,
        &[Dim::sym("P+1"), d.into()],
    );
    Ok(())
}

/// Builds `lines.onnx`: the encoder over a batch of line crops (`pixel_values`
/// `[B, P, patch_dim]`, `patch_pos` `[B, P, 2]`, `key_bias` `[B, 1 + P]`), giving each
/// line's rows without its class token (`line_tokens` `[B, P, D]`). No carry and no merger:
/// a line is the only image of its reading, and the CTC head reads the encoder's rows.
pub fn build_lines(cx: &mut Ctx, cfg: &ove_core::ModelConfig) -> Result<()> {
    let v = &cfg.vision_config;
    let d = v.hidden_size;
    let g: &mut GraphBuilder = &mut cx.g;
    let (b, p) = (Dim::sym("B"), Dim::sym("P"));
    let pix = g.input(
        io::PIXEL_VALUES,
        data_type::FLOAT,
        &[b.clone(), p.clone(), v.patch_dim().into()],
    );
    let pos = g.input(
        io::PATCH_POS,
        data_type::INT64,
        &[b.clone(), p.clone(), 2.into()],
    );
    let bias = g.input(
        io::KEY_BIAS,
        data_type::FLOAT,
        &[b.clone(), Dim::sym("1+P")],
    );
    let shape = g.node("Shape", &[&pix], vec![]);
    let batch = Batch {
        size: g.slice(&shape, 0, 0, 1),
        key_bias: g.unsqueeze(&bias, &[1, 2]),
    };
    let states = encoder(cx, v, &pix, &pos, Some(&batch))?;
    cx.g.set_scope("visual");
    let tokens = cx.g.slice(&states, 1, 1, i64::MAX);
    cx.g.output(
        &tokens,
        io::LINE_TOKENS,
        data_type::FLOAT,
        &[b, p, d.into()],
    );
    Ok(())
}
