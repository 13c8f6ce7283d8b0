//! The training loop behind `ove-train train`: load, freeze per the stage, read the data,
//! step through the schedule, save a checkpoint `ove export` takes as it is.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tch::Device;
use tracing::{info, warn};

use crate::checkpoint::{load_model, save_checkpoint, SaveOptions};
use crate::train::data::read_jsonl;
use crate::train::optim::AdamW;
use crate::train::packing::{pack, plan_bins, PackedBatch, Sample};
use crate::train::stage::{set_trainable, StageConfig};
use crate::train::step::{train_step, StepStats};

#[derive(Debug, Clone)]
pub struct TrainRun {
    /// Checkpoint to start from.
    pub checkpoint: PathBuf,
    pub stage: StageConfig,
    /// JSONL samples (see [`crate::train::data`]).
    pub data: PathBuf,
    /// Optimizer steps.
    pub steps: usize,
    /// Output checkpoint directory.
    pub out: PathBuf,
    /// Also save every this many steps (into `out`).
    pub save_every: Option<usize>,
    pub save: SaveOptions,
    pub device: Device,
    pub seed: i64,
}

/// The micro-batches of one step: packed rows of at most `pack_length` tokens, or one
/// sample per row. Samples longer than `pack_length` are dropped (as upstream does).
fn micro_batches(
    samples: &[&Sample],
    pack_length: Option<usize>,
    device: Device,
) -> Result<Vec<PackedBatch>> {
    match pack_length {
        None => samples
            .iter()
            .map(|s| pack(std::slice::from_ref(*s), device))
            .collect(),
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
                .map(|bin| {
                    let members: Vec<Sample> = bin.iter().map(|&i| samples[i].clone()).collect();
                    pack(&members, device)
                })
                .collect()
        }
    }
}

/// Runs the whole training; returns the statistics of every step.
pub fn run(cfg: &TrainRun) -> Result<Vec<StepStats>> {
    tch::manual_seed(cfg.seed);
    let loaded = load_model(&cfg.checkpoint, cfg.device)?;
    let split = set_trainable(&loaded.vs, &cfg.stage.trainable)?;
    info!(
        stage = %cfg.stage.name,
        trainable = split.trainable.len(),
        frozen = split.frozen.len(),
        "parameters"
    );
    let mut opt = AdamW::new(&loaded.vs, cfg.stage.adamw());
    let config = &loaded.checkpoint.config;
    let samples = read_jsonl(&cfg.data, config, loaded.checkpoint.preprocessor.as_ref())?;
    ensure!(!samples.is_empty(), "{}: no samples", cfg.data.display());
    info!(samples = samples.len(), "data read");

    let schedule = cfg.stage.schedule(cfg.steps);
    let gbs = cfg.stage.data.global_batch_size;
    let bar = ProgressBar::new(cfg.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut history = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        // Samples in file order, wrapping around.
        let chosen: Vec<&Sample> = (0..gbs)
            .map(|k| &samples[(step * gbs + k) % samples.len()])
            .collect();
        let micro = micro_batches(&chosen, cfg.stage.data.pack_length, cfg.device)?;
        if micro.iter().all(|b| b.num_targets == 0) {
            warn!(step, "no target tokens in this step; skipped");
            continue;
        }
        let stats = train_step(
            &loaded.model,
            &mut opt,
            &micro,
            schedule.lr(step),
            cfg.stage.optimizer.grad_clip,
        )?;
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
            "step"
        );
        history.push(stats);
        if let Some(every) = cfg.save_every {
            if every > 0 && (step + 1) % every == 0 && step + 1 < cfg.steps {
                save_checkpoint(
                    &loaded.vs,
                    config,
                    Some(&cfg.checkpoint),
                    &cfg.out,
                    &cfg.save,
                )?;
                info!(step, out = %cfg.out.display(), "checkpoint saved");
            }
        }
    }
    bar.finish();
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
