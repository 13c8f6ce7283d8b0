//! `ove export`: Hugging Face checkpoint directory -> ONNX bundle (docs/BUNDLE.md).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use ove_exporter::{export, Dtype, ExportOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory: config.json, model.safetensors (or sharded with an index),
    /// preprocessor_config.json, and tokenizer.json / generation_config.json when present.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Bundle directory to write (created; must be absent or empty unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Float dtype of the stored weights; activations are always f32.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: Dtype,
    /// Longest sequence (prompt + generated tokens) the runtime will accept
    /// [default: text_config.max_position_embeddings].
    #[arg(long)]
    pub max_context: Option<usize>,
    /// Replace an existing non-empty --out.
    #[arg(long)]
    pub force: bool,
}

fn parse_dtype(s: &str) -> Result<Dtype, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = ExportOptions {
        checkpoint: args.checkpoint,
        out: args.out,
        dtype: args.dtype,
        max_context: args.max_context,
        force: args.force,
        progress: std::io::stderr().is_terminal(),
    };
    let report = export(&opts)?;
    let m = &report.manifest;
    println!(
        "wrote {} ({} files, {:.1} MB, weights {}, {} tensors, max context {})",
        report.out.display(),
        m.files.len(),
        report.bytes as f64 / 1e6,
        m.dtype,
        report.tensors,
        m.max_context
    );
    Ok(ExitCode::SUCCESS)
}
