//! `ove layout`: the text lines the OCR reads, found on each page without a model, so that
//! a person can see (with `--draw`) or a program can use (with `--json`) what `ove ocr`
//! will crop and read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use ove_core::preprocess::{load_rgb, DecodeOptions};
use ove_runtime::layout::{draw, find_lines, LayoutOptions, PageLayout};
use serde::Serialize;

/// Find the text lines of page images, in reading order: columns left to right, blocks
/// top to bottom, lines top to bottom. Rules, separators and specks are not lines.
///
/// Prints one line per text line: `BLOCK  X0,Y0  X1,Y1` (a half-open pixel box of the
/// original image). An image that cannot be read is reported on stderr; the others are
/// still done, and the exit code is 1.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  ove layout examples/docgen-receipt.png --draw receipt-lines.png\n  ove layout scans/*.png --json > lines.json"
)]
pub struct Args {
    /// Page images (PNG, JPEG, WebP, BMP, TIFF, GIF).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,

    /// Print JSON instead: an array with one object per image, `{"image", "width",
    /// "height", "skew_degrees", "lines": [{"bbox": {"x0", "y0", "x1", "y1"}, "block"}]}`.
    #[arg(long)]
    pub json: bool,

    /// Write an overlay picture of the boxes (one colour per block). With one image, the
    /// PNG file to write; with several, a directory that gets NAME.layout.png for each.
    #[arg(long, value_name = "OUT")]
    pub draw: Option<PathBuf>,

    /// Refuse images whose header announces more pixels than this (checked before decoding).
    #[arg(long, value_name = "N", default_value_t = DecodeOptions::default().max_pixels)]
    pub max_image_pixels: u64,
}

#[derive(Serialize)]
struct PageOut<'a> {
    image: String,
    #[serde(flatten)]
    layout: &'a PageLayout,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let decode = DecodeOptions {
        max_pixels: args.max_image_pixels,
    };
    let opts = LayoutOptions::default();
    let many = args.images.len() > 1;
    if let (Some(dir), true) = (&args.draw, many) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    let mut pages = Vec::new();
    let mut failed = 0;
    for path in &args.images {
        let page = match load_rgb(path, &decode) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                failed += 1;
                continue;
            }
        };
        let t = std::time::Instant::now();
        let layout = find_lines(&page, &opts);
        tracing::debug!(
            image = %path.display(),
            lines = layout.lines.len(),
            ms = t.elapsed().as_secs_f64() * 1e3,
            "layout"
        );
        if let Some(out) = &args.draw {
            let file = if many {
                overlay_path(out, path)
            } else {
                out.clone()
            };
            draw(&page, &layout)
                .save(&file)
                .with_context(|| format!("writing {}", file.display()))?;
        }
        if args.json {
            pages.push((path.display().to_string(), layout));
        } else {
            print_text(&mut stdout, path, &layout, many)?;
        }
    }
    if args.json {
        let out: Vec<PageOut> = pages
            .iter()
            .map(|(image, layout)| PageOut {
                image: image.clone(),
                layout,
            })
            .collect();
        serde_json::to_writer_pretty(&mut stdout, &out)?;
        writeln!(stdout)?;
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `DIR/NAME.layout.png` for the image `NAME.ext`.
fn overlay_path(dir: &Path, image: &Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map_or_else(|| "page".into(), |s| s.to_string_lossy());
    dir.join(format!("{stem}.layout.png"))
}

fn print_text(out: &mut dyn Write, path: &Path, layout: &PageLayout, many: bool) -> Result<()> {
    if many {
        writeln!(out, "==> {} <==", path.display())?;
    }
    for line in &layout.lines {
        let b = line.bbox;
        writeln!(out, "{}\t{},{}\t{},{}", line.block, b.x0, b.y0, b.x1, b.y1)?;
    }
    Ok(())
}
