//! `ove-train`: the trainer's command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tch::Device;
use tracing::info;

use ove_core::tensor_file::{read_safetensors, write_safetensors};
use ove_train::checkpoint::{load_model, save_checkpoint, SaveDtype, SaveOptions};
use ove_train::trace::{compare, trace_case, PixelSource};
use ove_train::train::run::{run as run_training, TrainRun};
use ove_train::train::StageConfig;

/// Training precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Precision {
    F32,
    Bf16,
}

#[derive(Parser)]
#[command(
    name = "ove-train",
    version,
    about = "Train LLaVA-OneVision-1.5 models with libtorch, and check them against the reference",
    long_about = "Train LLaVA-OneVision-1.5 models (RICE-ViT + merger + Qwen3) with libtorch.\n\n\
                  Checkpoints are Hugging Face directories (config.json + model.safetensors or \
                  shards with model.safetensors.index.json); what this tool saves, `ove export` \
                  takes as it is."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a golden-style case and write every intermediate (vision tokens, image
    /// embeddings, prompt logits, greedy ids) under the golden expected.safetensors names.
    Trace {
        /// Checkpoint directory (config.json, weights, preprocessor_config.json).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Case directory: case.json, its images (and expected.safetensors).
        #[arg(long)]
        case: PathBuf,
        /// Feed the case's own pixel_values/image_grid_thw from expected.safetensors
        /// instead of preprocessing its images.
        #[arg(long)]
        pixels_from_case: bool,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
        /// Also compare with CASE/expected.safetensors and print max |diff| per tensor.
        #[arg(long)]
        compare: bool,
    },
    /// Train a checkpoint on JSONL samples for one stage and save the result.
    ///
    /// Each line: {"prompt_ids": [...], "response_ids": [...], "images": ["a.png"]}, the
    /// prompt with one image pad per image (expanded here), the response trained.
    Train {
        /// Checkpoint to start from.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Stage: a built-in name (stage1, stage1_5, stage2) or a TOML file.
        #[arg(long)]
        stage: String,
        /// Training samples: a JSONL file (image paths relative to it), a WebDataset-style
        /// .tar shard (KEY.json + KEY.png / KEY.0.png ...), a directory of shards or a
        /// `shard-*.tar` pattern. A sample whose image is corrupt is skipped and counted.
        #[arg(long)]
        data: PathBuf,
        /// Train on the bins `ove-train pack` wrote from --data (its output folder): each
        /// bin is one row; a step takes bins until it has the global batch size in samples.
        #[arg(long, value_name = "DIR")]
        packed: Option<PathBuf>,
        /// Optimizer steps (default: the stage's schedule.max_steps).
        #[arg(long)]
        steps: Option<usize>,
        /// Output checkpoint directory.
        #[arg(long)]
        out: PathBuf,
        /// Also save a resumable checkpoint (OUT/checkpoints/step-N) every N steps
        /// (default: the stage's schedule.save_every).
        #[arg(long)]
        save_every: Option<usize>,
        /// Held-out samples (JSONL, as --data) whose mean token loss goes to OUT/eval.jsonl
        /// every --eval-every steps and after the last.
        #[arg(long)]
        eval_data: Option<PathBuf>,
        /// Evaluation interval in steps (default: the stage's schedule.eval_every).
        #[arg(long)]
        eval_every: Option<usize>,
        /// Dtype of the saved weights.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: SaveDtype,
        /// Largest shard in bytes; one file when left out.
        #[arg(long)]
        max_shard_bytes: Option<u64>,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: i64,
        /// Train on the first GPU (the same as `--device cuda`): an error saying why when CUDA
        /// cannot be loaded or no GPU is visible, never a silent run on the CPU.
        #[arg(long)]
        cuda: bool,
        /// Device: cpu, cuda or cuda:N (an error when the GPU is not there).
        #[arg(long, conflicts_with = "cuda")]
        device: Option<String>,
        /// Resume from a resumable checkpoint: OUT/checkpoints/step-N, or a run's OUT
        /// (its latest). --steps, --seed, the stage and the data must be the same.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Stop after this many steps (of --steps), leaving a resumable checkpoint.
        #[arg(long)]
        stop_after: Option<usize>,
        /// Peak TFLOP/s of the device for the MFU estimate in metrics.jsonl (default: 989
        /// on CUDA, an H100's dense bf16; 1 on the CPU).
        #[arg(long)]
        peak_tflops: Option<f64>,
        /// Training precision: bf16 (bf16 parameters and compute, f32 master weights and
        /// AdamW moments) or f32. Default: bf16 on a GPU, f32 on the CPU.
        #[arg(long, value_enum)]
        precision: Option<Precision>,
    },
    /// Offline packing: every sample's full length (text + image tokens from the image
    /// headers), over-long samples dropped, exact fits first, then greedy fills under a
    /// minimum fill ratio. Writes OUT/bins-*.jsonl and OUT/report.json, prints the report.
    Pack {
        /// Training data, as for `train --data`: a JSONL manifest, a WebDataset-style .tar
        /// shard, a directory of shards or a `shard-*.tar` pattern. Corrupt images are
        /// skipped and counted.
        #[arg(long)]
        data: PathBuf,
        /// Checkpoint whose config.json / preprocessor_config.json give the image token
        /// counts (only the configs are read).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Bin capacity in tokens.
        #[arg(long, default_value_t = 8192)]
        max_len: u32,
        /// Seed for which sample goes where and the bin order.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Minimum fill ratios, strictest first (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = ove_train::train::binpack::default_min_fill())]
        min_fill: Vec<f64>,
        /// Independent shards packed in parallel (the result depends on this, not on threads).
        #[arg(long, default_value_t = 1)]
        shards: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Concept balancing: each image's top-k concepts by cosine similarity, weights from
    /// the concepts' inverse frequency, samples drawn with replacement by weight. Writes
    /// the weights (.npy, f32, normalised) and WEIGHTS.report.json; prints the concept
    /// entropy before and after.
    Balance {
        /// Image embeddings [N, D] (.npy or .safetensors).
        #[arg(long)]
        image_embeddings: PathBuf,
        /// Concept embeddings [C, D] (.npy or .safetensors).
        #[arg(long)]
        concept_embeddings: PathBuf,
        /// Concepts per image.
        #[arg(long, default_value_t = 1)]
        top_k: usize,
        /// Output weights (.npy).
        #[arg(long)]
        out: PathBuf,
        /// Samples to draw (default: as many as images).
        #[arg(long)]
        draws: Option<usize>,
        /// Write the drawn image indices here, one per line.
        #[arg(long)]
        samples_out: Option<PathBuf>,
        /// Seed of the draws.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Run the similarity search on the first GPU (an error saying why when there is none).
        #[arg(long)]
        cuda: bool,
    },
    /// Training throughput: a Qwen3-shaped decoder (text only) on random tokens, warmup then
    /// timed steps (zero grad, forward, loss, backward, clip, AdamW); prints tokens/s and
    /// MFU = 6 x parameters x tokens / seconds / peak.
    BenchTrain {
        /// Shape: qwen3-1.7b (1.72B parameters), qwen3-0.6b or tiny.
        #[arg(long, default_value = "qwen3-1.7b")]
        preset: String,
        /// Override the preset's number of layers.
        #[arg(long)]
        layers: Option<usize>,
        /// Tokens per row.
        #[arg(long, default_value_t = 8192)]
        seq_len: i64,
        /// Rows per step.
        #[arg(long, default_value_t = 1)]
        batch: i64,
        /// Untimed steps first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Device: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Parameter/compute precision: bf16 (f32 master weights in AdamW) or f32.
        /// Default: bf16 on CUDA, f32 on the CPU.
        #[arg(long)]
        dtype: Option<String>,
        /// Peak TFLOP/s for the MFU (default: 989, H100/H200 SXM dense bf16, on CUDA;
        /// 1 on the CPU).
        #[arg(long)]
        peak_tflops: Option<f64>,
        /// Learning rate.
        #[arg(long, default_value_t = 1e-4)]
        lr: f64,
        /// Random seed (weights and tokens).
        #[arg(long, default_value_t = 0)]
        seed: i64,
        /// Also time the phases (forward + loss, backward, clip + AdamW), waiting for the
        /// device between them.
        #[arg(long)]
        phase_times: bool,
    },
    /// Plot a run's metrics.jsonl (loss, lr, grad norm, tokens/s against the step) as a PNG.
    Plot {
        /// The run's metrics: OUT/metrics.jsonl.
        #[arg(long)]
        metrics: PathBuf,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
    },
    #[command(flatten)]
    Recipe(ove_train::recipe::RecipeCommand),
    /// Load a checkpoint (strict name/shape checks) and save it again, e.g. to change
    /// the dtype or the sharding.
    Resave {
        /// Source checkpoint directory.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output directory (config.json, weights and side files).
        #[arg(long)]
        out: PathBuf,
        /// Dtype of the saved weights.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: SaveDtype,
        /// Largest shard in bytes (e.g. 5000000000); one file when left out.
        #[arg(long)]
        max_shard_bytes: Option<u64>,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Trace {
            checkpoint,
            case,
            pixels_from_case,
            out,
            compare: do_compare,
        } => {
            let loaded = load_model(&checkpoint, Device::Cpu)?;
            info!(checkpoint = %checkpoint.display(), "loaded");
            let source = if pixels_from_case {
                PixelSource::Expected
            } else {
                PixelSource::Images
            };
            let traced = trace_case(&loaded, &case, source)
                .with_context(|| format!("tracing {}", case.display()))?;
            write_safetensors(&out, &traced)?;
            info!(out = %out.display(), tensors = traced.len(), "trace written");
            if do_compare {
                let expected = read_safetensors(&case.join("expected.safetensors"))?;
                let cmp = compare(&expected, &traced)?;
                println!("{}:\n{cmp}", case.display());
            }
        }
        Command::Train {
            checkpoint,
            stage,
            data,
            packed,
            steps,
            out,
            save_every,
            eval_data,
            eval_every,
            dtype,
            max_shard_bytes,
            seed,
            cuda,
            device,
            resume,
            stop_after,
            peak_tflops,
            precision,
        } => {
            let device = match device {
                Some(d) => ove_train::device::parse_device(&d)?,
                None if cuda => ove_train::device::parse_device("cuda")?,
                None => Device::Cpu,
            };
            let stage = StageConfig::load(&stage)?;
            let steps = steps.or(stage.schedule.max_steps).with_context(|| {
                format!(
                    "stage {}: give --steps or schedule.max_steps in the stage file",
                    stage.name
                )
            })?;
            let save_every = save_every.or(stage.schedule.save_every);
            let eval_every = eval_every.or(stage.schedule.eval_every);
            let run = TrainRun {
                checkpoint,
                stage,
                data,
                packed,
                steps,
                out,
                save_every,
                eval_data,
                eval_every,
                save: SaveOptions {
                    dtype,
                    max_shard_bytes,
                },
                device,
                seed,
                resume,
                stop_after,
                peak_flops: peak_tflops.map(|t| t * 1e12),
                bf16: match precision {
                    Some(p) => p == Precision::Bf16,
                    None => device != Device::Cpu,
                },
            };
            info!(
                precision = if run.bf16 { "bf16 (f32 masters)" } else { "f32" },
                device = ?run.device,
                "training"
            );
            let history = run_training(&run)?;
            let stopped_early = run.stop_after.is_some_and(|s| s < run.steps);
            if let (Some(first), Some(last)) = (history.first(), history.last()) {
                println!(
                    "{} steps: loss {:.4} -> {:.4}; {} {}",
                    history.len(),
                    first.loss,
                    last.loss,
                    if stopped_early {
                        "stopped early, resumable checkpoint in"
                    } else {
                        "saved to"
                    },
                    if stopped_early {
                        run.out.join("checkpoints").display().to_string()
                    } else {
                        run.out.display().to_string()
                    }
                );
            }
        }
        Command::Pack {
            data,
            checkpoint,
            max_len,
            seed,
            min_fill,
            shards,
            out,
        } => {
            anyhow::ensure!(max_len > 0, "--max-len must be positive");
            anyhow::ensure!(
                min_fill.iter().all(|r| (0.0..=1.0).contains(r)),
                "--min-fill ratios must lie in [0, 1]"
            );
            let ckpt = ove_core::checkpoint::Checkpoint::open(&checkpoint)
                .with_context(|| format!("opening checkpoint {}", checkpoint.display()))?;
            let cfg = ove_train::train::binpack::PackConfig {
                capacity: max_len,
                min_fill,
                seed,
                shards,
            };
            let report = ove_train::train::pack_manifest::pack_manifest(
                &data,
                &ckpt.config,
                ckpt.preprocessor.as_ref(),
                &cfg,
                &out,
            )?;
            print!("{}", report.table());
            println!("written to {}", out.display());
        }
        Command::Balance {
            image_embeddings,
            concept_embeddings,
            top_k,
            out,
            draws,
            samples_out,
            seed,
            cuda,
        } => {
            let r = ove_train::train::balance::run_balance(
                &image_embeddings,
                &concept_embeddings,
                top_k,
                draws,
                seed,
                &out,
                samples_out.as_deref(),
                if cuda {
                    ove_train::device::parse_device("cuda")?
                } else {
                    Device::Cpu
                },
            )?;
            println!(
                "{} images, {} concepts ({} used), top-{}: {} drawn",
                r.images, r.concepts, r.concepts_used, r.top_k, r.drawn
            );
            println!(
                "concept entropy before {:.4} nats, after {:.4} (flat: {:.4})",
                r.entropy_before, r.entropy_after, r.entropy_max
            );
            println!("weights written to {}", out.display());
        }
        Command::BenchTrain {
            preset,
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
        } => {
            let device = ove_train::device::parse_device(&device)?;
            let mut text = ove_train::train::bench::preset(&preset)?;
            if let Some(l) = layers {
                text.num_hidden_layers = l;
            }
            let bf16 = match dtype.as_deref() {
                None => device != Device::Cpu,
                Some("bf16") => true,
                Some("f32") => false,
                Some(other) => anyhow::bail!("--dtype {other:?}: expected bf16 or f32"),
            };
            let peak_flops = peak_tflops.map_or_else(
                || ove_train::train::run::default_peak_flops(device),
                |t| t * 1e12,
            );
            let cfg = ove_train::train::bench::BenchConfig {
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
            };
            let r = ove_train::train::bench::run_bench(&cfg, device)?;
            let t = &cfg.text;
            let mean = r.step_seconds.iter().sum::<f64>() / r.step_seconds.len() as f64;
            println!(
                "ove-train bench-train: {preset} text-only decoder (hidden {}, {} layers, {} q / {} kv heads x {}, MLP {}, vocab {}, tied {}), {:.3}B parameters",
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
                "RESULT impl=ove-train params={} tokens_per_step={} step_ms={:.1} tokens_per_s={:.0} mfu={:.2}% peak_tflops={:.0}",
                r.params,
                r.tokens_per_step,
                mean * 1e3,
                r.tokens_per_s,
                r.mfu * 100.0,
                r.peak_flops / 1e12
            );
            if let Some([f, b, o]) = r.phase_ms {
                println!(
                    "PHASES impl=ove-train forward+loss_ms={f:.1} backward_ms={b:.1} clip+adamw_ms={o:.1}"
                );
            }
        }
        Command::Recipe(c) => c.run()?,
        Command::Plot { metrics, out } => {
            let n = ove_train::plot::plot(&metrics, &out)?;
            println!("{n} steps plotted to {}", out.display());
        }
        Command::Resave {
            checkpoint,
            out,
            dtype,
            max_shard_bytes,
        } => {
            let loaded = load_model(&checkpoint, Device::Cpu)?;
            let opts = SaveOptions {
                dtype,
                max_shard_bytes,
            };
            save_checkpoint(
                &loaded.vs,
                &loaded.checkpoint.config,
                Some(&checkpoint),
                &out,
                &opts,
            )?;
            info!(out = %out.display(), "checkpoint saved");
        }
    }
    Ok(())
}
