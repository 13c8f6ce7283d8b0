//! Writes a random bf16 checkpoint with the released LLaVA-OneVision-1.5-4B shapes (RICE-ViT
//! 1024 wide / 24 blocks / 16 heads / MLP 4096; Qwen3 2560 wide / 36 layers / 32 q + 8 kv
//! heads of 128 / MLP 9728 / vocab 151936, separate lm_head) as sharded safetensors with an
//! index, config.json and preprocessor_config.json, for `bench/export-4b-int4.sh`; or, with
//! `--shape`, a decoder of one of the Qwen3 text models (tied embeddings, as released) and
//! with `--vision small` a tiny vision tower, for `bench/cpu-vs-peers.sh`.
//!
//! `cargo run -p ove-exporter --example fabricate_4b -- DIR [--layers N] [--shard-gb G]
//!     [--shape ov-4b|0.6b|1.7b|4b] [--vision 4b|small]`
//!
//! | `--shape` | hidden | layers | q / kv heads (128 wide) | MLP | lm_head |
//! |---|---|---|---|---|---|
//! | `ov-4b` (default) | 2560 | 36 | 32 / 8 | 9728 | own `lm_head.weight` |
//! | `0.6b` (Qwen3-0.6B) | 1024 | 28 | 16 / 8 | 3072 | tied to the embeddings |
//! | `1.7b` (Qwen3-1.7B) | 2048 | 28 | 16 / 8 | 6144 | tied |
//! | `4b` (Qwen3-4B) | 2560 | 36 | 32 / 8 | 9728 | tied |
//!
//! `--vision 4b` (default) is the released RICE-ViT above; `small` is 256 wide, 2 blocks,
//! 4 heads, MLP 1024 (a few MB), so exporting it costs next to nothing. `--layers` overrides
//! the shape's layer count. The vocabulary is 151936 in every shape.
//!
//! Values are uniform in +-0.02 (norm weights 1), drawn from a xorshift generator and written
//! tensor by tensor, so the fabricator itself needs a few MB whatever the model size.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

struct Spec {
    name: String,
    shape: Vec<usize>,
    /// Norm weights: all ones.
    ones: bool,
}

fn t(name: impl Into<String>, shape: &[usize]) -> Spec {
    Spec {
        name: name.into(),
        shape: shape.to_vec(),
        ones: false,
    }
}

fn ones(name: impl Into<String>, shape: &[usize]) -> Spec {
    Spec {
        name: name.into(),
        shape: shape.to_vec(),
        ones: true,
    }
}

/// Vision tower and Qwen3 decoder sizes.
#[derive(Debug, Clone, Copy)]
struct Shape {
    vd: usize,
    vdepth: usize,
    vmlp: usize,
    vheads: usize,
    h: usize,
    layers: usize,
    nh: usize,
    kvh: usize,
    hd: usize,
    mlp: usize,
    vocab: usize,
    tied: bool,
    rope_theta: f64,
    max_pos: usize,
}

impl Shape {
    fn text(name: &str) -> Result<Shape> {
        // (hidden, layers, q heads, kv heads, MLP, tied, rope_theta, max positions)
        let (h, layers, nh, kvh, mlp, tied, rope_theta, max_pos) = match name {
            "ov-4b" => (2560, 36, 32, 8, 9728, false, 5e6, 32768),
            "0.6b" => (1024, 28, 16, 8, 3072, true, 1e6, 40960),
            "1.7b" => (2048, 28, 16, 8, 6144, true, 1e6, 40960),
            "4b" => (2560, 36, 32, 8, 9728, true, 1e6, 40960),
            other => bail!("--shape {other}: want ov-4b, 0.6b, 1.7b or 4b"),
        };
        Ok(Shape {
            vd: 1024,
            vdepth: 24,
            vmlp: 4096,
            vheads: 16,
            h,
            layers,
            nh,
            kvh,
            hd: 128,
            mlp,
            vocab: 151936,
            tied,
            rope_theta,
            max_pos,
        })
    }

    fn vision(self, name: &str) -> Result<Shape> {
        let (vd, vdepth, vmlp, vheads) = match name {
            "4b" => (1024, 24, 4096, 16),
            "small" => (256, 2, 1024, 4),
            other => bail!("--vision {other}: want 4b or small"),
        };
        Ok(Shape {
            vd,
            vdepth,
            vmlp,
            vheads,
            ..self
        })
    }
}

