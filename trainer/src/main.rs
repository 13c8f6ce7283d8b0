//! `ove-train`: the trainer's command line. A thin dispatcher: it parses the command line
//! and calls the subcommand's `run` in the library ([`ove_train::cmd`], and
//! [`ove_train::recipe`] for the default-model recipe's steps); an error is printed by
//! `main` returning it.

use anyhow::Result;
use clap::{Parser, Subcommand};

use ove_train::cmd::{
    balance::BalanceArgs, bench_train::BenchTrainArgs, ctc::CtcArgs, pack::PackArgs,
    plot::PlotArgs, resave::ResaveArgs, trace::TraceArgs, train::TrainArgs,
};
use ove_train::recipe::RecipeCommand;

#[derive(Parser)]
#[command(
    name = "ove-train",
    version,
    about = "Train LLaVA-OneVision-1.5 models with libtorch, and check them against the reference",
    long_about = "Train LLaVA-OneVision-1.5 models (RICE-ViT + merger + Qwen3) with libtorch.\n\n\
                  Checkpoints are Hugging Face directories (config.json + model.safetensors or \
                  shards with model.safetensors.index.json); what this tool saves, `ove export` \
                  takes as it is."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands; each variant's doc comment is its line in `--help`, its arguments
/// and its work are in the library.
#[derive(Subcommand)]
enum Command {
    /// Run a golden-style case and write every intermediate (vision tokens, image
    /// embeddings, prompt logits, greedy ids) under the golden expected.safetensors names.
    Trace(TraceArgs),
    /// Train a checkpoint on JSONL samples for one stage and save the result.
    ///
    /// Each line: {"prompt_ids": [...], "response_ids": [...], "images": ["a.png"]}, the
    /// prompt with one image pad per image (expanded here), the response trained.
    Train(TrainArgs),
    /// Train the vision encoder and a CTC line-reader head on text lines (ove-docgen
    /// folders): the first stage of the default OCR model.
    Ctc(CtcArgs),
    /// Offline packing: every sample's full length (text + image tokens from the image
    /// headers), over-long samples dropped, exact fits first, then greedy fills under a
    /// minimum fill ratio. Writes OUT/bins-*.jsonl and OUT/report.json, prints the report.
    Pack(PackArgs),
    /// Concept balancing: each image's top-k concepts by cosine similarity, weights from
    /// the concepts' inverse frequency, samples drawn with replacement by weight. Writes
    /// the weights (.npy, f32, normalised) and WEIGHTS.report.json; prints the concept
    /// entropy before and after.
    Balance(BalanceArgs),
    /// Training throughput: a Qwen3-shaped decoder (text only) on random tokens, warmup then
    /// timed steps (zero grad, forward, loss, backward, clip, AdamW); prints tokens/s and
    /// MFU = 6 x parameters x tokens / seconds / peak.
    BenchTrain(BenchTrainArgs),
    /// Plot a run's metrics.jsonl (loss, lr, grad norm, tokens/s against the step) as a PNG.
    Plot(PlotArgs),
    #[command(flatten)]
    Recipe(RecipeCommand),
    /// Load a checkpoint (strict name/shape checks) and save it again, e.g. to change
    /// the dtype or the sharding.
    Resave(ResaveArgs),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Trace(a) => a.run(),
        Command::Train(a) => a.run(),
        Command::Ctc(a) => a.run(),
        Command::Pack(a) => a.run(),
        Command::Balance(a) => a.run(),
        Command::BenchTrain(a) => a.run(),
        Command::Plot(a) => a.run(),
        Command::Recipe(c) => c.run(),
        Command::Resave(a) => a.run(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `--cuda` and `--device` name the same thing: giving both is a usage error.
    #[test]
    fn cuda_and_device_conflict() {
        let train = |extra: &[&str]| {
            let mut args = vec![
                "ove-train",
                "train",
                "--checkpoint",
                "c",
                "--stage",
                "stage1",
                "--data",
                "d",
                "--out",
                "o",
            ];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        assert!(train(&["--cuda"]).is_ok());
        assert!(train(&["--device", "cuda:1"]).is_ok());
        let Err(err) = train(&["--cuda", "--device", "cpu"]) else {
            panic!("--cuda with --device was accepted");
        };
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
