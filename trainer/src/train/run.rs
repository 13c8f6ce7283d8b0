//! The training loop behind `ove-train train`: load, freeze per the stage, read the data,
//! step through the schedule, save a checkpoint `ove export` takes as it is.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::Device;
use tracing::{info, warn};

use crate::checkpoint::{load_model, save_checkpoint, SaveOptions};
use crate::dist::reducer::GradReducer;
use crate::dist::zero::{unsharded_state_bytes, OptimizerMemory, ZeroAdamW};
use crate::dist::Dist;
use crate::train::binpack::SplitMix64;
use crate::train::data::{read_data, read_jsonl};
use crate::train::optim::AdamW;
use crate::train::pack_manifest::read_bins;
use crate::train::packing::{pack, plan_bins, PackedBatch, Sample};
use crate::train::resume::{self, DataCursor, TrainerState};
use crate::train::stage::{set_trainable, StageConfig};
use crate::train::step::{batch_loss_sum, train_step_with, StepOptimizer, StepStats, StepTimes};

#[derive(Debug, Clone)]
pub struct TrainRun {
    /// Checkpoint to start from.
    pub checkpoint: PathBuf,
    pub stage: StageConfig,
    /// JSONL samples (see [`crate::train::data`]).
    pub data: PathBuf,
    /// An `ove-train pack` output folder made from `data`: its bins are the rows (one
    /// micro-batch each); a step takes bins until it holds the global batch size in
    /// samples. Without it, a step's samples are packed as it goes (first fit, longest
    /// first) or run one per row.
    pub packed: Option<PathBuf>,
    /// Optimizer steps.
    pub steps: usize,
    /// Output checkpoint directory.
    pub out: PathBuf,
    /// Also save a resumable checkpoint every this many steps (`out/checkpoints`).
    pub save_every: Option<usize>,
    pub save: SaveOptions,
    pub device: Device,
    /// Seeds torch and the data order (each epoch reshuffled).
    pub seed: i64,
    /// Resume from a resumable checkpoint (a step directory, or a run's output directory:
    /// its latest checkpoint).
    pub resume: Option<PathBuf>,
    /// Stop (with a resumable checkpoint) once this many steps are done.
    pub stop_after: Option<usize>,
    /// Peak FLOP/s for the MFU estimate ([`default_peak_flops`] when `None`).
    pub peak_flops: Option<f64>,
    /// Held-out JSONL samples whose mean token loss is measured every `eval_every` steps
    /// and after the last one (`out/eval.jsonl`).
    pub eval_data: Option<PathBuf>,
    pub eval_every: Option<usize>,
    /// Parameters and compute in bf16, with f32 master weights and moments in AdamW (the
    /// GPU recipe); f32 otherwise. Checkpoints hold the bf16 weights (widened to --dtype).
    pub bf16: bool,
    /// ZeRO-1 (needs a process group): AdamW's moments and f32 masters sharded over the
    /// ranks.
    pub zero1: bool,
    /// Bytes of a gradient bucket in a data-parallel run (each starts its all-reduce as
    /// soon as the backward has made its gradients final).
    pub bucket_bytes: u64,
    /// How the decoder runs a step (checkpointed layers, loss chunks, packed attention).
    pub exec: crate::decoder::DecoderExec,
}

/// Mean token loss of `samples` (no gradients), in micro-batches of the stage's layout.
pub fn eval_loss(
    model: &crate::model::LlavaOneVision,
    samples: &[Sample],
    pack_length: Option<usize>,
    device: Device,
) -> Result<(f64, i64)> {
    tch::no_grad(|| {
        let (mut sum, mut count) = (0.0, 0i64);
        for chunk in samples.chunks(8) {
            let refs: Vec<&Sample> = chunk.iter().collect();
            for b in micro_batches(&refs, pack_length, device)? {
                let (s, n) = batch_loss_sum(model, &b)?;
                sum += s.double_value(&[]);
                count += n;
            }
        }
        ensure!(count > 0, "the evaluation samples have no target tokens");
        Ok((sum / count as f64, count))
    })
}

/// The micro-batches of one step: packed rows of at most `pack_length` tokens, or one
/// sample per row. Samples longer than `pack_length` are dropped (as upstream does).
fn micro_batches(
    samples: &[&Sample],
    pack_length: Option<usize>,
    device: Device,
) -> Result<Vec<PackedBatch>> {
    plan_micro_batches(samples, pack_length)
        .iter()
        .map(|members| pack(members, device))
        .collect()
}

