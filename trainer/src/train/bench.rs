//! `ove-train bench-train`: training throughput of a Qwen3-shaped decoder on random tokens.
//!
//! Text only (no vision tower): the decoder is where a 1-2B model spends nearly all of its
//! FLOPs. Each step is what a training step does: zero grad, the trainer's forward and
//! backward ([`decoder_backward`]: the decoder's [`DecoderExec`] says whether layers are
//! checkpointed, how the loss is chunked and how packed rows attend) over one causal row
//! or a row of packed samples, global-norm clipping, fused AdamW. Timing waits for the
//! device; MFU counts 6 x parameters x tokens plus the causal attention's
//! 6 x layers x heads x head_dim x (sum of squared sample lengths), the FLOPs
//! `../shared/bench/pt_train_anchor.py` counts, over seconds and the peak FLOP/s.

use std::time::Instant;

use anyhow::{bail, ensure, Result};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use ove_core::config::{ModelConfig, TextConfig, VisionConfig};

use crate::decoder::{AttentionMask, DecoderExec, Qwen3};
use crate::device::synchronize;
use crate::model::{Images, LlavaOneVision};
use crate::train::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::train::step::{decoder_backward, Phase};

/// A Qwen3 text config by preset name: `qwen3-1.7b` (hidden 2048, 28 layers, 16 q / 8 kv
/// heads of 128, MLP 6144, vocab 151936, tied embeddings: 1.72B parameters), `qwen3-4b`
/// (2560, 36 layers, 32 / 8 heads, MLP 9728: 4.02B), `qwen3-0.6b` or `tiny`
/// (a seconds-on-the-CPU shape for tests).
pub fn preset(name: &str) -> Result<TextConfig> {
    let base = |hidden, layers, heads, kv, hd, mlp, vocab, tie| TextConfig {
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim: Some(hd),
        intermediate_size: mlp,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        vocab_size: vocab,
        tie_word_embeddings: tie,
        max_position_embeddings: 40960,
        attention_bias: false,
        hidden_act: "silu".into(),
    };
    Ok(match name {
        "qwen3-1.7b" | "1.7b" => base(2048, 28, 16, 8, 128, 6144, 151936, true),
        "qwen3-0.6b" | "0.6b" => base(1024, 28, 16, 8, 128, 3072, 151936, true),
        "qwen3-4b" | "4b" => base(2560, 36, 32, 8, 128, 9728, 151936, true),
        "tiny" => base(64, 2, 4, 2, 16, 128, 512, true),
        other => bail!("unknown preset {other:?} (qwen3-4b, qwen3-1.7b, qwen3-0.6b, tiny)"),
    })
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub text: TextConfig,
    pub seq_len: i64,
    pub batch: i64,
    pub warmup: usize,
    pub steps: usize,
    /// Parameters and compute in bf16 (f32 master weights in AdamW); f32 otherwise.
    pub bf16: bool,
    pub lr: f64,
    pub grad_clip: f64,
    pub peak_flops: f64,
    pub seed: i64,
    /// Also wait for the device between the phases and report their times (the extra
    /// synchronisations cost a little throughput).
    pub phase_times: bool,
    /// Each row packs samples of these lengths (positions restart, attention stays within
    /// a sample); `None`: one causal sequence of `seq_len`.
    pub sample_lens: Option<Vec<i64>>,
    pub exec: DecoderExec,
    /// The vision tower and merger in the step too: document images whose merged tokens
    /// open the row's first samples.
    pub vision: Option<VisionBench>,
}

/// The vision part of a `bench-train` step: `images` square images of `side` pixels a row
/// through a vision tower of `config`'s shape (`bench-train` uses [`released_rice_vit`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionBench {
    pub images: usize,
    pub side: usize,
    pub config: VisionConfig,
}

