//! `ove ocr`: read the text of document images and PDFs with a default reading prompt:
//! each page whole, or line by line after the layout stage, as the bundle's model reads
//! best (`--layout auto`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::builder::TypedValueParser;
use ove_core::manifest::{LineReader, PageReading};
use ove_core::prompt::{PromptBuilder, DEFAULT_SYSTEM};
use ove_runtime::pages::{load_pages, Page, PageOptions};
use ove_runtime::read::{encode_rgb, read_page, PageRecord, ReadMode};
use ove_runtime::{GenerateOptions, Model};

use super::run::{print_stats, stream_answer, ModelArgs, SamplingArgs};

pub use ove_runtime::read::DEFAULT_OCR_PROMPT;

/// How pages are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    /// What the bundle's manifest says its model reads best (`reading.layout`; whole pages
    /// when it says nothing).
    Auto,
    /// Find the text lines (`ove layout`) and read each line crop on its own.
    Lines,
    /// The whole page in one pass (large checkpoints trained on pages).
    Page,
}

/// What reads a line crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReaderArg {
    /// The manifest's `reading.reader` (the decoder when it says nothing).
    Auto,
    /// The model's generation, prompted with the instruction.
    Decoder,
    /// The CTC head on the vision encoder, when the bundle carries one (no decoder step).
    Ctc,
}

/// How pages are read (`ove ocr`, `ove eval`).
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    /// Read whole pages or line by line.
    #[arg(long, value_enum, default_value_t = LayoutArg::Auto)]
    pub layout: LayoutArg,

    /// What reads each line crop when reading line by line.
    #[arg(long, value_enum, default_value_t = ReaderArg::Auto)]
    pub reader: ReaderArg,

    /// Lines read together (1: one by one): crops the CTC reader encodes per call (needs
    /// the bundle's lines.onnx, written with --ctc-head), or lines the decoder reader
    /// decodes together, one decoder call a step for all (needs a batched decoder graph,
    /// bundle schema 4). Each line attends only to itself, so they read as one by one
    /// does, up to rounding.
    #[arg(long, value_name = "N", default_value_t = ove_runtime::read::MAX_LINE_BATCH)]
    pub line_batch: usize,

    /// Readings of a doubtful line by the CTC reader (see --reread-below): 7 reads it with
    /// its text at 13/16, 14/16 ... 19/16 of the trained height (26 to 38 px for a 32 px
    /// model) and keeps, character by character, what most readings say (a third fewer
    /// character errors on held-out single lines); 5 and 3 the middle five or three;
    /// 1 reads every line once, the fastest.
    #[arg(long, value_name = "N", default_value_t = ove_runtime::read::DEFAULT_READ_SCALES,
          value_parser = clap::builder::PossibleValuesParser::new(["1", "3", "5", "7"])
              .map(|s| s.parse::<usize>().unwrap_or(1)))]
    pub read_scales: usize,

    /// With --read-scales 3, 5 or 7, which lines get the extra readings: those whose first
    /// reading (at the trained height) has a CTC frame that gives other characters more
    /// than 1 - P of its probability. 1 reads every line at every height (the most exact,
    /// the slowest); 0 never reads again (as --read-scales 1).
    #[arg(long, value_name = "P", default_value_t = ove_runtime::read::DEFAULT_REREAD_BELOW)]
    pub reread_below: f32,
}

impl ReadArgs {
    /// The reading mode for `model`: the flags over what its manifest says.
    pub fn mode(&self, model: &Model) -> Result<ReadMode> {
        let auto = ReadMode::of(model);
        let mode = ReadMode {
            layout: match self.layout {
                LayoutArg::Auto => auto.layout,
                LayoutArg::Lines => PageReading::Lines,
                LayoutArg::Page => PageReading::Page,
            },
            reader: match self.reader {
                ReaderArg::Auto => auto.reader,
                ReaderArg::Decoder => LineReader::Decoder,
                ReaderArg::Ctc => LineReader::Ctc,
            },
            batch: self.line_batch,
            scales: self.read_scales,
            reread_below: self.reread_below,
        };
        if !(0.0..=1.0).contains(&mode.reread_below) {
            anyhow::bail!(
                "--reread-below {}: give a probability from 0 to 1",
                mode.reread_below
            );
        }
        let most = ove_runtime::read::MAX_LINE_BATCH;
        if !(1..=most).contains(&mode.batch) {
            anyhow::bail!("--line-batch {}: give 1 (one by one) to {most}", mode.batch);
        }
        if mode.reader == LineReader::Ctc && model.ctc_head().is_none() {
            anyhow::bail!(
                "--reader ctc: the bundle {} carries no CTC head (export with --ctc-head)",
                model.bundle().dir().display()
            );
        }
        Ok(mode)
    }
}