fn tensors(s: &Shape) -> Vec<Spec> {
    let (vd, h, hd) = (s.vd, s.h, s.hd);
    let mut v = vec![
        t("visual.patch_embed.proj.weight", &[vd, 3, 14, 14]),
        t("visual.class_embedding", &[vd]),
        t("visual.class_pos_emb", &[1, vd / s.vheads / 2]),
        ones("visual.pre_layernorm.weight", &[vd]),
        t("visual.pre_layernorm.bias", &[vd]),
    ];
    for i in 0..s.vdepth {
        let p = format!("visual.blocks.{i}");
        v.push(ones(format!("{p}.norm1.weight"), &[vd]));
        v.push(t(format!("{p}.norm1.bias"), &[vd]));
        v.push(t(format!("{p}.attn.qkv.weight"), &[3 * vd, vd]));
        v.push(t(format!("{p}.attn.qkv.bias"), &[3 * vd]));
        v.push(t(format!("{p}.attn.proj.weight"), &[vd, vd]));
        v.push(t(format!("{p}.attn.proj.bias"), &[vd]));
        v.push(ones(format!("{p}.norm2.weight"), &[vd]));
        v.push(t(format!("{p}.norm2.bias"), &[vd]));
        v.push(t(format!("{p}.mlp.fc1.weight"), &[s.vmlp, vd]));
        v.push(t(format!("{p}.mlp.fc1.bias"), &[s.vmlp]));
        v.push(t(format!("{p}.mlp.fc2.weight"), &[vd, s.vmlp]));
        v.push(t(format!("{p}.mlp.fc2.bias"), &[vd]));
    }
    let m = 4 * vd;
    v.push(ones("visual.merger.ln_q.weight", &[vd]));
    v.push(t("visual.merger.ln_q.bias", &[vd]));
    v.push(t("visual.merger.mlp.0.weight", &[m, m]));
    v.push(t("visual.merger.mlp.0.bias", &[m]));
    v.push(t("visual.merger.mlp.2.weight", &[h, m]));
    v.push(t("visual.merger.mlp.2.bias", &[h]));
    v.push(t("model.embed_tokens.weight", &[s.vocab, h]));
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        v.push(ones(format!("{p}.input_layernorm.weight"), &[h]));
        v.push(t(format!("{p}.self_attn.q_proj.weight"), &[s.nh * hd, h]));
        v.push(t(format!("{p}.self_attn.k_proj.weight"), &[s.kvh * hd, h]));
        v.push(t(format!("{p}.self_attn.v_proj.weight"), &[s.kvh * hd, h]));
        v.push(t(format!("{p}.self_attn.o_proj.weight"), &[h, s.nh * hd]));
        v.push(ones(format!("{p}.self_attn.q_norm.weight"), &[hd]));
        v.push(ones(format!("{p}.self_attn.k_norm.weight"), &[hd]));
        v.push(ones(format!("{p}.post_attention_layernorm.weight"), &[h]));
        v.push(t(format!("{p}.mlp.gate_proj.weight"), &[s.mlp, h]));
        v.push(t(format!("{p}.mlp.up_proj.weight"), &[s.mlp, h]));
        v.push(t(format!("{p}.mlp.down_proj.weight"), &[h, s.mlp]));
    }
    v.push(ones("model.norm.weight", &[h]));
    if !s.tied {
        v.push(t("lm_head.weight", &[s.vocab, h]));
    }
    v
}

fn config(s: &Shape) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LLaVAOneVision1_5_ForConditionalGeneration"],
        "model_type": "llavaonevision1_5",
        "dtype": "bfloat16",
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vocab_size": s.vocab,
        "tie_word_embeddings": s.tied,
        "vision_config": {
            "model_type": "rice_vit", "depth": s.vdepth, "embed_dim": s.vd, "hidden_size": s.vd,
            "num_heads": s.vheads, "intermediate_size": s.vmlp, "hidden_act": "gelu",
            "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 1, "layer_norm_eps": 1e-5, "text_hidden_size": s.h
        },
        "text_config": {
            "model_type": "LLaVAOneVision1_5_text", "hidden_size": s.h,
            "num_hidden_layers": s.layers, "num_attention_heads": s.nh,
            "num_key_value_heads": s.kvh, "head_dim": s.hd, "intermediate_size": s.mlp,
            "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": s.rope_theta,
            "max_position_embeddings": s.max_pos, "vocab_size": s.vocab,
            "attention_bias": false, "tie_word_embeddings": s.tied
        }
    })
}

