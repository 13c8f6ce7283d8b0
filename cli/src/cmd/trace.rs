//! `ove trace`: run a golden case through a bundle and write every intermediate tensor
//! under the golden names (input_ids, pixel_values, image_grid_thw, vision_tokens,
//! image_embeds, logits, generated_ids, generation_margins).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ove_core::tensor_file::{read_safetensors, write_safetensors};
use ove_runtime::trace::{trace, Case, TraceOptions};

use super::run::ModelArgs;

/// Run a golden case through a bundle and write every intermediate tensor.
///
/// The prompt is the case's input_ids; logits are computed for every prompt position in
/// one forward, then case.json's max_new_tokens are generated greedily through the KV
/// cache without stopping at end of turn. When the case has an expected.safetensors, the
/// largest difference of each tensor is printed to stderr.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  ove trace --bundle bundle/ --case shared/golden/one-image --pixels-from-case --out trace.safetensors"
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Golden case directory (case.json, its images, optionally expected.safetensors).
    #[arg(long, value_name = "DIR")]
    pub case: PathBuf,

    /// Feed the case's own pixel_values from expected.safetensors instead of
    /// preprocessing its images (checks the graphs alone).
    #[arg(long)]
    pub pixels_from_case: bool,

    /// Where to write the tensors (safetensors).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let case = Case::load(&args.case)?;
    let mut model = args.model.load()?;
    let tensors = trace(
        &mut model,
        &case,
        &TraceOptions {
            pixels_from_case: args.pixels_from_case,
        },
    )
    .with_context(|| format!("tracing {}", args.case.display()))?;
    write_safetensors(&args.out, &tensors)?;
    eprintln!(
        "wrote {} tensors to {} ({})",
        tensors.len(),
        args.out.display(),
        model.describe_backend()
    );

    let expected = case.expected_path();
    if expected.is_file() {
        let want = read_safetensors(&expected)?;
        for (name, got) in &tensors {
            let Some(w) = want.get(name) else { continue };
            if w.shape() != got.shape() {
                eprintln!(
                    "  {name:<20} shape {:?}, expected {:?}",
                    got.shape(),
                    w.shape()
                );
            } else if name.ends_with("_ids") || name == "image_grid_thw" {
                let same = w.to_f32() == got.to_f32();
                eprintln!(
                    "  {name:<20} {}",
                    if same { "identical" } else { "DIFFERENT" }
                );
            } else {
                let d = got
                    .to_f32()
                    .iter()
                    .zip(w.to_f32())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                eprintln!("  {name:<20} max |diff| {d:.3e}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
