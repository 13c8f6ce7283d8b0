//! `ove-train resave`: loads a checkpoint with the strict name and shape checks and saves
//! it again, to change the saved dtype or the sharding (or to check that a checkpoint
//! loads at all).

use std::path::PathBuf;

use anyhow::Result;
use tch::Device;
use tracing::info;

use super::LOG_TARGET;
use crate::checkpoint::{load_model, save_checkpoint, SaveDtype, SaveOptions};

/// The arguments of `ove-train resave`.
#[derive(Debug, clap::Args)]
pub struct ResaveArgs {
    /// Source checkpoint directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output directory (config.json, weights and side files).
    #[arg(long)]
    pub out: PathBuf,
    /// Dtype of the saved weights.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: SaveDtype,
    /// Largest shard in bytes (e.g. 5000000000); one file when left out.
    #[arg(long)]
    pub max_shard_bytes: Option<u64>,
}

impl ResaveArgs {
    /// Loads `--checkpoint` on the CPU and saves it to `--out` (side files copied).
    pub fn run(self) -> Result<()> {
        let loaded = load_model(&self.checkpoint, Device::Cpu)?;
        let opts = SaveOptions {
            dtype: self.dtype,
            max_shard_bytes: self.max_shard_bytes,
        };
        save_checkpoint(
            &loaded.vs,
            &loaded.checkpoint.config,
            Some(&self.checkpoint),
            &self.out,
            &opts,
        )?;
        info!(target: LOG_TARGET, out = %self.out.display(), "checkpoint saved");
        Ok(())
    }
}