/// Which samples each micro-batch of [`micro_batches`] holds (nothing packed yet, so that
/// a rank packs only its share).
fn plan_micro_batches(samples: &[&Sample], pack_length: Option<usize>) -> Vec<Vec<Sample>> {
    match pack_length {
        None => samples.iter().map(|s| vec![(*s).clone()]).collect(),
        Some(cap) => {
            let lengths: Vec<usize> = samples.iter().map(|s| s.len()).collect();
            let (bins, dropped) = plan_bins(&lengths, cap);
            if !dropped.is_empty() {
                warn!(
                    count = dropped.len(),
                    pack_length = cap,
                    "samples longer than the pack length dropped"
                );
            }
            bins.iter()
                .map(|bin| bin.iter().map(|&i| samples[i].clone()).collect())
                .collect()
        }
    }
}

/// Whether micro-batch `index` of a step is this rank's: round robin over the ranks.
fn is_mine(index: usize, dist: Option<&Dist>) -> bool {
    dist.is_none_or(|d| index % d.world() == d.rank())
}

/// The test knob for fault tests: `OVE_TRAIN_KILL_AT_STEP=N` (with `OVE_TRAIN_KILL_RANK=R`,
/// default 0) makes that rank kill itself with SIGKILL when step N begins, as a crash or
/// an OOM kill would.
fn fault_injection(step: usize, rank: usize) {
    let at = std::env::var("OVE_TRAIN_KILL_AT_STEP")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let who = std::env::var("OVE_TRAIN_KILL_RANK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    if at == Some(step) && who.unwrap_or(0) == rank {
        warn!(step, rank, "OVE_TRAIN_KILL_AT_STEP: killing this process");
        // SAFETY: kill(2) on our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// The sample order of one epoch: the file order shuffled by `SplitMix64(rng)`.
fn epoch_order(n: usize, rng: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::new(rng).shuffle(&mut order);
    order
}

/// One line of `OUT/metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub target_tokens: i64,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// Model FLOPs utilisation: 6 x parameters x tokens / seconds / peak FLOP/s (the
    /// attention term and the frozen parameters' saved backward work are ignored).
    pub mfu: f64,
    /// Rank 0's split of `seconds` (absent in metrics written before it existed).
    #[serde(default)]
    pub times: StepTimes,
    /// Data parallel: gradient buckets all-reduced, and how many of them started during
    /// the backward (0 and 0 in one process and with ZeRO-1).
    #[serde(default)]
    pub buckets: usize,
    #[serde(default)]
    pub buckets_in_backward: usize,
}

/// Peak FLOP/s for the MFU estimate when none is given: an H100's dense bf16 on CUDA,
/// a nominal 1 TFLOP/s on the CPU.
pub fn default_peak_flops(device: Device) -> f64 {
    match device {
        Device::Cpu => 1e12,
        _ => 989e12,
    }
}

/// Runs the training (from `cfg.resume` when set); returns the statistics of the steps
/// this call ran. Writes `OUT/metrics.jsonl` (appended to on resume), resumable
/// checkpoints every `save_every` steps and at `stop_after`, and the final checkpoint in
/// `OUT` when the last step is done. A non-finite loss or gradient norm stops the run
/// before the step is applied, with an error naming the last good checkpoint.
pub fn run(cfg: &TrainRun) -> Result<Vec<StepStats>> {
    run_in(cfg, None)
}

/// [`run`] as one rank of a data-parallel group (`None`: one process). Every rank draws
/// the same global batches and runs its share of their micro-batches (see
/// [`crate::dist`]); rank 0 writes the metrics, the evaluation and the checkpoints.
/// With `cfg.zero1` the optimizer state is sharded over the ranks.
pub fn run_in(cfg: &TrainRun, dist: Option<&Dist>) -> Result<Vec<StepStats>> {
    tch::manual_seed(cfg.seed);
    let main = dist.is_none_or(|d| d.is_main());
    ensure!(
        !cfg.zero1 || dist.is_some(),
        "ZeRO-1 shards the optimizer over a process group: launch with torchrun or \
         --nproc-per-node (WORLD_SIZE set)"
    );
    let resume_dir = cfg.resume.as_deref().map(resume::resolve).transpose()?;
    let state = resume_dir.as_deref().map(resume::read_state).transpose()?;
    let mut loaded = load_model(resume_dir.as_deref().unwrap_or(&cfg.checkpoint), cfg.device)?;
    loaded.model.decoder.exec = cfg.exec;
    if cfg.bf16 {
        // Before the optimizer exists: AdamW keeps an f32 master copy of every parameter
        // that is not f32.
        loaded.vs.bfloat16();
    }
    if let Some(d) = dist {
        d.broadcast_vars(&loaded.vs)
            .context("starting every rank from rank 0's weights")?;
    }
    let split = set_trainable(&loaded.vs, &cfg.stage.trainable)?;
    info!(
        stage = %cfg.stage.name,
        trainable = split.trainable.len(),
        frozen = split.frozen.len(),
        "parameters"
    );
    let mut full = AdamW::new(&loaded.vs, cfg.stage.adamw());
    let config = &loaded.checkpoint.config;
    let data = read_data(&cfg.data, config, loaded.checkpoint.preprocessor.as_ref())?;
    let samples = data.samples;
    ensure!(!samples.is_empty(), "{}: no samples", cfg.data.display());
    info!(samples = samples.len(), "data read");
    // What a step draws: single samples, or the offline bins (as sample indices).
    let units: Vec<Vec<usize>> = match &cfg.packed {
        None => (0..samples.len()).map(|i| vec![i]).collect(),
        Some(dir) => {
            let by_record: std::collections::HashMap<usize, usize> = data
                .records
                .iter()
                .enumerate()
                .map(|(i, &r)| (r, i))
                .collect();
            let mut units = Vec::new();
            for bin in read_bins(dir)? {
                let mut members = Vec::with_capacity(bin.len());
                for r in bin {
                    match by_record.get(&r) {
                        Some(&i) => members.push(i),
                        None => bail!(
                            "{}: a bin names record {r}, which {} does not have (was it \
                             packed from another manifest?)",
                            dir.display(),
                            cfg.data.display()
                        ),
                    }
                }
                if !members.is_empty() {
                    units.push(members);
                }
            }
            ensure!(!units.is_empty(), "{}: no bins", dir.display());
            info!(bins = units.len(), "offline bins read");
            units
        }
    };
    let eval_samples = match &cfg.eval_data {
        Some(p) => {
            let s = read_jsonl(p, config, loaded.checkpoint.preprocessor.as_ref())?;
            ensure!(!s.is_empty(), "{}: no evaluation samples", p.display());
            info!(samples = s.len(), "evaluation data read");
            s
        }
        None => Vec::new(),
    };
    let gbs = cfg.stage.data.global_batch_size;

    let mut cursor = DataCursor {
        epoch: 0,
        offset: 0,
        rng: SplitMix64::new(cfg.seed as u64).next_u64(),
    };
    let mut first_step = 0;
    if let (Some(dir), Some(st)) = (&resume_dir, &state) {
        let same = |what: &str, saved: String, now: String| {
            ensure!(
                saved == now,
                "{}: {what} was {saved}, this run has {now}; a resume must keep it",
                dir.display()
            );
            Ok(())
        };
        same("--steps", st.total_steps.to_string(), cfg.steps.to_string())?;
        same("--seed", st.seed.to_string(), cfg.seed.to_string())?;
        same("the stage", st.stage.clone(), cfg.stage.name.clone())?;
        same(
            "the global batch size",
            st.global_batch_size.to_string(),
            gbs.to_string(),
        )?;
        same(
            "the sample (or bin) count",
            st.samples.to_string(),
            units.len().to_string(),
        )?;
        resume::load_optimizer(dir, &mut full, st)?;
        first_step = st.step;
        cursor = st.data;
        info!(from = %dir.display(), step = first_step, "resumed");
    }
    let mut order = epoch_order(units.len(), cursor.rng);
    let mut opt = match (dist, cfg.zero1) {
        (Some(d), true) => Held::Zero1(Box::new(ZeroAdamW::from_full(full, d)?), d),
        _ => Held::Full(full),
    };
    let mut reducer = match (&opt, dist) {
        (Held::Full(o), Some(d)) => Some(GradReducer::new(
            d,
            &o.tensors(),
            &loaded.model.decoder.head_only_params(),
            cfg.bucket_bytes,
        )?),
        _ => None,
    };

    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    if resume_dir.is_none() {
        // A fresh run into an old output folder starts a fresh evaluation log.
        let _ = std::fs::remove_file(cfg.out.join("eval.jsonl"));
    }
    let metrics_path = cfg.out.join("metrics.jsonl");
    // Rank 0 alone writes the run's files.
    let mut metrics = if main {
        Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(resume_dir.is_some())
                .write(true)
                .truncate(resume_dir.is_none())
                .open(&metrics_path)
                .with_context(|| format!("opening {}", metrics_path.display()))?,
        )
    } else {
        None
    };
    if let Some(d) = dist {
        report_distributed(cfg, d, &opt)?;
    }
    let n_params: i64 = loaded
        .vs
        .variables()
        .values()
        .map(|t| t.numel() as i64)
        .sum();
    let peak_flops = cfg
        .peak_flops
        .unwrap_or_else(|| default_peak_flops(cfg.device));

    let schedule = cfg.stage.schedule(cfg.steps);
    let end = cfg.stop_after.map_or(cfg.steps, |s| s.min(cfg.steps));
    let bar = if main {
        ProgressBar::new(cfg.steps as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_position(first_step as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut last_good = resume_dir.clone();
    let mut history = Vec::with_capacity(end.saturating_sub(first_step));
    for step in first_step..end {
        fault_injection(step, dist.map_or(0, |d| d.rank()));
        let mut chosen: Vec<&[usize]> = Vec::with_capacity(gbs);
        let mut count = 0;
        while count < gbs {
            if cursor.offset == units.len() {
                cursor.epoch += 1;
                cursor.offset = 0;
                cursor.rng = SplitMix64::new(cursor.rng).next_u64();
                order = epoch_order(units.len(), cursor.rng);
            }
            let unit = &units[order[cursor.offset]];
            count += unit.len();
            chosen.push(unit);
            cursor.offset += 1;
        }
        let plan: Vec<Vec<Sample>> = if cfg.packed.is_some() {
            chosen
                .iter()
                .map(|bin| bin.iter().map(|&i| samples[i].clone()).collect())
                .collect()
        } else {
            let flat: Vec<&Sample> = chosen
                .iter()
                .flat_map(|u| u.iter().map(|&i| &samples[i]))
                .collect();
            plan_micro_batches(&flat, cfg.stage.data.pack_length)
        };
        // The whole step's figures, which every rank knows from the plan.
        let tokens: usize = plan.iter().flatten().map(|s| s.len()).sum();
        if plan.iter().flatten().all(|s| s.num_targets() == 0) {
            warn!(step, "no target tokens in this step; skipped");
            continue;
        }
        let micro = plan
            .iter()
            .enumerate()
            .filter(|(i, _)| is_mine(*i, dist))
            .map(|(_, members)| pack(members, cfg.device))
            .collect::<Result<Vec<_>>>()?;
        let started = Instant::now();
        let step_opt = match (&mut opt, reducer.as_mut()) {
            (Held::Full(o), None) => StepOptimizer::Local(o),
            (Held::Full(o), Some(r)) => StepOptimizer::DataParallel(o, r),
            (Held::Zero1(o, d), _) => StepOptimizer::Zero1(o, d),
        };
        let stats = train_step_with(
            &loaded.model,
            step_opt,
            &micro,
            schedule.lr(step),
            cfg.stage.optimizer.grad_clip,
        )
        .with_context(|| {
            format!(
                "training stopped at step {step}; last good checkpoint: {}",
                last_good
                    .as_ref()
                    .map_or("none (no checkpoint saved yet)".to_string(), |p| p
                        .display()
                        .to_string())
            )
        })?;
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        let line = StepMetrics {
            step,
            loss: stats.loss,
            lr: stats.lr,
            grad_norm: stats.grad_norm,
            tokens,
            target_tokens: stats.targets,
            seconds,
            tokens_per_s: tokens as f64 / seconds,
            mfu: 6.0 * n_params as f64 * tokens as f64 / seconds / peak_flops,
            times: stats.times,
            buckets: stats.reduce.map_or(0, |r| r.buckets),
            buckets_in_backward: stats.reduce.map_or(0, |r| r.in_backward),
        };
        if let Some(metrics) = metrics.as_mut() {
            serde_json::to_writer(&mut *metrics, &line)
                .with_context(|| format!("writing {}", metrics_path.display()))?;
            metrics
                .write_all(b"\n")
                .and_then(|()| metrics.flush())
                .with_context(|| format!("writing {}", metrics_path.display()))?;
        }
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} |g| {:.3}",
            stats.loss, stats.lr, stats.grad_norm
        ));
        bar.inc(1);
        info!(
            step,
            loss = stats.loss,
            lr = stats.lr,
            grad_norm = stats.grad_norm,
            tokens_per_s = line.tokens_per_s,
            "step"
        );
        history.push(stats);
        let done = step + 1;
        let eval_now = cfg
            .eval_every
            .is_some_and(|every| every > 0 && done % every == 0)
            || done == end;
        if main && !eval_samples.is_empty() && eval_now {
            let (loss, tokens) = eval_loss(
                &loaded.model,
                &eval_samples,
                cfg.stage.data.pack_length,
                cfg.device,
            )?;
            let path = cfg.out.join("eval.jsonl");
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            writeln!(
                f,
                "{}",
                serde_json::json!({"step": step, "eval_loss": loss, "eval_tokens": tokens})
            )
            .with_context(|| format!("writing {}", path.display()))?;
            bar.println(format!(
                "step {done}: eval loss {loss:.4} ({tokens} tokens)"
            ));
            info!(step, eval_loss = loss, "eval");
        }
        let periodic = cfg
            .save_every
            .is_some_and(|every| every > 0 && done % every == 0);
        if (periodic || done == end) && done < cfg.steps {
            // ZeRO-1's shards are gathered on every rank; rank 0 writes.
            let gathered;
            let full = match &opt {
                Held::Full(o) => o,
                Held::Zero1(o, d) => {
                    gathered = o.gather(d)?;
                    &gathered
                }
            };
            if !main {
                continue;
            }
            let state = TrainerState {
                step: done,
                optimizer_steps: full.steps,
                total_steps: cfg.steps,
                seed: cfg.seed,
                stage: cfg.stage.name.clone(),
                global_batch_size: gbs,
                samples: units.len(),
                data: cursor,
            };
            let dir = resume::save_resumable(
                &cfg.out,
                &loaded.vs,
                config,
                Some(&cfg.checkpoint),
                full,
                &state,
            )?;
            info!(step = done, dir = %dir.display(), "resumable checkpoint saved");
            last_good = Some(dir);
        }
    }
    bar.finish();
    if end < cfg.steps {
        info!(
            step = end,
            "stopped early (--stop-after); resume with --resume"
        );
        return Ok(history);
    }
    if !main {
        return Ok(history);
    }
    save_checkpoint(
        &loaded.vs,
        config,
        Some(&cfg.checkpoint),
        &cfg.out,
        &cfg.save,
    )?;
    info!(out = %cfg.out.display(), "checkpoint saved");
    Ok(history)
}

