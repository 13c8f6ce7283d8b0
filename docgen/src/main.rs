//! `ove-docgen`: synthetic document images with exact ground truth.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ove_docgen::dataset::{write_set, Degradation, Options};
use ove_docgen::fonts::{self, CATALOGUE};
use ove_docgen::generate::Kind;
use ove_docgen::metrics;

#[derive(Parser)]
#[command(
    name = "ove-docgen",
    version,
    about = "Synthetic documents for training and evaluating OCR"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render documents: NAME.png + NAME.txt, and the JSONL manifests.
    #[command(
        after_help = "Examples:\n  ove-docgen generate --out data/train --count 10000 --fonts train --degradation mixed\n  ove-docgen generate --out data/eval --count 500 --fonts heldout --seed 7 --degradation degraded --no-manifests"
    )]
    Generate {
        /// Output folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// How many documents.
        #[arg(long, default_value_t = 100)]
        count: u64,
        /// First document index (to extend a set without repeating it).
        #[arg(long, default_value_t = 0)]
        start: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Document kinds, comma separated, taken in turn: word, glyph, code, line, paragraph, receipt, form, table.
        #[arg(long, default_value = "line,paragraph,receipt,form,table")]
        kinds: String,
        /// Fonts: train (DejaVu, Liberation, Inter, Hack, ...), heldout (Noto, Charis SIL,
        /// Fira Code), all, dejavu, or catalogue names separated by commas (see
        /// `ove-docgen fonts`).
        #[arg(long, default_value = "train")]
        fonts: String,
        /// clean, degraded (level 0.7), mixed (a random level per page) or a level in 0..1.
        #[arg(long, default_value = "clean")]
        degradation: String,
        /// Write only NAME.png + NAME.txt (the evaluation folder format).
        #[arg(long)]
        no_manifests: bool,
    },
    /// List the font catalogue, its split and which fonts are installed.
    Fonts,
    /// Score NAME.pred.txt files against NAME.txt ground truth (CER, WER, exact lines).
    Score {
        /// Folder with NAME.txt ground truth.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Folder with NAME.pred.txt (default: the data folder).
        #[arg(long, value_name = "DIR")]
        predictions: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Generate {
            out,
            count,
            start,
            seed,
            kinds,
            fonts,
            degradation,
            no_manifests,
        } => {
            let kinds = kinds
                .split(',')
                .map(|k| Kind::parse(k.trim()))
                .collect::<Result<Vec<_>>>()?;
            let specs = fonts::select(&fonts)?;
            let opts = Options {
                kinds,
                seed,
                degradation: Degradation::parse(&degradation)?,
            };
            let s = write_set(&out, &specs, &opts, start, count, !no_manifests)?;
            eprintln!(
                "wrote {} images ({} stage-2 records) to {}",
                s.images,
                s.stage2_records,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Fonts => {
            for f in CATALOGUE {
                let there = if f.path().is_file() { "ok" } else { "MISSING" };
                println!(
                    "{:<24} {:<8} {:<20} {:<8} {}",
                    f.name,
                    format!("{:?}", f.split).to_lowercase(),
                    f.package,
                    there,
                    f.path().display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Score { data, predictions } => {
            let pred_dir = predictions.unwrap_or_else(|| data.clone());
            let mut names: Vec<String> = std::fs::read_dir(&data)
                .with_context(|| format!("reading the folder {}", data.display()))?
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.ends_with(".txt") && !n.ends_with(".pred.txt"))
                .map(|n| n.trim_end_matches(".txt").to_string())
                .collect();
            names.sort();
            let mut scores = Vec::new();
            println!("{:<32} {:>8} {:>8} {:>8}", "image", "CER", "WER", "lines");
            for n in &names {
                let ref_path = data.join(format!("{n}.txt"));
                let reference = std::fs::read_to_string(&ref_path)
                    .with_context(|| format!("reading {}", ref_path.display()))?;
                let pred_path = pred_dir.join(format!("{n}.pred.txt"));
                // The same rule as `ove eval`: an image without a prediction counts as read
                // empty (every reference character an error), never as left out of the total.
                let pred = match std::fs::read_to_string(&pred_path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        eprintln!(
                            "warning: no {} (counted as an empty reading)",
                            pred_path.display()
                        );
                        String::new()
                    }
                    read => read.with_context(|| format!("reading {}", pred_path.display()))?,
                };
                let s = metrics::score(&reference, &pred);
                println!(
                    "{:<32} {:>8.4} {:>8.4} {:>8.4}",
                    n,
                    s.cer(),
                    s.wer(),
                    s.line_match()
                );
                scores.push(s);
            }
            let t = metrics::total(&scores);
            println!(
                "{:<32} {:>8.4} {:>8.4} {:>8.4}",
                "TOTAL",
                t.cer(),
                t.wer(),
                t.line_match()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
