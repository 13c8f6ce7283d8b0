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
        /// JSONL training samples (image paths relative to the file).
        #[arg(long)]
        data: PathBuf,
        /// Optimizer steps.
        #[arg(long)]
        steps: usize,
        /// Output checkpoint directory.
        #[arg(long)]
        out: PathBuf,
        /// Also save every N steps.
        #[arg(long)]
        save_every: Option<usize>,
        /// Dtype of the saved weights.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: SaveDtype,
        /// Largest shard in bytes; one file when left out.
        #[arg(long)]
        max_shard_bytes: Option<u64>,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: i64,
        /// Train on the GPU when one is available.
        #[arg(long)]
        cuda: bool,
    },
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
            steps,
            out,
            save_every,
            dtype,
            max_shard_bytes,
            seed,
            cuda,
        } => {
            let run = TrainRun {
                checkpoint,
                stage: StageConfig::load(&stage)?,
                data,
                steps,
                out,
                save_every,
                save: SaveOptions {
                    dtype,
                    max_shard_bytes,
                },
                device: if cuda {
                    Device::cuda_if_available()
                } else {
                    Device::Cpu
                },
                seed,
            };
            let history = run_training(&run)?;
            if let (Some(first), Some(last)) = (history.first(), history.last()) {
                println!(
                    "{} steps: loss {:.4} -> {:.4}; saved to {}",
                    history.len(),
                    first.loss,
                    last.loss,
                    run.out.display()
                );
            }
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
