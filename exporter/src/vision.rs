//! RICE-ViT, the vision encoder, for one image: patch embedding, class token, 2-D rotary
//! embedding, pre-LayerNorm and the transformer blocks (spec/MODEL.md, docs/BUNDLE.md).
//!
//! One image per run means attention never has to be masked: the image's patches and its
//! class token attend to each other and to nothing else, exactly as the reference's
//! per-image `cu_seqlens` confine them.

use anyhow::Result;
use ove_core::config::VisionConfig;
use ove_core::graph_io as io;
use ove_core::onnx_proto::data_type;

use crate::graph::GraphBuilder;
use crate::nn::{activation, rope, Ctx};
use crate::weights::LinearWeight;

/// Rotary `cos` and `sin` [N, head_dim] for the class token followed by the patches.
///
/// Per patch the angles are `[h*f ; w*f]` (f: the head_dim/4 frequencies of
/// `VisionConfig::rope_inv_freq`), then duplicated to head_dim. Both steps are one MatMul of
/// the (row, col) positions by a constant [2, head_dim] matrix `[[f, 0, f, 0], [0, f, 0, f]]`:
/// each output is a single product plus exact zeros, so it equals the reference's f32 `h * f`
/// bit for bit.
fn rotary(cx: &mut Ctx, v: &VisionConfig, patch_pos: &str) -> Result<(String, String)> {
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
    let angles = g.concat(&[&class_angles, &patch_angles], 0);
    Ok((g.cos(&angles), g.sin(&angles)))
}

/// Multi-head self-attention of block `i` over all N tokens of the image.
fn attention(
    cx: &mut Ctx,
    v: &VisionConfig,
    i: usize,
    x: &str,
    cos: &str,
    sin: &str,
) -> Result<String> {
    let (d, heads, hd) = (v.hidden_size, v.num_heads, v.head_dim());
    let p = format!("visual.blocks.{i}.attn");
    cx.g.set_scope(&p);
    let qkv = cx.linear(x, &format!("{p}.qkv"), d, 3 * d, true)?;
    let g = &mut cx.g;
    // [N, 3D] -> [N, 3, heads, hd] -> [3, heads, N, hd]: rows q, then k, then v.
    let qkv = g.reshape(&qkv, &[0, 3, heads as i64, hd as i64]);
    let qkv = g.transpose(&qkv, &[1, 2, 0, 3]);
    let mut qkv_parts = [0, 1, 2].map(|j| {
        let idx = g.int_scalar(j);
        g.gather(&qkv, &idx, 0)
    });
    qkv_parts[0] = rope(g, &qkv_parts[0], cos, sin, hd);
    qkv_parts[1] = rope(g, &qkv_parts[1], cos, sin, hd);
    let [q, k, val] = qkv_parts;
    let kt = g.transpose(&k, &[0, 2, 1]);
    let scores = g.matmul(&q, &kt);
    let scores = g.scale(&scores, 1.0 / (hd as f32).sqrt());
    let probs = g.softmax(&scores, -1);
    let o = g.matmul(&probs, &val); // [heads, N, hd]
    let o = g.transpose(&o, &[1, 0, 2]);
    let o = g.reshape(&o, &[0, d as i64]);
    cx.linear(&o, &format!("{p}.proj"), d, d, true)
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
/// states [P + 1, D], class token first.
pub fn encoder(
    cx: &mut Ctx,
    v: &VisionConfig,
    pixel_values: &str,
    patch_pos: &str,
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
    let x = cx.g.concat(&[&cls, &patches], 0); // [N = P + 1, D]
    let (cos, sin) = rotary(cx, v, patch_pos)?;
    cx.g.set_scope("visual.pre_layernorm");
    let mut x = cx.layer_norm(&x, "visual.pre_layernorm", d, eps)?;

    for i in 0..v.depth {
        cx.g.set_scope(format!("visual.blocks.{i}"));
        let h = cx.layer_norm(&x, &format!("visual.blocks.{i}.norm1"), d, eps)?;
        let h = attention(cx, v, i, &h, &cos, &sin)?;
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
    use crate::graph::Dim;
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
    let states = encoder(cx, v, &pix, &pos)?;
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
