//! `ove-train ctc`: trains the vision encoder and the CTC line-reader head
//! ([`crate::ctc`]) on text lines, nanoGPT-style: sample a batch of ground-truth lines,
//! crop them as the runtime does, encode each alone, CTC loss, AdamW, repeat. The merger
//! and the decoder are left as they are (frozen; they do not take part).
//!
//! Why a stage of its own: a CTC loss gives every image column a gradient from the first
//! step, so the encoder learns glyphs long before an autoregressive decoder trained from
//! random weights would find the alignment (models/default-ocr/README.md). The result is
//! a checkpoint (`model.safetensors` with released names only) plus `ctc_head.safetensors`
//! beside it; `ove export --ctc-head --reads lines --line-reader ctc` makes a bundle that
//! reads with it.
//!
//! Logs: OUT/metrics.jsonl (one line per step: loss, seconds, lines, patches, lr) and
//! OUT/eval.jsonl (held-out CER and exact lines, greedy, every --eval-every steps).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tch::Tensor;
use tracing::{info, warn};

use super::LOG_TARGET;
use crate::checkpoint::{load_model, save_checkpoint, SaveOptions};
use crate::ctc::HeadStore;
use crate::device::parse_device;
use crate::train::binpack::SplitMix64;
use crate::train::lines::{line_batch, permutation, read_lines, LineItem, Reshape};
use crate::train::optim::{clip_grad_norm, AdamW, AdamWConfig};
use crate::train::stage::set_trainable;
use crate::train::LrSchedule;
use ove_core::metrics;

/// The encoder's parameters (everything under `visual.` but the merger).
const ENCODER: &[&str] = &[
    "visual.patch_embed",
    "visual.class_embedding",
    "visual.class_pos_emb",
    "visual.pre_layernorm",
    "visual.blocks",
];

