//! `ove bench`: vision encoder time, prefill and decode speed, load time and peak memory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use ove_runtime::bench::{bench, BenchOptions};
use ove_runtime::generate::DEFAULT_PREFILL_CHUNK;

use super::run::ModelArgs;

/// Measure a bundle: vision encoder ms per image, prefill and decode tokens/s, load time
/// and peak resident memory.
///
/// The prompt is the image's tokens (when --image is given) plus --text-tokens filler
/// tokens; decode speed is measured over --decode-tokens greedy steps with the KV cache.
/// Everything runs once untimed first, so the numbers are warm.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  ove bench --bundle bundle/ --backend ort --image page.png --json"
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// An image to encode and put in the prompt (default: text only).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,

    /// Text tokens in the prompt besides the image's.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub text_tokens: usize,

    /// Generated tokens to time.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub decode_tokens: usize,

    /// Timed vision encoder runs (averaged).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub vision_runs: usize,

    /// Prompt tokens per decoder call while prefilling (0: all at once).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PREFILL_CHUNK)]
    pub prefill_chunk: usize,

    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut model = args.model.load()?;
    let spinner = super::run::spinner("benchmarking".into());
    let report = bench(
        &mut model,
        &BenchOptions {
            image: args.image.clone(),
            text_tokens: args.text_tokens,
            decode_tokens: args.decode_tokens,
            vision_runs: args.vision_runs,
            prefill_chunk: (args.prefill_chunk > 0).then_some(args.prefill_chunk),
        },
    );
    spinner.finish_and_clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
