//! `ove eval`: OCR accuracy of a bundle on a folder of `NAME.png` + `NAME.txt` (the folder
//! format `ove-docgen generate` writes): CER, WER and exact line matches per image and in
//! total, and images per second.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ove_core::prompt::DEFAULT_SYSTEM;
use serde_json::json;

use ove_core::preprocess::{load_rgb, DecodeOptions};
use ove_runtime::read::read_page;

use super::ocr::{ReadArgs, DEFAULT_OCR_PROMPT};
use super::run::{ModelArgs, SamplingArgs};

use ove_core::metrics;

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"];

/// Measure OCR accuracy on a folder of images with ground truth (NAME.png + NAME.txt).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  ove eval --bundle bundle/ --data eval/\n  \
                        ove eval --bundle bundle/ --data eval/ --json --save-predictions preds/\n  \
                        ove eval --data eval/ --predictions preds/   (score NAME.pred.txt files, no model)")]
pub struct Args {
    /// The model to evaluate (default: the built-in default OCR model; not used with
    /// --predictions).
    #[command(flatten)]
    pub model: ModelArgs,

    /// Folder of images, each with its ground truth in NAME.txt next to it.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,

    /// Score existing predictions (NAME.pred.txt in DIR) instead of running a bundle.
    #[arg(long, value_name = "DIR", conflicts_with = "bundle")]
    pub predictions: Option<PathBuf>,

    /// Write each model answer to DIR/NAME.pred.txt.
    #[arg(long, value_name = "DIR")]
    pub save_predictions: Option<PathBuf>,

    /// The instruction given with each image.
    #[arg(long, default_value = DEFAULT_OCR_PROMPT)]
    pub prompt: String,

