//! `ove compare`: two bundles (e.g. an int4 export and its float twin) on the same golden
//! cases: per case the prompt logits of both (one forward over the whole prompt), their
//! max |diff|, top-1 agreement and mean KL divergence, and how long the greedy
//! continuations agree.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ove_runtime::compare;
use ove_runtime::trace::{trace, Case, TraceOptions};
use ove_runtime::{BackendChoice, BackendOptions, LoadOptions, Model, OrtOptions, Verify};

/// Compare two bundles on golden cases: logits max |diff|, top-1 agreement, KL, greedy ids.
///
/// The first --bundle is the reference (KL is KL(first || second)). Each case runs its
/// prompt through both bundles in one forward with logits for every position, then
/// generates case.json's max_new_tokens greedily.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  ove compare --bundle f32/ --bundle int4/ --case shared/golden/one-image --case shared/golden/text-only"
)]
pub struct Args {
    /// Two bundle directories: the reference first, then the one to check.
    #[arg(long, value_name = "DIR", num_args = 1, required = true)]
    pub bundle: Vec<PathBuf>,

    /// Golden case directories (case.json, its images, expected.safetensors).
    #[arg(long, value_name = "DIR", num_args = 1, required = true)]
    pub case: Vec<PathBuf>,

    /// Feed the cases' own pixel_values instead of preprocessing their images.
    #[arg(long)]
    pub pixels_from_case: bool,

    /// Inference engine: auto, ort or tract.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    pub backend: BackendChoice,

    /// Threads inside each operator (default: the engine's choice).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// ONNX Runtime MatMulNBits accuracy level 4 (int8 activations) instead of 0.
    #[arg(long)]
    pub fast_int4: bool,

    /// Fail (exit 1) when any case's logits max |diff| exceeds this.
    #[arg(long, value_name = "X")]
    pub max_diff: Option<f32>,

    /// Fail (exit 1) when any case's top-1 agreement (percent) is below this.
    #[arg(long, value_name = "PERCENT")]
    pub min_top1: Option<f64>,
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

/// What one case measured.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseDiff {
    pub rows: usize,
    pub max_abs_diff: f32,
    /// Fraction of prompt rows with the same argmax.
    pub top1: f64,
    /// Mean over rows of KL(softmax(a) || softmax(b)), in nats.
    pub mean_kl: f64,
    /// Leading greedy tokens that agree, out of `generated`.
    pub same_prefix: usize,
    pub generated: usize,
}

/// Compares `[rows, vocab]` logits and two greedy continuations.
pub fn diff(a: &[f32], b: &[f32], vocab: usize, gen_a: &[i64], gen_b: &[i64]) -> Result<CaseDiff> {
    if a.len() != b.len() || vocab == 0 || !a.len().is_multiple_of(vocab) {
        bail!(
            "logits of different shapes: {} vs {} values (vocab {vocab})",
            a.len(),
            b.len()
        );
    }
    let rows = a.len() / vocab;
    Ok(CaseDiff {
        rows,
        max_abs_diff: compare::max_abs_diff(a, b),
        top1: compare::top1_agreement(a, b, vocab),
        mean_kl: compare::mean_kl(a, b, vocab),
        same_prefix: compare::same_prefix(gen_a, gen_b),
        generated: gen_a.len().min(gen_b.len()),
    })
}

fn load(dir: &Path, args: &Args) -> Result<Model> {
    let opts = LoadOptions {
        verify: Verify::default(),
        backend: BackendOptions {
            choice: args.backend,
            threads: args.threads,
            ort: OrtOptions {
                int4_accuracy_level: if args.fast_int4 { 4 } else { 0 },
                ..Default::default()
            },
        },
        max_context: None,
    };
    let model = Model::load(dir, &opts).with_context(|| format!("cannot run {}", dir.display()))?;
    eprintln!(
        "{}: {} ({}, quantization {})",
        dir.display(),
        model.describe_backend(),
        model.manifest().dtype,
        model.manifest().quantization.scheme
    );
    Ok(model)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let [a, b] = args.bundle.as_slice() else {
        bail!(
            "--bundle must be given exactly twice (reference, then the bundle to check); got {}",
            args.bundle.len()
        );
    };
    let mut ma = load(a, &args)?;
    let mut mb = load(b, &args)?;
    if ma.vocab() != mb.vocab() {
        bail!(
            "the bundles have different vocabularies ({} vs {})",
            ma.vocab(),
            mb.vocab()
        );
    }
    let opts = TraceOptions {
        pixels_from_case: args.pixels_from_case,
    };
    println!(
        "{:<24} {:>5} {:>12} {:>8} {:>10} {:>10}",
        "case", "rows", "max|diff|", "top-1", "mean KL", "greedy"
    );
    let mut failed = false;
    for dir in &args.case {
        let case = Case::load(dir)?;
        let ta = trace(&mut ma, &case, &opts)
            .with_context(|| format!("{}: {}", a.display(), dir.display()))?;
        let tb = trace(&mut mb, &case, &opts)
            .with_context(|| format!("{}: {}", b.display(), dir.display()))?;
        let get = |t: &std::collections::BTreeMap<String, ove_core::tensor_file::Tensor>,
                   n: &str|
         -> Result<ove_core::tensor_file::Tensor> {
            t.get(n)
                .cloned()
                .with_context(|| format!("trace has no {n}"))
        };
        let d = diff(
            &get(&ta, "logits")?.to_f32(),
            &get(&tb, "logits")?.to_f32(),
            ma.vocab(),
            &get(&ta, "generated_ids")?.to_i64()?,
            &get(&tb, "generated_ids")?.to_i64()?,
        )?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        println!(
            "{:<24} {:>5} {:>12.5} {:>7.1}% {:>10.2e} {:>6}/{:<3}",
            name,
            d.rows,
            d.max_abs_diff,
            d.top1 * 100.0,
            d.mean_kl,
            d.same_prefix,
            d.generated
        );
        if args.max_diff.is_some_and(|m| d.max_abs_diff > m)
            || args.min_top1.is_some_and(|m| d.top1 * 100.0 < m)
        {
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_agree() {
        let a = [1.0, 2.0, 0.5, 3.0, -1.0, 0.0];
        let d = diff(&a, &a, 3, &[1, 2], &[1, 2]).unwrap();
        assert_eq!((d.rows, d.max_abs_diff, d.top1), (2, 0.0, 1.0));
        assert!(d.mean_kl.abs() < 1e-12);
        assert_eq!((d.same_prefix, d.generated), (2, 2));
    }

    #[test]
    fn differences_are_measured() {
        let a = [1.0, 2.0, 0.5, 3.0, -1.0, 0.0];
        let b = [1.0, 0.0, 2.5, 3.0, -1.0, 0.5];
        let d = diff(&a, &b, 3, &[1, 2, 3], &[1, 5, 3]).unwrap();
        assert_eq!(d.max_abs_diff, 2.0);
        assert_eq!(d.top1, 0.5);
        assert!(d.mean_kl > 0.0);
        assert_eq!(d.same_prefix, 1);
        assert!(diff(&a, &b[..3], 3, &[], &[]).is_err());
    }
}