/// Read the text of document images and PDFs (each page on its own, with a reading prompt).
///
/// Prints each page's text; pages of a PDF are separated by a form feed. With --json, a
/// JSON array with one object per page: `{"file", "page", "text", "lines": [{"bbox",
/// "block", "text", "confidence", "readings"}]}` (lines only when read line by line;
/// "confidence", 0 to 1, only from a CTC reader: how sure its first reading was, and
/// "readings": how many readings the text was voted from).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  ove ocr receipt.png                    (the built-in default OCR model)\n  \
                        ove ocr --bundle bundle/ scan1.png invoice.pdf\n  \
                        ove ocr --json receipt.png             (every line's box and text)\n\n\
                  The built-in model is small (trained from nothing on 2 CPU cores): it finds\n\
                  the text lines of a page and reads each with a CTC head on its vision\n\
                  encoder, with mistakes (models/default-ocr/README.md has its accuracy). For\n\
                  your documents, pass --bundle with a model you fine-tuned and exported."
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Images (PNG, JPEG, WebP, BMP, TIFF, GIF) and PDF files to read. Each page is read
    /// in its own conversation; with several files, each is headed by `==> FILE <==`.
    #[arg(required = true, value_name = "FILE")]
    pub images: Vec<PathBuf>,

    /// The instruction given with each page (or line).
    #[arg(long, default_value = DEFAULT_OCR_PROMPT)]
    pub prompt: String,

    #[command(flatten)]
    pub read: ReadArgs,

    /// Print JSON (pages, lines with their boxes) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Resolution PDF pages are rendered at.
    #[arg(long, value_name = "DPI", default_value_t = PageOptions::default().dpi)]
    pub dpi: f32,

    /// Refuse a PDF with more pages than this.
    #[arg(long, value_name = "N", default_value_t = PageOptions::default().max_pages)]
    pub max_pages: usize,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Print token counts and speeds to stderr after each page read whole.
    #[arg(long)]
    pub stats: bool,
}

/// What every page needs.
struct Reader<'a> {
    model: Model,
    prompt: PromptBuilder,
    opts: GenerateOptions,
    mode: ReadMode,
    args: &'a Args,
}

pub fn run(args: Args) -> Result<ExitCode> {
    args.sampling.validate()?;
    let page_opts = PageOptions {
        dpi: args.dpi,
        max_pages: args.max_pages,
        ..PageOptions::default()
    };
    // Checked before the model loads: a bad --dpi is an instant error.
    page_opts.validate().context("--dpi")?;
    let model = args.model.load()?;
    let mode = args.read.mode(&model)?;
    tracing::debug!(?mode, "reading mode");
    let mut reader = Reader {
        opts: args.sampling.options(&model),
        prompt: model.prompt_builder(DEFAULT_SYSTEM)?,
        model,
        mode,
        args: &args,
    };
    let mut stdout = std::io::stdout().lock();
    let many = args.images.len() > 1;
    let mut failed = 0;
    let mut json = Vec::new();
    for (i, file) in args.images.iter().enumerate() {
        if many && !args.json {
            if i > 0 {
                writeln!(stdout)?;
            }
            writeln!(stdout, "==> {} <==", file.display())?;
        }
        let result = load_pages(file, &page_opts)
            .and_then(|pages| reader.read_file(file, &pages, &mut stdout, &mut json));
        match result {
            Ok(()) => {}
            // One unreadable file does not stop the others; the exit code tells.
            Err(e) if many => {
                failed += 1;
                // Both the page loading and the reading errors name the file.
                eprintln!("error: {e:#}");
            }
            Err(e) => return Err(e),
        }
    }
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &json)?;
        writeln!(stdout)?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

impl Reader<'_> {
    /// Reads the pages of one file: text to `out` as it comes, or JSON rows to `json`.
    fn read_file(
        &mut self,
        file: &Path,
        pages: &[Page],
        out: &mut dyn Write,
        json: &mut Vec<PageRecord>,
    ) -> Result<()> {
        for (k, page) in pages.iter().enumerate() {
            if k > 0 && !self.args.json {
                write!(out, "\x0c")?;
            }
            self.read_one(file, page, out, json)
                .with_context(|| format!("{}: page {}", file.display(), page.index + 1))?;
        }
        Ok(())
    }

    /// Reads one page.
    fn read_one(
        &mut self,
        file: &Path,
        page: &Page,
        out: &mut dyn Write,
        json: &mut Vec<PageRecord>,
    ) -> Result<()> {
        if self.mode.layout == PageReading::Page && !self.args.json {
            // Whole pages stream as they are generated (a large model is slow).
            let encoded = encode_rgb(&mut self.model, &page.image)?;
            let g = stream_answer(
                &mut self.model,
                &self.prompt,
                &[encoded],
                &self.args.prompt,
                &self.opts,
                out,
            )?;
            writeln!(out)?;
            if self.args.stats {
                print_stats(&g);
            }
            return Ok(());
        }
        let read = read_page(
            &mut self.model,
            &self.prompt,
            &self.args.prompt,
            &page.image,
            self.mode,
            &self.opts,
        )?;
        if self.args.json {
            json.push(PageRecord::new(
                file.display().to_string(),
                page.index,
                read,
            ));
        } else {
            writeln!(out, "{}", read.text)?;
        }
        Ok(())
    }
}
