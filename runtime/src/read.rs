//! Reading a page with a model: the whole page as one image (what large checkpoints are
//! trained to do), or line by line after the layout stage ([`crate::layout`]), each line
//! crop scaled to the text height the model was trained on (what small models read well).
//!
//! The lines of a page are read one after another, each in its own conversation; a line's
//! answer does not depend on the other lines, so reading them in a batch must give the same
//! text (the decoder has no batch dimension yet).

use std::ops::ControlFlow;

use anyhow::{Context, Result};
use image::RgbImage;
use ove_core::layout_metrics::LineBox;
use ove_core::manifest::PageReading;
use ove_core::preprocess::{preprocess, resize_bicubic};
use ove_core::prompt::PromptBuilder;
use serde::Serialize;

use crate::generate::{EncodedImage, GenerateOptions, Generation, Model};
use crate::layout::{find_lines, LayoutOptions};

/// Margin around a line's ink box in a crop, as a share of the box height: room for
/// ascenders, descenders and accents the box missed, as in the training crops.
const CROP_MARGIN: f32 = 0.3;
/// The largest scale-up of a line crop (a tiny line is not blown up without bound).
const MAX_UPSCALE: f32 = 4.0;

/// One line of a page and what the model read in it.
#[derive(Debug, Clone, Serialize)]
pub struct LineText {
    pub bbox: LineBox,
    /// The line's block, in reading order.
    pub block: usize,
    pub text: String,
}

/// What the model read on one page.
#[derive(Debug, Clone, Serialize)]
pub struct PageText {
    /// The page's text: lines joined by newlines (or the whole-page answer).
    pub text: String,
    /// The lines in reading order (empty when the page was read whole).
    pub lines: Vec<LineText>,
    /// Tokens generated for the page, all lines together.
    pub generated_tokens: usize,
}

/// The crop of line `b` that the model reads: the box with a margin, clamped to the page,
/// scaled (bicubic) so that the box is `line_height` pixels tall when one is given.
pub fn line_crop(page: &RgbImage, b: LineBox, line_height: Option<u32>) -> RgbImage {
    let h = b.height().max(1) as f32;
    let m = (h * CROP_MARGIN).ceil().max(2.0) as u32;
    let (x0, y0) = (b.x0.saturating_sub(m), b.y0.saturating_sub(m));
    let x1 = (b.x1 + m).min(page.width()).max(x0 + 1);
    let y1 = (b.y1 + m).min(page.height()).max(y0 + 1);
    let crop = image::imageops::crop_imm(page, x0, y0, x1 - x0, y1 - y0).to_image();
    let Some(target) = line_height else {
        return crop;
    };
    let scale = (target as f32 / h).min(MAX_UPSCALE);
    if (scale - 1.0).abs() < 0.02 {
        return crop;
    }
    let w = ((crop.width() as f32 * scale).round() as u32).max(1);
    let h = ((crop.height() as f32 * scale).round() as u32).max(1);
    resize_bicubic(&crop, w, h)
}

/// Preprocesses an in-memory image with the bundle's preprocessor and encodes it as the
/// only image of a prompt.
pub fn encode_rgb(model: &mut Model, img: &RgbImage) -> Result<EncodedImage> {
    let p = preprocess(img, &model.manifest().preprocessor).context("preprocessing the image")?;
    model.encode_image(&p.pixel_values, p.grid_thw)
}

/// Asks `instruction` about one image and returns the answer, special tokens dropped.
pub fn read_image(
    model: &mut Model,
    prompt: &PromptBuilder,
    instruction: &str,
    img: &RgbImage,
    opts: &GenerateOptions,
) -> Result<(String, Generation)> {
    let encoded = encode_rgb(model, img)?;
    let ids = prompt.encode(instruction, &[encoded.tokens])?;
    let g = model.generate(&ids, &[&encoded], opts, |_| ControlFlow::Continue(()))?;
    let eos = model.eos_ids();
    let answer: Vec<i64> = g
        .tokens
        .iter()
        .copied()
        .filter(|t| !eos.contains(t))
        .collect();
    Ok((prompt.decode(&answer)?.trim().to_string(), g))
}

/// Reads one page as `mode` says: whole, or line by line (layout, crop, read each line).
pub fn read_page(
    model: &mut Model,
    prompt: &PromptBuilder,
    instruction: &str,
    page: &RgbImage,
    mode: PageReading,
    opts: &GenerateOptions,
) -> Result<PageText> {
    if mode == PageReading::Page {
        let (text, g) = read_image(model, prompt, instruction, page, opts)?;
        return Ok(PageText {
            text,
            lines: Vec::new(),
            generated_tokens: g.tokens.len(),
        });
    }
    let line_height = model.manifest().reading.line_height;
    let layout = find_lines(page, &LayoutOptions::default());
    let mut lines = Vec::with_capacity(layout.lines.len());
    let mut generated_tokens = 0;
    for (i, line) in layout.lines.iter().enumerate() {
        let crop = line_crop(page, line.bbox, line_height);
        let (text, g) = read_image(model, prompt, instruction, &crop, opts)
            .with_context(|| format!("line {} at {:?}", i + 1, line.bbox))?;
        generated_tokens += g.tokens.len();
        lines.push(LineText {
            bbox: line.bbox,
            block: line.block,
            text,
        });
    }
    let text = lines
        .iter()
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    Ok(PageText {
        text,
        lines,
        generated_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_crop_has_a_margin_and_the_trained_height() {
        let page = RgbImage::from_pixel(400, 200, image::Rgb([255, 255, 255]));
        let b = LineBox {
            x0: 50,
            y0: 100,
            x1: 250,
            y1: 120,
        };
        // 20 px box: 6 px margin on each side.
        let c = line_crop(&page, b, None);
        assert_eq!(c.dimensions(), (212, 32));
        // Scaled so the box is 40 px: x2.
        let c = line_crop(&page, b, Some(40));
        assert_eq!(c.dimensions(), (424, 64));
        // At the page edge the margin is clamped.
        let edge = LineBox {
            x0: 0,
            y0: 0,
            x1: 10,
            y1: 10,
        };
        assert_eq!(line_crop(&page, edge, None).dimensions(), (13, 13));
    }
}
