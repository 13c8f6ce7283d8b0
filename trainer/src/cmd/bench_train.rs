//! `ove-train bench-train`: training throughput of a Qwen3-shaped decoder (text only) on
//! random tokens: warmup, then timed steps of zero grad, forward, loss, backward, clip and
//! AdamW; prints tokens/s and MFU = 6 x parameters x tokens / seconds / peak, and a
//! `RESULT` line other tools compare ([`crate::train::bench`] runs the steps).

use anyhow::{bail, Result};
use tch::Device;

use crate::cmd::exec::ExecArgs;
use crate::device::parse_device;
use crate::train::bench::{preset, released_rice_vit, run_bench, BenchConfig, VisionBench};
use crate::train::run::default_peak_flops;

/// The arguments of `ove-train bench-train`.
#[derive(Debug, clap::Args)]
pub struct BenchTrainArgs {
    /// Shape: qwen3-1.7b (1.72B parameters), qwen3-4b, qwen3-0.6b or tiny.
    #[arg(long, default_value = "qwen3-1.7b")]
    pub preset: String,
    /// Override the preset's number of layers.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Tokens per row.
    #[arg(long, default_value_t = 8192)]
    pub seq_len: i64,
    /// Rows per step.
    #[arg(long, default_value_t = 1)]
    pub batch: i64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Parameter/compute precision: bf16 (f32 master weights in AdamW) or f32.
    /// Default: bf16 on CUDA, f32 on the CPU.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Peak TFLOP/s for the MFU (default: 989, H100/H200 SXM dense bf16, on CUDA;
    /// 1 on the CPU).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Random seed (weights and tokens).
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Also time the phases (forward, LM head + loss, backward, clip + AdamW), waiting
    /// for the device between them.
    #[arg(long)]
    pub phase_times: bool,
    /// Pack each row with samples of these lengths (comma-separated, adding up to
    /// --seq-len; positions restart per sample). `anchor`: the 11 samples of
    /// ../shared/bench/pt_train_anchor.py (1400, 1100, ..., 292 = 8192 tokens).
    #[arg(long, value_name = "L1,L2,...|anchor")]
    pub sample_lens: Option<String>,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Put the vision tower (the released RICE-ViT shape: width 1024, 24 blocks) and the
    /// merger in the step: this many document-sized images a row, their merged tokens at
    /// the start of the first samples (the whole model trains).
    #[arg(long, value_name = "N")]
    pub vision_images: Option<usize>,
    /// Side of each square image, in pixels (a multiple of 28).
    #[arg(long, default_value_t = 896, value_name = "PX")]
    pub image_side: usize,
}

/// The packed eager anchor's 11 sample lengths (8192 tokens).
const ANCHOR_LENS: [i64; 11] = [1400, 1100, 900, 850, 760, 700, 650, 600, 520, 420, 292];

fn parse_lens(text: &str) -> Result<Vec<i64>> {
    if text == "anchor" {
        return Ok(ANCHOR_LENS.to_vec());
    }
    text.split(',')
        .map(|x| {
            x.trim()
                .parse::<i64>()
                .map_err(|e| anyhow::anyhow!("--sample-lens {text:?}: {x:?}: {e}"))
        })
        .collect()
}

