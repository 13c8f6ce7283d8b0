//! Writes a random bf16 checkpoint with the released LLaVA-OneVision-1.5-4B shapes (RICE-ViT
//! 1024 wide / 24 blocks / 16 heads / MLP 4096; Qwen3 2560 wide / 36 layers / 32 q + 8 kv
//! heads of 128 / MLP 9728 / vocab 151936) as sharded safetensors with an index, config.json
//! and preprocessor_config.json, for `bench/export-4b-int4.sh`.
//!
//! `cargo run -p ove-exporter --example fabricate_4b -- DIR [--layers N] [--shard-gb G]`
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

const VD: usize = 1024;
const VDEPTH: usize = 24;
const VMLP: usize = 4096;
const VHEADS: usize = 16;
const H: usize = 2560;
const NH: usize = 32;
const KVH: usize = 8;
const HD: usize = 128;
const MLP: usize = 9728;
const VOCAB: usize = 151936;

fn tensors(layers: usize) -> Vec<Spec> {
    let mut v = vec![
        t("visual.patch_embed.proj.weight", &[VD, 3, 14, 14]),
        t("visual.class_embedding", &[VD]),
        t("visual.class_pos_emb", &[1, VD / VHEADS / 2]),
        ones("visual.pre_layernorm.weight", &[VD]),
        t("visual.pre_layernorm.bias", &[VD]),
    ];
    for i in 0..VDEPTH {
        let p = format!("visual.blocks.{i}");
        v.push(ones(format!("{p}.norm1.weight"), &[VD]));
        v.push(t(format!("{p}.norm1.bias"), &[VD]));
        v.push(t(format!("{p}.attn.qkv.weight"), &[3 * VD, VD]));
        v.push(t(format!("{p}.attn.qkv.bias"), &[3 * VD]));
        v.push(t(format!("{p}.attn.proj.weight"), &[VD, VD]));
        v.push(t(format!("{p}.attn.proj.bias"), &[VD]));
        v.push(ones(format!("{p}.norm2.weight"), &[VD]));
        v.push(t(format!("{p}.norm2.bias"), &[VD]));
        v.push(t(format!("{p}.mlp.fc1.weight"), &[VMLP, VD]));
        v.push(t(format!("{p}.mlp.fc1.bias"), &[VMLP]));
        v.push(t(format!("{p}.mlp.fc2.weight"), &[VD, VMLP]));
        v.push(t(format!("{p}.mlp.fc2.bias"), &[VD]));
    }
    let m = 4 * VD;
    v.push(ones("visual.merger.ln_q.weight", &[VD]));
    v.push(t("visual.merger.ln_q.bias", &[VD]));
    v.push(t("visual.merger.mlp.0.weight", &[m, m]));
    v.push(t("visual.merger.mlp.0.bias", &[m]));
    v.push(t("visual.merger.mlp.2.weight", &[H, m]));
    v.push(t("visual.merger.mlp.2.bias", &[H]));
    v.push(t("model.embed_tokens.weight", &[VOCAB, H]));
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        v.push(ones(format!("{p}.input_layernorm.weight"), &[H]));
        v.push(t(format!("{p}.self_attn.q_proj.weight"), &[NH * HD, H]));
        v.push(t(format!("{p}.self_attn.k_proj.weight"), &[KVH * HD, H]));
        v.push(t(format!("{p}.self_attn.v_proj.weight"), &[KVH * HD, H]));
        v.push(t(format!("{p}.self_attn.o_proj.weight"), &[H, NH * HD]));
        v.push(ones(format!("{p}.self_attn.q_norm.weight"), &[HD]));
        v.push(ones(format!("{p}.self_attn.k_norm.weight"), &[HD]));
        v.push(ones(format!("{p}.post_attention_layernorm.weight"), &[H]));
        v.push(t(format!("{p}.mlp.gate_proj.weight"), &[MLP, H]));
        v.push(t(format!("{p}.mlp.up_proj.weight"), &[MLP, H]));
        v.push(t(format!("{p}.mlp.down_proj.weight"), &[H, MLP]));
    }
    v.push(ones("model.norm.weight", &[H]));
    v.push(t("lm_head.weight", &[VOCAB, H]));
    v
}

fn config(layers: usize) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LLaVAOneVision1_5_ForConditionalGeneration"],
        "model_type": "llavaonevision1_5",
        "dtype": "bfloat16",
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vocab_size": VOCAB,
        "tie_word_embeddings": false,
        "vision_config": {
            "model_type": "rice_vit", "depth": VDEPTH, "embed_dim": VD, "hidden_size": VD,
            "num_heads": VHEADS, "intermediate_size": VMLP, "hidden_act": "gelu",
            "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 1, "layer_norm_eps": 1e-5, "text_hidden_size": H
        },
        "text_config": {
            "model_type": "LLaVAOneVision1_5_text", "hidden_size": H,
            "num_hidden_layers": layers, "num_attention_heads": NH,
            "num_key_value_heads": KVH, "head_dim": HD, "intermediate_size": MLP,
            "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 5e6,
            "max_position_embeddings": 32768, "vocab_size": VOCAB,
            "attention_bias": false, "tie_word_embeddings": false
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
        bail!("usage: fabricate_4b DIR [--layers N] [--shard-gb G]");
    };
    let opt = |k: &str, d: f64| -> Result<f64> {
        match args.iter().position(|a| a == k) {
            Some(i) => Ok(args.get(i + 1).context("missing value")?.parse()?),
            None => Ok(d),
        }
    };
    let layers = opt("--layers", 36.0)? as usize;
    let shard_bytes = (opt("--shard-gb", 2.0)? * 1e9) as usize;
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let specs = tensors(layers);
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
        serde_json::to_vec_pretty(&config(layers))?,
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
