//! Stage configs (TOML): which parameters train, the optimizer, the schedule and the data
//! layout of one training stage. The three upstream stages ship in `trainer/configs/`
//! and are built in under their names (`stage1`, `stage1_5`, `stage2`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

use crate::train::optim::AdamWConfig;
use crate::train::schedule::LrSchedule;

/// The built-in stage files, by name.
pub const PRESETS: &[(&str, &str)] = &[
    ("stage1", include_str!("../../configs/stage1.toml")),
    ("stage1_5", include_str!("../../configs/stage1_5.toml")),
    ("stage2", include_str!("../../configs/stage2.toml")),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Parameter-name prefixes that train, e.g. `["visual.merger"]`; `["all"]` trains
    /// everything. Every other parameter is frozen (no gradient, no optimizer state).
    pub trainable: Vec<String>,
    pub optimizer: OptimizerConfig,
    pub data: DataConfig,
    /// Length and intervals; the command line's --steps / --save-every / --eval-every win.
    #[serde(default)]
    pub schedule: ScheduleConfig,
}

/// `[schedule]`: how long a stage runs and how often it checkpoints and evaluates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Optimizer steps (when --steps is not given).
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Save a resumable checkpoint every this many steps.
    #[serde(default)]
    pub save_every: Option<usize>,
    /// Evaluate the loss on --eval-data every this many steps (and after the last).
    #[serde(default)]
    pub eval_every: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Fraction of the steps spent warming up linearly (0.002 upstream).
    pub warmup_ratio: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm limit.
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Samples per optimizer step (summed over micro-batches).
    pub global_batch_size: usize,
    /// Pack samples into rows of at most this many tokens; absent: one sample per row.
    #[serde(default)]
    pub pack_length: Option<usize>,
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_eps() -> f64 {
    1e-8
}
fn default_grad_clip() -> f64 {
    1.0
}

impl StageConfig {
    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml(origin: &str, text: &str) -> Result<Self> {
        let cfg: Self =
            toml::from_str(text).with_context(|| format!("{origin}: invalid stage config"))?;
        cfg.validate()
            .with_context(|| format!("{origin}: invalid stage config"))?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_toml(&path.display().to_string(), &text)
    }

    /// A built-in stage by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Self> {
        match PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, text)) => Self::from_toml(n, text),
            None => Self::from_file(Path::new(name_or_path)),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let o = &self.optimizer;
        if self.trainable.is_empty() {
            bail!("trainable: empty (nothing would train)");
        }
        if !(o.lr > 0.0 && o.min_lr >= 0.0 && o.min_lr <= o.lr) {
            bail!(
                "optimizer: need 0 <= min_lr <= lr and lr > 0 (lr {}, min_lr {})",
                o.lr,
                o.min_lr
            );
        }
        if !(0.0..1.0).contains(&o.warmup_ratio) {
            bail!(
                "optimizer.warmup_ratio: {} is not in [0, 1)",
                o.warmup_ratio
            );
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            bail!("optimizer: betas must be in [0, 1)");
        }
        if o.grad_clip <= 0.0 {
            bail!("optimizer.grad_clip: must be positive");
        }
        if self.data.global_batch_size == 0 {
            bail!("data.global_batch_size: must be positive");
        }
        let sc = &self.schedule;
        for (key, v) in [
            ("max_steps", sc.max_steps),
            ("save_every", sc.save_every),
            ("eval_every", sc.eval_every),
        ] {
            if v == Some(0) {
                bail!("schedule.{key}: must be positive");
            }
        }
        Ok(())
    }

    pub fn adamw(&self) -> AdamWConfig {
        let o = &self.optimizer;
        AdamWConfig {
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
        }
    }

    /// The schedule over `total_steps` optimizer steps (at least one warmup step).
    pub fn schedule(&self, total_steps: usize) -> LrSchedule {
        let o = &self.optimizer;
        LrSchedule {
            peak_lr: o.lr,
            min_lr: o.min_lr,
            warmup_steps: ((o.warmup_ratio * total_steps as f64).ceil() as usize).max(1),
            total_steps,
        }
    }
}

/// Which parameters train after [`set_trainable`].
#[derive(Debug, Clone, Default)]
pub struct TrainableSplit {
    pub trainable: Vec<String>,
    pub frozen: Vec<String>,
}

/// Makes exactly the parameters under `prefixes` (dot-separated module paths, or `"all"`)
/// require gradients and freezes every other one. A prefix that matches no parameter is
/// an error (a typo would otherwise silently freeze the whole model).
pub fn set_trainable(vs: &VarStore, prefixes: &[String]) -> Result<TrainableSplit> {
    let all = prefixes.iter().any(|p| p == "all");
    let matches = |name: &str, prefix: &str| {
        name == prefix
            || name
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.'))
    };
    let mut vars: Vec<_> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for p in prefixes.iter().filter(|p| *p != "all") {
        if !vars.iter().any(|(n, _)| matches(n, p)) {
            bail!("trainable: {p:?} matches no parameter of the model");
        }
    }
    let mut split = TrainableSplit::default();
    for (name, mut t) in vars {
        let train = all || prefixes.iter().any(|p| matches(&name, p));
        let _ = t.requires_grad_(train);
        if !train {
            t.zero_grad();
        }
        if train {
            split.trainable.push(name);
        } else {
            split.frozen.push(name);
        }
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse() {
        for (name, _) in PRESETS {
            let s = StageConfig::load(name).unwrap();
            assert_eq!(&s.name, name);
            let sched = s.schedule(1000);
            assert!(sched.warmup_steps >= 1);
        }
        assert_eq!(
            StageConfig::load("stage1").unwrap().trainable,
            vec!["visual.merger"]
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = PRESETS[0]
            .1
            .replace("[optimizer]", "[optimizer]\nlearning_rate = 3.0");
        let err = format!("{:#}", StageConfig::from_toml("x.toml", &text).unwrap_err());
        assert!(err.contains("learning_rate"), "{err}");
    }
}
