//! `ove`: the OneVision Edge runtime CLI. A thin binary: each subcommand lives in
//! `cmd/`, and the work itself in the `ove-core`, `ove-exporter` and `ove-runtime` crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod default_model;

/// OneVision Edge: export LLaVA-OneVision-1.5 models to ONNX bundles and read documents with them,
/// on a workstation CPU or a Jetson.
///
/// Typical flow: `ove export --checkpoint CKPT --out BUNDLE --int4`, then `ove ocr --bundle BUNDLE page.png`.
#[derive(Parser)]
#[command(name = "ove", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log more (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Preprocess images exactly as the model's image processor does, into a safetensors file.
    Preprocess(cmd::preprocess::Args),
    /// Export a Hugging Face checkpoint directory to an ONNX bundle.
    Export(cmd::export::Args),
    /// Run a bundle on a prompt (and images) and print the generated text.
    Run(cmd::run::Args),
    /// Read the text of document images (a default reading prompt).
    Ocr(cmd::ocr::Args),
    /// Find the text lines of page images, in reading order (no model): boxes as text or
    /// JSON, and an overlay picture with --draw.
    Layout(cmd::layout::Args),
    /// Run a golden case through a bundle and write every intermediate tensor.
    Trace(cmd::trace::Args),
    /// Measure vision encoder time, prefill and decode speed and peak memory of a bundle.
    Bench(cmd::bench::Args),
    /// Compare two bundles (e.g. int4 against its float twin) on golden cases: top-1 agreement, KL, max logit diff.
    Compare(cmd::compare::Args),
    /// Serve a bundle over HTTP: OpenAI's chat completions API and an OCR upload endpoint.
    #[cfg(feature = "serve")]
    Serve(cmd::serve::Args),
    /// Score OCR on a folder of images with NAME.txt ground truth: CER, WER, exact lines, speed.
    Eval(cmd::eval::Args),
    /// Copy the aarch64 runtime, a bundle and a systemd unit to a Jetson over ssh, and verify them.
    Deploy(cmd::deploy::Args),
    /// Train with `ove-train` (needs libtorch): all arguments are passed on.
    #[command(disable_help_flag = true)]
    Train(cmd::train::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Preprocess(a) => cmd::preprocess::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Ocr(a) => cmd::ocr::run(a),
        Command::Layout(a) => cmd::layout::run(a),
        Command::Trace(a) => cmd::trace::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Compare(a) => cmd::compare::run(a),
        Command::Deploy(a) => cmd::deploy::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        #[cfg(feature = "serve")]
        Command::Serve(a) => cmd::serve::run(a),
        Command::Train(a) => cmd::train::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
