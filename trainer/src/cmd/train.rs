//! `ove-train train`: one stage of training (stage1, stage1_5, stage2 or a TOML stage
//! file) from a checkpoint on JSONL samples or tar shards, saved as a checkpoint `ove
//! export` takes as it is; resumable, with optional held-out evaluation
//! ([`crate::train::run`] runs the loop).
//!
//! Here the command line becomes a [`TrainRun`]: the device (`--cuda` is `--device cuda`),
//! the stage's schedule defaults for `--steps`, `--save-every` and `--eval-every`, and the
//! precision (bf16 on a GPU, f32 on the CPU unless `--precision` says otherwise).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tch::Device;
use tracing::info;

use super::LOG_TARGET;
use crate::checkpoint::{SaveDtype, SaveOptions};
use crate::cmd::exec::ExecArgs;
use crate::device::parse_device;
use crate::dist::launch::run_local_ranks;
use crate::dist::{Dist, LaunchEnv};
use crate::train::run::{run_in, TrainRun};
use crate::train::StageConfig;

/// Training precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    F32,
    Bf16,
}

/// The arguments of `ove-train train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Checkpoint to start from.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Stage: a built-in name (stage1, stage1_5, stage2) or a TOML file.
    #[arg(long)]
    pub stage: String,
    /// Training samples: a JSONL file (image paths relative to it), a WebDataset-style
    /// .tar shard (KEY.json + KEY.png / KEY.0.png ...), a directory of shards or a
    /// `shard-*.tar` pattern. A sample whose image is corrupt is skipped and counted.
    #[arg(long)]
    pub data: PathBuf,
    /// Train on the bins `ove-train pack` wrote from --data (its output folder): each
    /// bin is one row; a step takes bins until it has the global batch size in samples.
    #[arg(long, value_name = "DIR")]
    pub packed: Option<PathBuf>,
    /// Optimizer steps (default: the stage's schedule.max_steps).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Output checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Also save a resumable checkpoint (OUT/checkpoints/step-N) every N steps
    /// (default: the stage's schedule.save_every).
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Held-out samples (JSONL, as --data) whose mean token loss goes to OUT/eval.jsonl
    /// every --eval-every steps and after the last.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Evaluation interval in steps (default: the stage's schedule.eval_every).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Dtype of the saved weights.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: SaveDtype,
    /// Largest shard in bytes; one file when left out.
    #[arg(long)]
    pub max_shard_bytes: Option<u64>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Train on the first GPU (the same as `--device cuda`): an error saying why when CUDA
    /// cannot be loaded or no GPU is visible, never a silent run on the CPU.
    #[arg(long)]
    pub cuda: bool,
    /// Device: cpu, cuda or cuda:N (an error when the GPU is not there).
    #[arg(long, conflicts_with = "cuda")]
    pub device: Option<String>,
    /// Resume from a resumable checkpoint: OUT/checkpoints/step-N, or a run's OUT
    /// (its latest). --steps, --seed, the stage and the data must be the same.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Stop after this many steps (of --steps), leaving a resumable checkpoint.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Peak TFLOP/s of the device for the MFU estimate in metrics.jsonl (default: 989
    /// on CUDA, an H100's dense bf16; 1 on the CPU).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Training precision: bf16 (bf16 parameters and compute, f32 master weights and
    /// AdamW moments) or f32. Default: bf16 on a GPU, f32 on the CPU.
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Shard AdamW's moments and f32 master weights over the ranks of a data-parallel
    /// run (ZeRO-1): each rank holds 1/WORLD_SIZE of the optimizer state.
    #[arg(long)]
    pub zero1: bool,
    /// MiB of a gradient bucket in a data-parallel run (not ZeRO-1): each bucket starts its
    /// all-reduce as soon as the backward has made all its gradients final, so smaller
    /// buckets overlap more of the communication with the backward, larger ones cost
    /// fewer collectives. PyTorch DDP's default.
    #[arg(long, default_value_t = 25.0, value_name = "MIB")]
    pub bucket_mib: f64,
    /// Start this many ranks on this machine (data parallel: Gloo on the CPU, NCCL on
    /// GPUs, one GPU a rank), as
    /// `torchrun --nproc-per-node N --no-python ove-train train ...` does.
    #[arg(long, value_name = "N")]
    pub nproc_per_node: Option<usize>,
    /// Seconds a collective may wait for the other ranks: a rank that died or hangs
    /// makes the others stop with an error after at most this long.
    #[arg(long, default_value_t = 300, value_name = "S")]
    pub dist_timeout_s: u64,
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// The device `--device` / `--cuda` name: `--cuda` is `--device cuda` (a GPU or an error
/// saying why, never the CPU in disguise); neither is the CPU.
pub fn train_device(device: Option<&str>, cuda: bool) -> Result<Device> {
    match device {
        Some(d) => parse_device(d),
        None if cuda => parse_device("cuda"),
        None => Ok(Device::Cpu),
    }
}