/// The released RICE-ViT (MODEL.md: width 1024, 24 blocks, 16 heads, MLP 4096, patch 14,
/// merge 2) feeding a decoder of width `text_hidden`.
pub fn released_rice_vit(text_hidden: usize) -> VisionConfig {
    VisionConfig {
        depth: 24,
        hidden_size: 1024,
        num_heads: 16,
        intermediate_size: 4096,
        patch_size: 14,
        spatial_merge_size: 2,
        layer_norm_eps: 1e-5,
        text_hidden_size: text_hidden,
        in_channels: 3,
        temporal_patch_size: 1,
        hidden_act: "gelu".into(),
        rope_theta: None,
    }
}

/// The model a bench step trains: the decoder alone, or the whole LLaVA-OneVision model.
enum BenchModel {
    Text(Qwen3),
    Vlm(Box<LlavaOneVision>),
}

impl BenchModel {
    fn decoder(&self) -> &Qwen3 {
        match self {
            BenchModel::Text(d) => d,
            BenchModel::Vlm(m) => &m.decoder,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub params: i64,
    pub tokens_per_step: i64,
    /// Wall seconds of each timed step.
    pub step_seconds: Vec<f64>,
    /// Loss of every step, warmup included.
    pub losses: Vec<f64>,
    pub tokens_per_s: f64,
    pub mfu: f64,
    pub peak_flops: f64,
    /// Mean milliseconds of (forward, LM head + loss forward and backward, backward,
    /// clip + AdamW) over the timed steps, with `phase_times`.
    pub phase_ms: Option<[f64; 4]>,
    /// The attention kernel the decoder's forward runs (in words).
    pub attention_kernel: String,
    /// Vision tower and merger parameters (in `params`) and patches a step, with a vision
    /// row.
    pub vision_params: i64,
    pub patches_per_step: i64,
}

/// Builds the model on `device`, runs `warmup` then `steps` timed steps on random tokens.
pub fn run_bench(cfg: &BenchConfig, device: Device) -> Result<BenchReport> {
    ensure!(cfg.steps > 0, "--steps must be positive");
    ensure!(cfg.seq_len > 1 && cfg.batch > 0, "bad shape");
    tch::manual_seed(cfg.seed);
    let mut vs = VarStore::new(device);
    let vocab = cfg.text.vocab_size as i64;
    // With images, the last id is the image pad (random text never draws it).
    let image_token = vocab - 1;
    let mut model = match &cfg.vision {
        None => BenchModel::Text(Qwen3::new(
            vs.root() / "model",
            vs.root() / "lm_head",
            &cfg.text,
        )?),
        Some(v) => BenchModel::Vlm(Box::new(LlavaOneVision::new(
            &vs.root(),
            &ModelConfig {
                model_type: "llavaonevision1_5".into(),
                vision_config: VisionConfig {
                    text_hidden_size: cfg.text.hidden_size,
                    ..v.config.clone()
                },
                text_config: cfg.text.clone(),
                image_token_id: image_token,
                vision_start_token_id: None,
                vision_end_token_id: None,
                video_token_id: None,
            },
        )?)),
    };
    match &mut model {
        BenchModel::Text(d) => d.exec = cfg.exec,
        BenchModel::Vlm(m) => m.decoder.exec = cfg.exec,
    }
    if cfg.bf16 {
        vs.bfloat16();
    }
    let count = |prefix: Option<&str>| -> i64 {
        vs.variables()
            .iter()
            .filter(|(n, _)| prefix.is_none_or(|p| n.starts_with(p)))
            .map(|(_, t)| t.numel() as i64)
            .sum()
    };
    let params = count(None);
    let vision_params = count(Some("visual."));
    let mut opt = AdamW::new(
        &vs,
        AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        },
    );
    let (b, t) = (cfg.batch, cfg.seq_len);
    let lens = match &cfg.sample_lens {
        Some(lens) => {
            ensure!(
                lens.iter().all(|&l| l > 0) && lens.iter().sum::<i64>() == t,
                "sample lengths {lens:?} must be positive and add up to the row's {t} tokens"
            );
            lens.clone()
        }
        None => vec![t],
    };
    let kind = if cfg.bf16 {
        Kind::BFloat16
    } else {
        Kind::Float
    };
    let text_vocab = if cfg.vision.is_some() {
        vocab - 1
    } else {
        vocab
    };
    let ids = Tensor::randint(text_vocab, [b, t], (Kind::Int64, device));
    let targets = Tensor::randint(text_vocab, [b, t], (Kind::Int64, device));
    // The images: random pixels (already normalised patches), each image's merged tokens
    // at the start of sample i of every row (all at the row's start without packing).
    let mut pixels = None;
    let mut grids = Vec::new();
    let mut patches = 0i64;
    if let Some(v) = &cfg.vision {
        let (patch, merge) = (v.config.patch_size, v.config.spatial_merge_size);
        let per_side = v.side / patch;
        ensure!(
            v.images > 0 && per_side >= merge && per_side.is_multiple_of(merge),
            "--vision-images {} of {} px: need images of at least {} px, a multiple of that",
            v.images,
            v.side,
            merge * patch
        );
        let tokens = ((per_side / merge) * (per_side / merge)) as i64;
        let starts: Vec<i64> = if lens.len() > 1 {
            ensure!(
                v.images <= lens.len(),
                "{} images for {} samples: one image a sample at most",
                v.images,
                lens.len()
            );
            lens.iter()
                .scan(0, |at, &l| Some(std::mem::replace(at, *at + l)))
                .collect()
        } else {
            (0..v.images as i64).map(|i| i * tokens).collect()
        };
        for (i, &start) in starts.iter().take(v.images).enumerate() {
            let room = if lens.len() > 1 { lens[i] } else { t - start };
            ensure!(
                tokens < room,
                "an image of {} px is {tokens} tokens: it does not fit its sample of {room}",
                v.side
            );
            let _ = ids.narrow(1, start, tokens).fill_(image_token);
        }
        grids = vec![[1, per_side, per_side]; v.images * b as usize];
        patches = (grids.len() * per_side * per_side) as i64;
        let row = (v.config.in_channels * patch * patch) as i64;
        pixels = Some(Tensor::randn([patches, row], (kind, device)));
    }
    let row_positions: Vec<i64> = lens.iter().flat_map(|&l| 0..l).collect();
    let positions = Tensor::from_slice(&row_positions)
        .to_device(device)
        .unsqueeze(0)
        .expand([b, t], true)
        .contiguous();
    let mask = if lens.len() > 1 {
        let row_ids: Vec<i64> = lens
            .iter()
            .enumerate()
            .flat_map(|(i, &l)| std::iter::repeat_n(i as i64, l as usize))
            .collect();
        AttentionMask::Packed(
            Tensor::from_slice(&row_ids)
                .to_device(device)
                .unsqueeze(0)
                .expand([b, t], true)
                .contiguous(),
        )
    } else {
        AttentionMask::Causal
    };
    let attention_kernel = {
        let _no_grad = tch::no_grad_guard();
        let probe = Tensor::zeros([b, t, cfg.text.hidden_size as i64], (kind, device));
        model.decoder().attention_kernel(&probe, &mask)?
    };
    tracing::info!(kernel = %attention_kernel, "decoder attention");
    let mut losses = Vec::new();
    let mut step_seconds = Vec::new();
    let mut phase_sums = [0.0f64; 4];
    let sync_mark = |t: &mut Instant| -> f64 {
        if !cfg.phase_times {
            return 0.0;
        }
        synchronize(device);
        let now = Instant::now();
        let d = now.duration_since(*t).as_secs_f64();
        *t = now;
        d
    };
    let tokens = b * t;
    for i in 0..cfg.warmup + cfg.steps {
        synchronize(device);
        let start = Instant::now();
        let mut mark = start;
        let mut phases = [0.0f64; 4];
        opt.zero_grad();
        let embeds = match (&model, &pixels) {
            (BenchModel::Vlm(m), Some(px)) => {
                let images = m.encode_images(&Images::new(px, &grids))?.image_embeds;
                m.embed(&ids, Some(&images))?
            }
            _ => model.decoder().embed(&ids),
        };
        let (loss, _) = decoder_backward(
            model.decoder(),
            &embeds,
            &positions,
            &mask,
            &targets,
            1.0 / tokens as f64,
            &mut |phase| {
                let slot = match phase {
                    Phase::Forward => 0,
                    Phase::HeadLoss => 1,
                    Phase::Backward => 2,
                };
                phases[slot] = sync_mark(&mut mark);
            },
        )?;
        let grad_norm = clip_grad_norm(&opt.tensors(), cfg.grad_clip);
        opt.step(cfg.lr)?;
        synchronize(device);
        phases[3] = sync_mark(&mut mark);
        let secs = start.elapsed().as_secs_f64();
        ensure!(
            loss.is_finite() && grad_norm.is_finite(),
            "non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {i}"
        );
        losses.push(loss);
        let timed = i >= cfg.warmup;
        if timed {
            step_seconds.push(secs);
            for (sum, t) in phase_sums.iter_mut().zip(phases) {
                *sum += t;
            }
        }
        tracing::info!(
            step = i,
            warmup = !timed,
            loss,
            grad_norm,
            seconds = secs,
            "bench step"
        );
    }
    let mean = step_seconds.iter().sum::<f64>() / step_seconds.len() as f64;
    let tokens_per_s = tokens as f64 / mean;
    let c = &cfg.text;
    let attention_flops = 6.0
        * (c.num_hidden_layers * c.num_attention_heads * c.head_dim()) as f64
        * lens.iter().map(|&l| (l * l) as f64).sum::<f64>()
        * b as f64;
    let vision_attention = cfg.vision.as_ref().map_or(0.0, |v| {
        // Each image attends to all of itself (not causal: twice the causal count):
        // blocks x width x (patches per image)^2.
        let n = ((v.side / v.config.patch_size).pow(2)) as f64;
        let width = (v.config.depth * v.config.hidden_size) as f64;
        12.0 * width * n * n * (v.images as f64 * b as f64)
    });
    // The tower runs on every patch, the merger on every 2x2 group of them.
    let merger_params = count(Some("visual.merger."));
    let merge = cfg
        .vision
        .as_ref()
        .map_or(1, |v| v.config.spatial_merge_size.pow(2)) as f64;
    let flops = 6.0 * (params - vision_params) as f64 * tokens as f64
        + 6.0 * (vision_params - merger_params) as f64 * patches as f64
        + 6.0 * merger_params as f64 * patches as f64 / merge
        + attention_flops
        + vision_attention;
    Ok(BenchReport {
        params,
        tokens_per_step: tokens,
        step_seconds,
        losses,
        tokens_per_s,
        mfu: flops / mean / cfg.peak_flops,
        peak_flops: cfg.peak_flops,
        phase_ms: cfg
            .phase_times
            .then(|| phase_sums.map(|t| t * 1e3 / cfg.steps as f64)),
        vision_params,
        patches_per_step: patches,
        attention_kernel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tiny preset on the CPU in f32: `seq_len` tokens a row, `batch` rows, `steps`
    /// timed steps after none, seed 0, phase times on.
    fn tiny(seq_len: i64, batch: i64, steps: usize) -> BenchConfig {
        BenchConfig {
            text: preset("tiny").unwrap(),
            seq_len,
            batch,
            warmup: 0,
            steps,
            bf16: false,
            lr: 1e-2,
            grad_clip: 1.0,
            peak_flops: 1e12,
            seed: 0,
            phase_times: true,
            sample_lens: None,
            exec: DecoderExec::default(),
            vision: None,
        }
    }

    #[test]
    fn presets_have_the_advertised_size() {
        let c = preset("qwen3-1.7b").unwrap();
        let (h, v, i) = (c.hidden_size, c.vocab_size, c.intermediate_size);
        let layer = h * c.q_dim() * 2 + h * c.kv_dim() * 2 + 3 * h * i + 2 * h + 2 * 128;
        let total = v * h + c.num_hidden_layers * layer + h;
        assert!((1_700_000_000..1_750_000_000).contains(&total), "{total}");
        assert!(preset("nope").is_err());
    }

    #[test]
    fn tiny_bench_runs_on_the_cpu_and_learns() {
        let cfg = BenchConfig {
            warmup: 1,
            ..tiny(32, 2, 3)
        };
        let r = run_bench(&cfg, Device::Cpu).unwrap();
        assert_eq!(r.step_seconds.len(), 3);
        assert_eq!(r.losses.len(), 4);
        assert_eq!(r.tokens_per_step, 64);
        assert!(r.tokens_per_s > 0.0 && r.mfu > 0.0);
        assert!(r.phase_ms.unwrap().iter().all(|&t| t > 0.0));
        assert!(
            r.attention_kernel.contains("causal, no mask"),
            "{}",
            r.attention_kernel
        );
        // Same random batch every step: the loss must fall.
        assert!(r.losses[3] < r.losses[0], "{:?}", r.losses);
    }

    /// Packed samples through checkpointed layers and a chunked loss run, time their
    /// phases and learn (that they compute the plain backward's gradients is
    /// tests/training.rs's `checkpointed_layers_and_a_chunked_loss_give_the_same_gradients`;
    /// the random weights here come from libtorch's global generator, which tests running
    /// beside this one draw from too).
    #[test]
    fn packed_bench_with_checkpointing_and_chunks_learns() {
        let cfg = BenchConfig {
            seed: 4,
            sample_lens: Some(vec![10, 9, 5]),
            exec: DecoderExec {
                checkpoint_layers: true,
                loss_chunk_rows: Some(7),
                ..DecoderExec::default()
            },
            ..tiny(24, 2, 3)
        };
        let r = run_bench(&cfg, Device::Cpu).unwrap();
        assert!(r.losses[2] < r.losses[0], "{:?}", r.losses);
        assert!(r.phase_ms.unwrap().iter().all(|&t| t > 0.0));
        // On the CPU packed rows take the mask (varlen flash is CUDA only).
        assert!(
            r.attention_kernel.contains("boolean mask"),
            "{}",
            r.attention_kernel
        );
        let bad = BenchConfig {
            sample_lens: Some(vec![10, 9]),
            ..cfg
        };
        let err = run_bench(&bad, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("add up to"), "{err}");
    }

    /// A step with the vision tower: images' merged tokens open the packed samples, the
    /// whole model (tower, merger, decoder) trains, the loss falls.
    #[test]
    fn a_vision_row_trains_the_tower_too() {
        let vision = VisionConfig {
            depth: 2,
            hidden_size: 32,
            num_heads: 2,
            intermediate_size: 64,
            ..released_rice_vit(64)
        };
        let cfg = BenchConfig {
            seed: 2,
            phase_times: false,
            sample_lens: Some(vec![20, 12, 8]),
            vision: Some(VisionBench {
                images: 2,
                side: 56,
                config: vision,
            }),
            ..tiny(40, 1, 3)
        };
        let r = run_bench(&cfg, Device::Cpu).unwrap();
        assert_eq!(r.patches_per_step, 2 * 16);
        assert!(r.vision_params > 0 && r.vision_params < r.params);
        assert!(r.losses[2] < r.losses[0], "{:?}", r.losses);
        // A 56 px image is 4 tokens; one of 112 px (16) does not fit the 12-token sample.
        let too_big = BenchConfig {
            vision: Some(VisionBench {
                side: 112,
                ..cfg.vision.clone().unwrap()
            }),
            ..cfg
        };
        let err = run_bench(&too_big, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn bf16_params_get_f32_master_weights() {
        let mut cfg = BenchConfig {
            bf16: true,
            ..tiny(16, 1, 2)
        };
        let r = run_bench(&cfg, Device::Cpu).unwrap();
        assert!(r.losses.iter().all(|l| l.is_finite()));
        cfg.steps = 1;
        let mut vs = VarStore::new(Device::Cpu);
        let _m = Qwen3::new(vs.root() / "model", vs.root() / "lm_head", &cfg.text).unwrap();
        vs.bfloat16();
        let opt = AdamW::new(&vs, AdamWConfig::default());
        assert!(opt
            .params
            .iter()
            .all(|p| p.master.as_ref().is_some_and(|m| m.kind() == Kind::Float)));
    }
}
