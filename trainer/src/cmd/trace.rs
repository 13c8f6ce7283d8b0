//! `ove-train trace`: runs a golden-style case through the model and writes every
//! intermediate (vision tokens, image embeddings, prompt logits, greedy ids) under the
//! golden `expected.safetensors` names, so a checkpoint can be checked against the
//! reference tensor by tensor ([`crate::trace`] does the work).

use std::path::PathBuf;

use anyhow::{Context, Result};
use tch::Device;
use tracing::info;

use ove_core::tensor_file::{read_safetensors, write_safetensors};

use super::LOG_TARGET;
use crate::checkpoint::load_model;
use crate::trace::{compare, trace_case, PixelSource};

/// The arguments of `ove-train trace`.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// Checkpoint directory (config.json, weights, preprocessor_config.json).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Case directory: case.json, its images (and expected.safetensors).
    #[arg(long)]
    pub case: PathBuf,
    /// Feed the case's own pixel_values/image_grid_thw from expected.safetensors
    /// instead of preprocessing its images.
    #[arg(long)]
    pub pixels_from_case: bool,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Also compare with CASE/expected.safetensors and print max |diff| per tensor.
    #[arg(long)]
    pub compare: bool,
}

impl TraceArgs {
    /// Traces the case on the CPU, writes `--out` and, with `--compare`, prints the
    /// differences from the case's expected tensors.
    pub fn run(self) -> Result<()> {
        let loaded = load_model(&self.checkpoint, Device::Cpu)?;
        info!(target: LOG_TARGET, checkpoint = %self.checkpoint.display(), "loaded");
        let source = if self.pixels_from_case {
            PixelSource::Expected
        } else {
            PixelSource::Images
        };
        let traced = trace_case(&loaded, &self.case, source)
            .with_context(|| format!("tracing {}", self.case.display()))?;
        write_safetensors(&self.out, &traced)?;
        info!(target: LOG_TARGET, out = %self.out.display(), tensors = traced.len(), "trace written");
        if self.compare {
            let expected = read_safetensors(&self.case.join("expected.safetensors"))?;
            let cmp = compare(&expected, &traced)?;
            println!("{}:\n{cmp}", self.case.display());
        }
        Ok(())
    }
}
