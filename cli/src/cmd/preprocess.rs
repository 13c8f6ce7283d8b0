//! `ove preprocess`: the model's image preprocessing, standalone, so that a user can check
//! what the model will see (and so that it can be compared with the reference processor).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ove_core::preprocess::{preprocess_file, DecodeOptions};
use ove_core::tensor_file::{write_safetensors, Tensor};
use ove_core::PreprocessorConfig;

/// Preprocess images into `NAME.pixel_values` (f32 [P, 588]) and `NAME.image_grid_thw`
/// (i64 [1, 3]) tensors of one safetensors file; NAME is the file name without extension.
///
/// Rejected images (not an image, truncated, aspect ratio over 200, too many pixels) are
/// reported as `NAME: reason` on stderr; the others are still written, and the exit code is 1.
#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint's or bundle's preprocessor_config.json.
    #[arg(long)]
    config: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Refuse images whose header announces more pixels than this (checked before decoding).
    #[arg(long, default_value_t = DecodeOptions::default().max_pixels)]
    max_image_pixels: u64,
    /// Images to preprocess (PNG, JPEG, WebP, BMP, TIFF, GIF).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let cfg = PreprocessorConfig::from_file(&args.config)?;
    let opts = DecodeOptions {
        max_pixels: args.max_image_pixels,
    };
    let mut tensors = BTreeMap::new();
    let mut rejected = 0usize;
    for path in &args.images {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .with_context(|| format!("{}: no usable file name", path.display()))?
            .to_string();
        let key = format!("{name}.pixel_values");
        if tensors.contains_key(&key) {
            bail!("two images are named {name:?}: tensor names would collide");
        }
        match preprocess_file(path, &cfg, &opts) {
            Ok(p) => {
                let rows = p.num_patches();
                let cols = p.pixel_values.len() / rows.max(1);
                tracing::debug!(image = %path.display(), grid = ?p.grid_thw, "preprocessed");
                tensors.insert(key, Tensor::f32(vec![rows, cols], p.pixel_values));
                tensors.insert(
                    format!("{name}.image_grid_thw"),
                    Tensor::i64(vec![1, 3], p.grid_thw.iter().map(|&x| x as i64).collect()),
                );
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                rejected += 1;
            }
        }
    }
    write_safetensors(&args.out, &tensors)?;
    eprintln!(
        "wrote {} image(s) to {}{}",
        tensors.len() / 2,
        args.out.display(),
        if rejected > 0 {
            format!(", rejected {rejected}")
        } else {
            String::new()
        }
    );
    Ok(if rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
