//! Resumable, atomic training checkpoints.
//!
//! A checkpoint is a directory `OUT/checkpoints/step-NNNNNNNN` holding
//! - the model as a Hugging Face checkpoint (f32, one file; `load_model` takes it);
//! - `optimizer.safetensors`: `exp_avg.{name}` and `exp_avg_sq.{name}` of every trained
//!   parameter;
//! - `trainer_state.json` ([`TrainerState`]): steps done (the scheduler position and the
//!   AdamW step count), the data cursor and its RNG state, the settings a resume must
//!   share with the run it continues.
//!
//! It is written into `step-NNNNNNNN.tmp` and renamed when complete, then
//! `OUT/checkpoints/latest` (a file naming it) is replaced by a rename too, so a run
//! killed at any point leaves the previous checkpoint whole and `latest` naming a
//! complete one. Only the last [`KEEP`] checkpoints are kept.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use ove_core::config::ModelConfig;

use crate::checkpoint::{save_checkpoint, SaveDtype, SaveOptions};
use crate::train::optim::AdamW;

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const LATEST_FILE: &str = "latest";
/// Checkpoints kept in `OUT/checkpoints`.
pub const KEEP: usize = 2;

/// Where the data stream is: the sample order of an epoch is the file order shuffled by
/// `SplitMix64(rng)`; `offset` samples of it were used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    pub epoch: u64,
    pub offset: usize,
    /// RNG state the current epoch's order was drawn from.
    pub rng: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done (the next step's schedule position).
    pub step: usize,
    /// AdamW's own step count (bias correction).
    pub optimizer_steps: i64,
    pub total_steps: usize,
    pub seed: i64,
    pub stage: String,
    pub global_batch_size: usize,
    pub samples: usize,
    pub data: DataCursor,
}

/// The checkpoint directory of a step.
pub fn step_dir(out: &Path, step: usize) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:08}"))
}

/// Writes a resumable checkpoint atomically (see the module docs); returns its directory.
pub fn save_resumable(
    out: &Path,
    vs: &VarStore,
    config: &ModelConfig,
    source: Option<&Path>,
    opt: &AdamW,
    state: &TrainerState,
) -> Result<PathBuf> {
    let root = out.join("checkpoints");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let dir = step_dir(out, state.step);
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let opts = SaveOptions {
        dtype: SaveDtype::F32,
        max_shard_bytes: None,
    };
    save_checkpoint(vs, config, source, &tmp, &opts)?;
    let mut moments: Vec<(String, Tensor)> = Vec::with_capacity(2 * opt.params.len());
    for p in &opt.params {
        moments.push((format!("exp_avg.{}", p.name), p.exp_avg.shallow_clone()));
        moments.push((
            format!("exp_avg_sq.{}", p.name),
            p.exp_avg_sq.shallow_clone(),
        ));
    }
    if !moments.is_empty() {
        let path = tmp.join(OPTIMIZER_FILE);
        Tensor::write_safetensors(&moments, &path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let state_path = tmp.join(STATE_FILE);
    std::fs::write(&state_path, serde_json::to_string_pretty(state)?)
        .with_context(|| format!("writing {}", state_path.display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    let latest_tmp = root.join(format!("{LATEST_FILE}.tmp"));
    let name = dir.file_name().expect("a step directory name");
    std::fs::write(&latest_tmp, name.to_string_lossy().as_bytes())
        .with_context(|| format!("writing {}", latest_tmp.display()))?;
    std::fs::rename(&latest_tmp, root.join(LATEST_FILE))
        .with_context(|| format!("renaming {} to {LATEST_FILE}", latest_tmp.display()))?;
    // Older checkpoints beyond the last KEEP.
    let mut steps: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| format!("listing {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.extension().is_none()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    steps.sort();
    if steps.len() > KEEP {
        for old in &steps[..steps.len() - KEEP] {
            std::fs::remove_dir_all(old)
                .with_context(|| format!("removing the old checkpoint {}", old.display()))?;
        }
    }
    Ok(dir)
}

/// The checkpoint `--resume` names: a step directory, or a run's output directory or its
/// `checkpoints` directory (then the one `latest` names).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    for root in [path.join("checkpoints"), path.to_path_buf()] {
        let latest = root.join(LATEST_FILE);
        if latest.is_file() {
            let name = std::fs::read_to_string(&latest)
                .with_context(|| format!("reading {}", latest.display()))?;
            let dir = root.join(name.trim());
            ensure!(
                dir.join(STATE_FILE).is_file(),
                "{} names {}, which has no {STATE_FILE}",
                latest.display(),
                dir.display()
            );
            return Ok(dir);
        }
    }
    bail!(
        "{}: not a resumable checkpoint (no {STATE_FILE}, no checkpoints/{LATEST_FILE})",
        path.display()
    )
}

pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Loads the AdamW moments and step count saved in `dir` into `opt`; the trained
/// parameters must be exactly the saved ones.
pub fn load_optimizer(dir: &Path, opt: &mut AdamW, state: &TrainerState) -> Result<()> {
    let path = dir.join(OPTIMIZER_FILE);
    let saved: std::collections::HashMap<String, Tensor> = if path.is_file() {
        Tensor::read_safetensors(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .into_iter()
            .collect()
    } else {
        Default::default()
    };
    ensure!(
        saved.len() == 2 * opt.params.len(),
        "{}: {} moment tensors for {} trained parameters (was the stage changed?)",
        path.display(),
        saved.len(),
        opt.params.len()
    );
    tch::no_grad(|| -> Result<()> {
        for p in &mut opt.params {
            for (prefix, dst) in [
                ("exp_avg", &mut p.exp_avg),
                ("exp_avg_sq", &mut p.exp_avg_sq),
            ] {
                let key = format!("{prefix}.{}", p.name);
                let src = saved
                    .get(&key)
                    .with_context(|| format!("{}: no {key}", path.display()))?;
                ensure!(
                    src.size() == dst.size(),
                    "{key}: shape {:?}, the parameter's {:?}",
                    src.size(),
                    dst.size()
                );
                dst.copy_(&src.to_device(dst.device()).to_kind(dst.kind()));
            }
        }
        Ok(())
    })?;
    opt.steps = state.optimizer_steps;
    Ok(())
}