/// The optimizer a run holds: one process's state, or this rank's ZeRO-1 shard and the
/// group it is sharded over.
enum Held<'a> {
    Full(AdamW),
    Zero1(Box<ZeroAdamW>, &'a Dist),
}

/// Logs the optimizer state held per rank, and (rank 0) writes it with the group's shape
/// to `OUT/distributed.json`.
fn report_distributed(cfg: &TrainRun, dist: &Dist, opt: &Held) -> Result<()> {
    let memory = match opt {
        Held::Zero1(o, _) => o.memory(dist.world()),
        Held::Full(o) => {
            let bytes = unsharded_state_bytes(o);
            OptimizerMemory {
                world: dist.world(),
                trained_params: o.params.iter().map(|p| p.param.numel() as i64).sum(),
                state_bytes_per_rank: bytes,
                state_bytes_unsharded: bytes,
            }
        }
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    info!(
        rank = dist.rank(),
        world = dist.world(),
        zero1 = cfg.zero1,
        optimizer_state_mib_per_rank = mib(memory.state_bytes_per_rank),
        optimizer_state_mib_unsharded = mib(memory.state_bytes_unsharded),
        "optimizer memory"
    );
    if dist.is_main() {
        let path = cfg.out.join("distributed.json");
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "world_size": dist.world(),
            // Who hosted the store: a launcher's agent (torchrun, --nproc-per-node) or rank 0.
            "agent_store": dist.env.agent_store,
            "restart": dist.env.restart,
            "zero1": cfg.zero1,
            "optimizer_memory": memory,
        }))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
