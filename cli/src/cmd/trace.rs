//! `ove trace`: run a golden case through a bundle and write every intermediate tensor
//! under the golden names (input_ids, pixel_values, image_grid_thw, vision_tokens,
//! image_embeds, logits, generated_ids, generation_margins).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
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

    /// Strict mode: compare with the case's expected.safetensors (which must exist) and
    /// exit with status 1 when a bar is missed: image_embeds over --max-embeds-diff,
    /// logits over --max-logits-diff, generated_ids not identical, or a shape differing.
    #[arg(long)]
    pub check: bool,

    /// With --check: the largest |difference| allowed on image_embeds.
    #[arg(long, value_name = "X", default_value_t = 1e-4)]
    pub max_embeds_diff: f32,

    /// With --check: the largest |difference| allowed on logits.
    #[arg(long, value_name = "X", default_value_t = 1e-4)]
    pub max_logits_diff: f32,
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
    if args.check && !expected.is_file() {
        bail!(
            "--check: {} has no expected.safetensors to compare with",
            args.case.display()
        );
    }
    let mut missed: Vec<String> = Vec::new();
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
                if is_checked(name) {
                    missed.push(format!(
                        "{name}: shape {:?}, expected {:?}",
                        got.shape(),
                        w.shape()
                    ));
                }
            } else if name.ends_with("_ids") || name == "image_grid_thw" {
                let same = w.to_f32() == got.to_f32();
                eprintln!(
                    "  {name:<20} {}",
                    if same { "identical" } else { "DIFFERENT" }
                );
                if !same && name == "generated_ids" {
                    missed.push(format!("{name}: not identical"));
                }
            } else {
                let d = got
                    .to_f32()
                    .iter()
                    .zip(w.to_f32())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, |m, x| {
                        if x.is_nan() || m.is_nan() {
                            f32::NAN
                        } else {
                            m.max(x)
                        }
                    });
                eprintln!("  {name:<20} max |diff| {d:.3e}");
                let bar = match name.as_str() {
                    "image_embeds" => Some(args.max_embeds_diff),
                    "logits" => Some(args.max_logits_diff),
                    _ => None,
                };
                if let Some(bar) = bar {
                    // A NaN difference misses the bar too.
                    if d.is_nan() || d > bar {
                        missed.push(format!("{name}: max |diff| {d:.3e} > {bar:.1e}"));
                    }
                }
            }
        }
        if args.check {
            for name in ["image_embeds", "logits", "generated_ids"] {
                if want.contains_key(name) && !tensors.contains_key(name) {
                    missed.push(format!("{name}: expected but not produced"));
                }
            }
        }
    }
    if args.check {
        if missed.is_empty() {
            eprintln!("check: OK ({})", args.case.display());
        } else {
            eprintln!("check: FAILED ({})", args.case.display());
            for m in &missed {
                eprintln!("  {m}");
            }
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The tensors whose shapes `--check` holds to the reference.
fn is_checked(name: &str) -> bool {
    matches!(name, "image_embeds" | "logits" | "generated_ids")
}