const PREPROCESSOR: &str = r#"{"do_convert_rgb": true, "do_normalize": true, "do_rescale": true,
 "do_resize": true, "image_mean": [0.48145466, 0.4578275, 0.40821073],
 "image_processor_type": "Qwen2VLImageProcessor",
 "image_std": [0.26862954, 0.26130258, 0.27577711], "max_pixels": 2560000, "merge_size": 2,
 "min_pixels": 3136, "patch_size": 14, "resample": 3,
 "rescale_factor": 0.00392156862745098, "temporal_patch_size": 1}"#;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn write_shard(path: &Path, specs: &[&Spec], rng: &mut Rng) -> Result<u64> {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for s in specs {
        let n = s.shape.iter().product::<usize>() * 2;
        header.insert(
            s.name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": s.shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let mut h = serde_json::to_vec(&header)?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(8 << 20, f);
    w.write_all(&(h.len() as u64).to_le_bytes())?;
    w.write_all(&h)?;
    let one = half::bf16::from_f32(1.0).to_le_bytes();
    let mut buf = Vec::with_capacity(1 << 20);
    for s in specs {
        let n: usize = s.shape.iter().product();
        let mut left = n;
        while left > 0 {
            let c = left.min(1 << 19);
            buf.clear();
            for _ in 0..c {
                let b = if s.ones {
                    one
                } else {
                    // uniform in [-0.02, 0.02)
                    let u = (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
                    half::bf16::from_f32((u - 0.5) * 0.04).to_le_bytes()
                };
                buf.extend_from_slice(&b);
            }
            w.write_all(&buf)?;
            left -= c;
        }
    }
    w.flush()?;
    Ok((8 + h.len() + off) as u64)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        bail!(
            "usage: fabricate_4b DIR [--layers N] [--shard-gb G] [--shape ov-4b|0.6b|1.7b|4b] \
             [--vision 4b|small]"
        );
    };
    let word = |k: &str, d: &str| -> Result<String> {
        match args.iter().position(|a| a == k) {
            Some(i) => Ok(args.get(i + 1).context("missing value")?.clone()),
            None => Ok(d.to_string()),
        }
    };
    let opt = |k: &str, d: f64| -> Result<f64> {
        match args.iter().position(|a| a == k) {
            Some(i) => Ok(args.get(i + 1).context("missing value")?.parse()?),
            None => Ok(d),
        }
    };
    let mut shape = Shape::text(&word("--shape", "ov-4b")?)?.vision(&word("--vision", "4b")?)?;
    shape.layers = opt("--layers", shape.layers as f64)? as usize;
    let shard_bytes = (opt("--shard-gb", 2.0)? * 1e9) as usize;
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let specs = tensors(&shape);
    // Group tensors into shards of about shard_bytes.
    let mut shards: Vec<Vec<&Spec>> = vec![Vec::new()];
    let mut size = 0;
    for s in &specs {
        let n = s.shape.iter().product::<usize>() * 2;
        if size + n > shard_bytes && !shards.last().unwrap().is_empty() {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().unwrap().push(s);
        size += n;
    }
    let total = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total_size = 0u64;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, total);
        total_size += write_shard(&dir.join(&file), shard, &mut rng)?;
        for s in shard {
            weight_map.insert(s.name.clone(), file.clone().into());
        }
    }
    let index =
        serde_json::json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(&index)?,
    )?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config(&shape))?,
    )?;
    std::fs::write(dir.join("preprocessor_config.json"), PREPROCESSOR)?;
    println!(
        "fabricated {} tensors, {:.2} GB bf16 in {total} shards at {}",
        specs.len(),
        total_size as f64 / 1e9,
        dir.display()
    );
    Ok(())
}