impl TrainArgs {
    /// The run these arguments describe: the device, the stage (loaded) and its schedule's
    /// defaults, the precision.
    pub fn into_run(self) -> Result<TrainRun> {
        let device = train_device(self.device.as_deref(), self.cuda)?;
        let stage = StageConfig::load(&self.stage)?;
        let steps = self.steps.or(stage.schedule.max_steps).with_context(|| {
            format!(
                "stage {}: give --steps or schedule.max_steps in the stage file",
                stage.name
            )
        })?;
        let save_every = self.save_every.or(stage.schedule.save_every);
        let eval_every = self.eval_every.or(stage.schedule.eval_every);
        ensure!(
            self.bucket_mib.is_finite() && self.bucket_mib > 0.0,
            "--bucket-mib must be a positive number of MiB, not {}",
            self.bucket_mib
        );
        Ok(TrainRun {
            checkpoint: self.checkpoint,
            stage,
            data: self.data,
            packed: self.packed,
            steps,
            out: self.out,
            save_every,
            eval_data: self.eval_data,
            eval_every,
            save: SaveOptions {
                dtype: self.dtype,
                max_shard_bytes: self.max_shard_bytes,
            },
            device,
            seed: self.seed,
            resume: self.resume,
            stop_after: self.stop_after,
            peak_flops: self.peak_tflops.map(|t| t * 1e12),
            bf16: match self.precision {
                Some(p) => p == Precision::Bf16,
                None => device != Device::Cpu,
            },
            zero1: self.zero1,
            bucket_bytes: (self.bucket_mib * (1u64 << 20) as f64).round().max(1.0) as u64,
            exec: self.exec.exec()?,
        })
    }

    /// Trains and prints the first and last loss and where the result went.
    pub fn run(self) -> Result<()> {
        let timeout = Duration::from_secs(self.dist_timeout_s.max(1));
        if let Some(n) = self.nproc_per_node {
            return run_local_ranks(n, timeout);
        }
        // Under torchrun (or a plain env launch) WORLD_SIZE and friends say who we are;
        // what this rank cannot run (a bad stage, no GPU) is refused before it joins (and
        // keeps) the others. On GPUs each rank trains on cuda:LOCAL_RANK, over NCCL.
        let env = LaunchEnv::from_env()?;
        let mut run = self.into_run()?;
        if let (Some(e), true) = (&env, run.device.is_cuda()) {
            run.device = Device::Cuda(e.local_rank);
        }
        let dist = env
            .map(|e| Dist::init(e, timeout, run.device))
            .transpose()?;
        info!(
            target: LOG_TARGET,
            precision = if run.bf16 { "bf16 (f32 masters)" } else { "f32" },
            device = ?run.device,
            "training"
        );
        let history = run_in(&run, dist.as_ref())?;
        if dist.as_ref().is_some_and(|d| !d.is_main()) {
            return Ok(());
        }
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--cuda` is `--device cuda`: the same GPU, or the same error with its reason.
    #[test]
    fn cuda_flag_is_device_cuda() {
        let flag = train_device(None, true).map_err(|e| format!("{e:#}"));
        let named = train_device(Some("cuda"), false).map_err(|e| format!("{e:#}"));
        assert_eq!(flag, named);
    }

    #[test]
    fn no_device_is_the_cpu_and_a_named_one_wins() {
        assert_eq!(train_device(None, false).unwrap(), Device::Cpu);
        assert_eq!(train_device(Some("cpu"), false).unwrap(), Device::Cpu);
        assert_eq!(train_device(Some("cpu"), true).unwrap(), Device::Cpu);
        assert!(train_device(Some("gpu"), false).is_err());
    }
}
