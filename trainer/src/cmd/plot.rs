//! `ove-train plot`: draws a run's `metrics.jsonl` (loss, learning rate, gradient norm,
//! tokens/s against the step) as a PNG, to look at a run without other tools
//! ([`crate::plot`] does the drawing).

use std::path::PathBuf;

use anyhow::Result;

/// The arguments of `ove-train plot`.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// The run's metrics: OUT/metrics.jsonl.
    #[arg(long)]
    pub metrics: PathBuf,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
}

impl PlotArgs {
    /// Plots `--metrics` to `--out` and says how many steps it plotted.
    pub fn run(self) -> Result<()> {
        let n = crate::plot::plot(&self.metrics, &self.out)?;
        println!("{n} steps plotted to {}", self.out.display());
        Ok(())
    }
}