    /// Evaluate only the first N images (in name order).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Print one JSON object (per-image scores, totals, speed) instead of the table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub read: ReadArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// One image with ground truth.
struct Case {
    name: String,
    image: PathBuf,
    reference: String,
}

struct Row {
    name: String,
    score: metrics::Score,
    seconds: f64,
    error: Option<String>,
}

/// Images of `dir` that have a NAME.txt, by name.
fn cases(dir: &Path) -> Result<Vec<Case>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if !ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let txt = dir.join(format!("{stem}.txt"));
        if !txt.is_file() {
            continue;
        }
        let reference =
            std::fs::read_to_string(&txt).with_context(|| format!("reading {}", txt.display()))?;
        out.push(Case {
            name: stem.to_string(),
            image: path,
            reference,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if out.is_empty() {
        bail!(
            "{} has no images with ground truth (NAME.png + NAME.txt; `ove-docgen generate` writes them)",
            dir.display()
        );
    }
    Ok(out)
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut cases = cases(&args.data)?;
    if let Some(n) = args.limit {
        cases.truncate(n);
    }
    let mut rows = Vec::with_capacity(cases.len());
    let started = Instant::now();
    let mut backend = None;
    if let Some(dir) = &args.predictions {
        for c in &cases {
            let p = dir.join(format!("{}.pred.txt", c.name));
            let (pred, error) = match std::fs::read_to_string(&p) {
                Ok(t) => (t, None),
                Err(e) => (String::new(), Some(format!("{}: {e}", p.display()))),
            };
            rows.push(Row {
                name: c.name.clone(),
                score: metrics::score(&c.reference, &pred),
                seconds: 0.0,
                error,
            });
        }
    } else {
        let model_args = &args.model;
        args.sampling.validate()?;
        let mut model = model_args.load()?;
        let opts = args.sampling.options(&model);
        let mode = args.read.mode(&model)?;
        backend = Some(model.describe_backend());
        let prompt = model.prompt_builder(DEFAULT_SYSTEM)?;
        if let Some(dir) = &args.save_predictions {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        for c in &cases {
            let t = Instant::now();
            let result = load_rgb(&c.image, &DecodeOptions::default())
                .with_context(|| format!("reading {}", c.image.display()))
                .and_then(|img| read_page(&mut model, &prompt, &args.prompt, &img, mode, &opts));
            let seconds = t.elapsed().as_secs_f64();
            let (pred, error) = match result {
                Ok(r) => (r.text, None),
                Err(e) => (String::new(), Some(format!("{e:#}"))),
            };
            if let Some(dir) = &args.save_predictions {
                let p = dir.join(format!("{}.pred.txt", c.name));
                std::fs::write(&p, &pred).with_context(|| format!("writing {}", p.display()))?;
            }
            if !args.json {
                match &error {
                    Some(e) => eprintln!("error: {}: {e}", c.image.display()),
                    None => tracing::debug!("{}: {pred:?}", c.name),
                }
            }
            rows.push(Row {
                name: c.name.clone(),
                score: metrics::score(&c.reference, &pred),
                seconds,
                error,
            });
        }
    }
    let elapsed = started.elapsed();
    report(&args, &rows, elapsed, backend.as_deref())?;
    Ok(if rows.iter().all(|r| r.error.is_none()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn report(args: &Args, rows: &[Row], elapsed: Duration, backend: Option<&str>) -> Result<()> {
    let total = metrics::total(rows.iter().map(|r| &r.score));
    let ran_model = args.predictions.is_none();
    let per_second = if ran_model && !elapsed.is_zero() {
        Some(rows.len() as f64 / elapsed.as_secs_f64())
    } else {
        None
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let scores = |s: &metrics::Score| {
            json!({
                "cer": s.cer(),
                "wer": s.wer(),
                "line_match": s.line_match(),
                "char_edits": s.char_edits,
                "ref_chars": s.ref_chars,
                "word_edits": s.word_edits,
                "ref_words": s.ref_words,
                "lines_matched": s.lines_matched,
                "ref_lines": s.ref_lines,
            })
        };
        let images: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut v = scores(&r.score);
                v["name"] = json!(r.name);
                if ran_model {
                    v["seconds"] = json!(r.seconds);
                }
                if let Some(e) = &r.error {
                    v["error"] = json!(e);
                }
                v
            })
            .collect();
        let v = json!({
            "data": args.data.display().to_string(),
            "backend": backend,
            "images": images,
            "total": scores(&total),
            "count": rows.len(),
            "failed": rows.iter().filter(|r| r.error.is_some()).count(),
            "seconds": elapsed.as_secs_f64(),
            "images_per_second": per_second,
        });
        writeln!(stdout, "{v}")?;
        return Ok(());
    }
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    writeln!(
        stdout,
        "{:<width$}  {:>7}  {:>7}  {:>11}  {:>7}",
        "image", "CER", "WER", "exact lines", "seconds"
    )?;
    for r in rows {
        let s = &r.score;
        writeln!(
            stdout,
            "{:<width$}  {:>7.4}  {:>7.4}  {:>11}  {:>7.2}{}",
            r.name,
            s.cer(),
            s.wer(),
            format!("{}/{}", s.lines_matched, s.ref_lines),
            r.seconds,
            if r.error.is_some() { "  (failed)" } else { "" }
        )?;
    }
    writeln!(
        stdout,
        "{:<width$}  {:>7.4}  {:>7.4}  {:>11}  {:>7.2}",
        "TOTAL",
        total.cer(),
        total.wer(),
        format!("{}/{}", total.lines_matched, total.ref_lines),
        elapsed.as_secs_f64()
    )?;
    match per_second {
        Some(ips) => writeln!(
            stdout,
            "{} images in {:.1} s: {:.3} images/s{}",
            rows.len(),
            elapsed.as_secs_f64(),
            ips,
            backend.map(|b| format!(" on {b}")).unwrap_or_default()
        )?,
        None => writeln!(stdout, "{} images scored", rows.len())?,
    }
    Ok(())
}
