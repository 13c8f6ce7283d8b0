//! `ove ocr`: read the text of document images with a default reading prompt.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use ove_core::prompt::DEFAULT_SYSTEM;

use super::run::{answer, print_stats, prompt_builder, ModelArgs, SamplingArgs};

/// The instruction given with each image unless --prompt says otherwise.
pub const DEFAULT_OCR_PROMPT: &str = "Read all the text in the image.";

/// Read the text of document images (each image on its own, with a reading prompt).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  ove ocr word.png                       (the built-in default OCR model)\n  \
                        ove ocr --bundle bundle/ scan1.png scan2.jpg\n\n\
                  The built-in model is small (trained on 2 CPU cores): it reads single\n\
                  words, numbers and short lines, with mistakes, and invents text on whole\n\
                  pages. For documents, pass --bundle with a model you fine-tuned and exported."
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Images to read (PNG, JPEG, WebP, BMP, TIFF, GIF). Each is read in its own
    /// conversation; with several, each answer is headed by `==> FILE <==`.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,

    /// The instruction given with each image.
    #[arg(long, default_value = DEFAULT_OCR_PROMPT)]
    pub prompt: String,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Print token counts and speeds to stderr after each image.
    #[arg(long)]
    pub stats: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    args.sampling.validate()?;
    let mut model = args.model.load()?;
    let opts = args.sampling.options(&model);
    let prompt = prompt_builder(&model, DEFAULT_SYSTEM)?;
    let mut stdout = std::io::stdout().lock();
    let many = args.images.len() > 1;
    let mut failed = 0;
    for (i, image) in args.images.iter().enumerate() {
        if many {
            if i > 0 {
                writeln!(stdout)?;
            }
            writeln!(stdout, "==> {} <==", image.display())?;
        }
        match answer(
            &mut model,
            &prompt,
            std::slice::from_ref(image),
            &args.prompt,
            &opts,
            &mut stdout,
        ) {
            Ok(g) => {
                writeln!(stdout)?;
                if args.stats {
                    print_stats(&g);
                }
            }
            // One unreadable image does not stop the others; the exit code tells.
            Err(e) if many => {
                failed += 1;
                eprintln!("error: {}: {e:#}", image.display());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