/// The arguments of `ove-train ctc`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example (the default model's recipe does this first):\n  \
    ove-train ctc --checkpoint ckpt/init --data data/lines data/docs --eval-data data/eval-lines \\\n    \
    --line-height 32 --steps 2000 --out ckpt/ctc"
)]
pub struct CtcArgs {
    /// Checkpoint to start from (a `ctc_head.safetensors` in it is trained further;
    /// without one a fresh head is made).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Folders written by `ove-docgen generate`: every line of every NAME.lines.json is a
    /// training line (words, codes, lines, and the lines of pages).
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Held-out folders (same format): greedy CER every --eval-every steps.
    #[arg(long, num_args = 1..)]
    pub eval_data: Vec<PathBuf>,
    /// Held-out lines evaluated (the first N, in file order).
    #[arg(long, default_value_t = 200)]
    pub eval_lines: usize,
    /// Output checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Lines per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Text height in pixels line crops are scaled to (record the same with `ove export
    /// --line-height`).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(8..=256))]
    pub line_height: u32,
    /// CTC frames per 14-px patch column of a new head (4: one every 3.5 px).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=14))]
    pub frames_per_column: u32,
    /// Peak learning rate (linear warmup over the first 3% of steps, cosine to 10%).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.05)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Evaluation interval in steps (and after the last).
    #[arg(long, default_value_t = 250)]
    pub eval_every: usize,
    /// Save the checkpoint every N steps too (it is always saved at the end).
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Training crops' widths are scaled by a random factor in [1/(1+W), 1+W] (0: off):
    /// held-out fonts are wider or narrower than the training ones.
    #[arg(long, default_value_t = 0.0, value_parser = parse_unit)]
    pub reshape_width: f32,
    /// Share of training crops whose strokes are made half a pixel bolder or lighter (0:
    /// none): held-out fonts differ in weight too.
    #[arg(long, default_value_t = 0.0, value_parser = parse_unit)]
    pub reshape_stroke: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl CtcArgs {
    pub fn run(self) -> Result<()> {
        if self.batch == 0 || self.steps == 0 {
            bail!("--batch and --steps must be at least 1");
        }
        let device = parse_device(&self.device)?;
        tch::manual_seed(self.seed as i64);
        let loaded = load_model(&self.checkpoint, device)?;
        let pre = loaded.checkpoint.preprocessor.clone().with_context(|| {
            format!(
                "{}: no preprocessor_config.json (line crops need it)",
                self.checkpoint.display()
            )
        })?;
        let vcfg = loaded.model.config.vision_config.clone();
        let heads = HeadStore::open_or_new(
            &self.checkpoint,
            device,
            vcfg.hidden_size,
            vcfg.spatial_merge_size,
            self.frames_per_column as usize,
        )?;
        let encoder: Vec<String> = ENCODER.iter().map(|s| s.to_string()).collect();
        set_trainable(&loaded.vs, &encoder)?;
        let adamw = AdamWConfig {
            weight_decay: self.weight_decay,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(&loaded.vs, adamw);
        let mut head_opt = AdamW::new(&heads.vs, adamw);
        let mut params = opt.tensors();
        params.extend(head_opt.tensors());

        let train = read_lines(&self.data)?;
        let mut eval = if self.eval_data.is_empty() {
            Vec::new()
        } else {
            read_lines(&self.eval_data)?
        };
        eval.truncate(self.eval_lines);
        info!(
            target: LOG_TARGET,
            lines = train.len(),
            eval_lines = eval.len(),
            frames_per_column = heads.head.frames_per_column,
            line_height = self.line_height,
            "CTC stage: encoder + head"
        );
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        let open_log = |name: &str| {
            let p = self.out.join(name);
            std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))
        };
        let mut metrics_log = open_log("metrics.jsonl")?;
        let mut eval_log = open_log("eval.jsonl")?;

        let schedule = LrSchedule {
            peak_lr: self.lr,
            min_lr: self.lr * 0.1,
            warmup_steps: (self.steps * 3 / 100).max(1),
            total_steps: self.steps,
        };
        let reshape = Reshape {
            width: self.reshape_width,
            stroke: self.reshape_stroke,
        };
        let mut rng = SplitMix64::new(self.seed);
        let mut order = permutation(&mut rng, train.len());
        let mut cursor = 0;
        let bar = ProgressBar::new(self.steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed} < {eta}]")
                .expect("a valid template"),
        );
        let save = |step: usize| -> Result<()> {
            save_checkpoint(
                &loaded.vs,
                &loaded.model.config,
                Some(&self.checkpoint),
                &self.out,
                &SaveOptions::default(),
            )?;
            heads.head.save_in(&self.out)?;
            info!(target: LOG_TARGET, step, out = %self.out.display(), "saved");
            Ok(())
        };
        for step in 0..self.steps {
            let t0 = Instant::now();
            let mut items: Vec<&LineItem> = Vec::with_capacity(self.batch);
            while items.len() < self.batch {
                if cursor == order.len() {
                    order = permutation(&mut rng, train.len());
                    cursor = 0;
                }
                items.push(&train[order[cursor]]);
                cursor += 1;
            }
            let batch = line_batch(&items, self.line_height, &pre, reshape, Some(&mut rng));
            for s in &batch.skipped {
                warn!(target: LOG_TARGET, "skipped a line: {s}");
            }
            if batch.grids.is_empty() {
                bail!("step {step}: every line of the batch was skipped");
            }
            let lr = schedule.lr(step);
            opt.zero_grad();
            head_opt.zero_grad();
            let pixels = Tensor::from_slice(&batch.pixel_values)
                .to_device(device)
                .reshape([-1, vcfg.patch_dim() as i64]);
            let groups = vec![1; batch.grids.len()];
            let tokens = loaded
                .model
                .visual
                .forward_grouped(&pixels, &batch.grids, &groups)?;
            let texts: Vec<&str> = batch.texts.iter().map(String::as_str).collect();
            let loss = heads.head.loss(&tokens, &batch.grids, &texts)?;
            let loss_value = loss.double_value(&[]);
            if !loss_value.is_finite() {
                bail!("step {step}: non-finite CTC loss ({loss_value})");
            }
            loss.backward();
            let grad_norm = clip_grad_norm(&params, self.grad_clip);
            opt.step(lr)?;
            head_opt.step(lr)?;
            let seconds = t0.elapsed().as_secs_f64();
            let patches: usize = batch
                .grids
                .iter()
                .map(|g| g.iter().product::<usize>())
                .sum();
            writeln!(
                metrics_log,
                "{}",
                json!({"step": step + 1, "loss": loss_value, "grad_norm": grad_norm, "lr": lr,
                       "seconds": seconds, "lines": batch.grids.len(), "tokens": patches})
            )?;
            bar.set_message(format!("loss {loss_value:.3}"));
            bar.inc(1);
            let last = step + 1 == self.steps;
            if !eval.is_empty() && ((step + 1) % self.eval_every.max(1) == 0 || last) {
                let (score, exact) = evaluate(&loaded.model, &heads, &eval, &self, &pre)?;
                info!(target: LOG_TARGET, step = step + 1, cer = score.cer(), exact, of = eval.len(), "held-out lines");
                writeln!(
                    eval_log,
                    "{}",
                    json!({"step": step + 1, "cer": score.cer(), "wer": score.wer(),
                           "exact": exact, "lines": eval.len()})
                )?;
            }
            if self
                .save_every
                .is_some_and(|n| n > 0 && (step + 1) % n == 0)
                && !last
            {
                save(step + 1)?;
            }
        }
        bar.finish();
        save(self.steps)
    }
}

/// Greedy CER and exact lines of the head on held-out lines (no jitter).
fn evaluate(
    model: &crate::model::LlavaOneVision,
    heads: &HeadStore,
    eval: &[LineItem],
    args: &CtcArgs,
    pre: &ove_core::config::PreprocessorConfig,
) -> Result<(metrics::Score, usize)> {
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let patch_dim = model.config.vision_config.patch_dim() as i64;
    let mut scores = Vec::with_capacity(eval.len());
    let mut exact = 0;
    for chunk in eval.chunks(args.batch.max(1)) {
        let items: Vec<&LineItem> = chunk.iter().collect();
        let batch = line_batch(&items, args.line_height, pre, Reshape::default(), None);
        if batch.grids.is_empty() {
            continue;
        }
        let pixels = Tensor::from_slice(&batch.pixel_values)
            .to_device(device)
            .reshape([-1, patch_dim]);
        let groups = vec![1; batch.grids.len()];
        let tokens = model
            .visual
            .forward_grouped(&pixels, &batch.grids, &groups)?;
        let texts = heads.head.greedy(&tokens, &batch.grids)?;
        for (got, want) in texts.iter().zip(&batch.texts) {
            let s = metrics::score(want, got);
            if s.char_edits == 0 {
                exact += 1;
            }
            scores.push(s);
        }
    }
    Ok((metrics::total(scores.iter()), exact))
}

/// A number in [0, 1] (a share, or a relative change).
fn parse_unit(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}
