//! `ove-train bench-train`: training throughput of a Qwen3-shaped decoder on random tokens.
//!
//! Text only (no vision tower): the decoder is where a 1-2B model spends nearly all of its
//! FLOPs. Each step is what a training step does: zero grad, forward over one causal row,
//! the trainer's token loss ([`token_loss_sum`]), backward, global-norm clipping, AdamW.
//! Timing waits for the device; MFU = 6 x parameters x tokens / seconds / peak FLOP/s
//! (the attention-score FLOPs are not counted, as in the trainer's `metrics.jsonl`).

use std::time::Instant;

use anyhow::{bail, ensure, Result};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use ove_core::config::TextConfig;

use crate::decoder::{AttentionMask, Qwen3};
use crate::device::synchronize;
use crate::train::loss::token_loss_sum;
use crate::train::optim::{clip_grad_norm, AdamW, AdamWConfig};

/// A Qwen3 text config by preset name: `qwen3-1.7b` (hidden 2048, 28 layers, 16 q / 8 kv
/// heads of 128, MLP 6144, vocab 151936, tied embeddings: 1.72B parameters) or `tiny`
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
        "tiny" => base(64, 2, 4, 2, 16, 128, 512, true),
        other => bail!("unknown preset {other:?} (qwen3-1.7b, qwen3-0.6b, tiny)"),
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
    /// Mean milliseconds of (forward + loss, backward, clip + AdamW) over the timed steps,
    /// with `phase_times`.
    pub phase_ms: Option<[f64; 3]>,
}

/// Builds the model on `device`, runs `warmup` then `steps` timed steps on random tokens.
pub fn run_bench(cfg: &BenchConfig, device: Device) -> Result<BenchReport> {
    ensure!(cfg.steps > 0, "--steps must be positive");
    ensure!(cfg.seq_len > 1 && cfg.batch > 0, "bad shape");
    tch::manual_seed(cfg.seed);
    let mut vs = VarStore::new(device);
    let model = Qwen3::new(vs.root() / "model", vs.root() / "lm_head", &cfg.text)?;
    if cfg.bf16 {
        vs.bfloat16();
    }
    let params: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    let mut opt = AdamW::new(
        &vs,
        AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        },
    );
    let (b, t) = (cfg.batch, cfg.seq_len);
    let vocab = cfg.text.vocab_size as i64;
    let ids = Tensor::randint(vocab, [b, t], (Kind::Int64, device));
    let targets = Tensor::randint(vocab, [b, t], (Kind::Int64, device));
    let positions = Tensor::arange(t, (Kind::Int64, device))
        .unsqueeze(0)
        .expand([b, t], true)
        .contiguous();
    let mask = AttentionMask::Causal;
    let mut losses = Vec::new();
    let mut step_seconds = Vec::new();
    let mut phase_sums = [0.0f64; 3];
    let phase_mark = |t: &mut Instant| -> f64 {
        if !cfg.phase_times {
            return 0.0;
        }
        synchronize(device);
        let now = Instant::now();
        let d = now.duration_since(*t).as_secs_f64();
        *t = now;
        d
    };
    for i in 0..cfg.warmup + cfg.steps {
        synchronize(device);
        let start = Instant::now();
        let mut mark = start;
        opt.zero_grad();
        let hidden = model.forward_embeds(&model.embed(&ids), &positions, &mask, None)?;
        let (sum, count) = token_loss_sum(&hidden, &targets, |h| model.logits(h));
        let loss = sum / count as f64;
        let t_fwd = phase_mark(&mut mark);
        loss.f_backward()?;
        let t_bwd = phase_mark(&mut mark);
        let grad_norm = clip_grad_norm(&opt.tensors(), cfg.grad_clip);
        opt.step(cfg.lr)?;
        let loss = loss.double_value(&[]);
        synchronize(device);
        let t_opt = phase_mark(&mut mark);
        let secs = start.elapsed().as_secs_f64();
        ensure!(
            loss.is_finite() && grad_norm.is_finite(),
            "non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {i}"
        );
        losses.push(loss);
        let timed = i >= cfg.warmup;
        if timed {
            step_seconds.push(secs);
            for (sum, t) in phase_sums.iter_mut().zip([t_fwd, t_bwd, t_opt]) {
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
    let tokens = b * t;
    let mean = step_seconds.iter().sum::<f64>() / step_seconds.len() as f64;
    let tokens_per_s = tokens as f64 / mean;
    Ok(BenchReport {
        params,
        tokens_per_step: tokens,
        step_seconds,
        losses,
        tokens_per_s,
        mfu: 6.0 * params as f64 * tokens_per_s / cfg.peak_flops,
        peak_flops: cfg.peak_flops,
        phase_ms: cfg
            .phase_times
            .then(|| phase_sums.map(|t| t * 1e3 / cfg.steps as f64)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            text: preset("tiny").unwrap(),
            seq_len: 32,
            batch: 2,
            warmup: 1,
            steps: 3,
            bf16: false,
            lr: 1e-2,
            grad_clip: 1.0,
            peak_flops: 1e12,
            seed: 0,
            phase_times: true,
        };
        let r = run_bench(&cfg, Device::Cpu).unwrap();
        assert_eq!(r.step_seconds.len(), 3);
        assert_eq!(r.losses.len(), 4);
        assert_eq!(r.tokens_per_step, 64);
        assert!(r.tokens_per_s > 0.0 && r.mfu > 0.0);
        assert!(r.phase_ms.unwrap().iter().all(|&t| t > 0.0));
        // Same random batch every step: the loss must fall.
        assert!(r.losses[3] < r.losses[0], "{:?}", r.losses);
    }

    #[test]
    fn bf16_params_get_f32_master_weights() {
        let mut cfg = BenchConfig {
            text: preset("tiny").unwrap(),
            seq_len: 16,
            batch: 1,
            warmup: 0,
            steps: 2,
            bf16: true,
            lr: 1e-2,
            grad_clip: 1.0,
            peak_flops: 1e12,
            seed: 0,
            phase_times: true,
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