impl BenchTrainArgs {
    /// Runs the benchmark and prints the shape, the setting, the `RESULT` line and, with
    /// `--phase-times`, the `PHASES` line.
    pub fn run(self) -> Result<()> {
        let BenchTrainArgs {
            preset: preset_name,
            layers,
            seq_len,
            batch,
            warmup,
            steps,
            device,
            dtype,
            peak_tflops,
            lr,
            seed,
            phase_times,
            sample_lens,
            exec,
            vision_images,
            image_side,
        } = self;
        let exec = exec.exec()?;
        let sample_lens = sample_lens.as_deref().map(parse_lens).transpose()?;
        let device = parse_device(&device)?;
        let mut text = preset(&preset_name)?;
        if let Some(l) = layers {
            text.num_hidden_layers = l;
        }
        let bf16 = match dtype.as_deref() {
            None => device != Device::Cpu,
            Some("bf16") => true,
            Some("f32") => false,
            Some(other) => bail!("--dtype {other:?}: expected bf16 or f32"),
        };
        let peak_flops = peak_tflops.map_or_else(|| default_peak_flops(device), |t| t * 1e12);
        let text_hidden = text.hidden_size;
        let cfg = BenchConfig {
            text,
            seq_len,
            batch,
            warmup,
            steps,
            bf16,
            lr,
            grad_clip: 1.0,
            peak_flops,
            seed,
            phase_times,
            sample_lens: sample_lens.clone(),
            exec,
            vision: vision_images.map(|images| VisionBench {
                images,
                side: image_side,
                config: released_rice_vit(text_hidden),
            }),
        };
        let r = run_bench(&cfg, device)?;
        let t = &cfg.text;
        let mean = r.step_seconds.iter().sum::<f64>() / r.step_seconds.len() as f64;
        println!(
            "ove-train bench-train: {preset_name}{} decoder (hidden {}, {} layers, {} q / {} kv heads x {}, MLP {}, vocab {}, tied {}), {:.3}B parameters",
            if r.patches_per_step > 0 {
                " + RICE-ViT (released shape) + merger +"
            } else {
                " text-only"
            },
            t.hidden_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.num_key_value_heads,
            t.head_dim(),
            t.intermediate_size,
            t.vocab_size,
            t.tie_word_embeddings,
            r.params as f64 / 1e9
        );
        println!(
            "device {device:?}, {}, batch {batch} x {seq_len} tokens, {warmup} warmup + {steps} timed steps, loss {:.4} -> {:.4}",
            if bf16 { "bf16 params+compute, f32 AdamW master weights/moments" } else { "f32" },
            r.losses.first().copied().unwrap_or(f64::NAN),
            r.losses.last().copied().unwrap_or(f64::NAN),
        );
        println!(
            "rows: {}; packed attention {:?}, checkpointed layers {}, fused projections {}, loss chunk rows {}",
            match &sample_lens {
                Some(l) => format!("{} packed samples ({:?})", l.len(), l),
                None => "one causal sequence".into(),
            },
            exec.packed_attention,
            exec.checkpoint_layers,
            exec.fuse_projections,
            crate::train::loss::loss_chunk_rows(exec.loss_chunk_rows, t.vocab_size as i64),
        );
        println!("attention kernel: {}", r.attention_kernel);
        println!(
            "RESULT impl=ove-train layout={}{} ckpt={} fused={} params={} tokens_per_step={} step_ms={:.1} tokens_per_s={:.0} mfu={:.2}% peak_tflops={:.0}",
            match &sample_lens {
                Some(l) if l.len() > 1 => format!("packed-{:?}", exec.packed_attention).to_lowercase(),
                _ => "dense-causal".into(),
            },
            if r.patches_per_step > 0 {
                format!("+vision({}patches,{:.2}Bparams)", r.patches_per_step, r.vision_params as f64 / 1e9)
            } else {
                String::new()
            },
            exec.checkpoint_layers,
            exec.fuse_projections,
            r.params,
            r.tokens_per_step,
            mean * 1e3,
            r.tokens_per_s,
            r.mfu * 100.0,
            r.peak_flops / 1e12
        );
        let losses: Vec<String> = r.losses.iter().map(|l| format!("{l:.5}")).collect();
        println!("LOSSES impl=ove-train {}", losses.join(" "));
        if let Some([f, h, b, o]) = r.phase_ms {
            println!(
                "PHASES impl=ove-train forward_ms={f:.1} head+loss_ms={h:.1} backward_ms={b:.1} clip+adamw_ms={o:.1}"
            );
        }
        Ok(())
    }
}
