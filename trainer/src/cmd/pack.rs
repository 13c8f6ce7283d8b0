//! `ove-train pack`: offline packing of a training set into bins of at most `--max-len`
//! tokens: every sample's full length (text + image tokens from the image headers),
//! over-long samples dropped, exact fits first, then greedy fills under a minimum fill
//! ratio. `ove-train train --packed` then trains on the bins, with no padding to speak of
//! ([`crate::train::binpack`] packs, [`crate::train::pack_manifest`] reads and writes).

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};

use crate::train::binpack::{default_min_fill, PackConfig};
use crate::train::pack_manifest::pack_manifest;

/// The arguments of `ove-train pack`.
#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// Training data, as for `train --data`: a JSONL manifest, a WebDataset-style .tar
    /// shard, a directory of shards or a `shard-*.tar` pattern. Corrupt images are
    /// skipped and counted.
    #[arg(long)]
    pub data: PathBuf,
    /// Checkpoint whose config.json / preprocessor_config.json give the image token
    /// counts (only the configs are read).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Bin capacity in tokens.
    #[arg(long, default_value_t = 8192)]
    pub max_len: u32,
    /// Seed for which sample goes where and the bin order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Minimum fill ratios, strictest first (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = default_min_fill())]
    pub min_fill: Vec<f64>,
    /// Independent shards packed in parallel (the result depends on this, not on threads).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

impl PackArgs {
    /// Packs `--data` into `--out` (bins-*.jsonl, report.json) and prints the report.
    pub fn run(self) -> Result<()> {
        ensure!(self.max_len > 0, "--max-len must be positive");
        ensure!(
            self.min_fill.iter().all(|r| (0.0..=1.0).contains(r)),
            "--min-fill ratios must lie in [0, 1]"
        );
        let ckpt = ove_core::checkpoint::Checkpoint::open(&self.checkpoint)
            .with_context(|| format!("opening checkpoint {}", self.checkpoint.display()))?;
        let cfg = PackConfig {
            capacity: self.max_len,
            min_fill: self.min_fill,
            seed: self.seed,
            shards: self.shards,
        };
        let report = pack_manifest(
            &self.data,
            &ckpt.config,
            ckpt.preprocessor.as_ref(),
            &cfg,
            &self.out,
        )?;
        print!("{}", report.table());
        println!("written to {}", self.out.display());
        Ok(())
    }
}
