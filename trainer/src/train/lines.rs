//! Text lines for the CTC reader: every ground-truth line (`NAME.lines.json`, written by
//! `ove-docgen`) of one or more folders, cropped from its page as the runtime crops a line
//! the layout stage found ([`ove_core::preprocess::line_crop`]), scaled to the line height
//! and preprocessed with the checkpoint's preprocessor.
//!
//! The layout's boxes are not the generator's: each side of a training box is moved at
//! random (up to [`JITTER`] of the box height) so the reader does not learn to depend on
//! exact ink boxes. Optionally ([`Reshape`]) each crop's glyphs are also made wider or
//! narrower and bolder or lighter: fonts the model never saw differ from the training ones
//! mostly in width and stroke weight, and a wide bold glyph the reader has only seen narrow
//! is where it emits a character twice.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

use image::RgbImage;
use ove_core::config::PreprocessorConfig;
use ove_core::layout_metrics::LineBox;
use ove_core::preprocess::{line_crop, load_rgb, preprocess, resize_bicubic, DecodeOptions};

use crate::train::binpack::SplitMix64;

/// Largest move of a box side during training, as a share of the box height.
pub const JITTER: f32 = 0.15;

/// One ground-truth line: its page image, box and text.
#[derive(Debug, Clone)]
pub struct LineItem {
    pub image: PathBuf,
    pub bbox: LineBox,
    pub text: String,
}

#[derive(Deserialize)]
struct LinesFile {
    image: String,
    lines: Vec<TruthLine>,
}

#[derive(Deserialize)]
struct TruthLine {
    bbox: LineBox,
    text: String,
}

/// Every line with text of every `*.lines.json` in `dirs`, in file-name order.
pub fn read_lines(dirs: &[PathBuf]) -> Result<Vec<LineItem>> {
    let mut out = Vec::new();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", dir.display()))?;
        files.retain(|p| p.to_str().is_some_and(|s| s.ends_with(".lines.json")));
        files.sort();
        for f in files {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            let lf: LinesFile = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a lines file", f.display()))?;
            for l in lf.lines {
                let t = l.text.trim();
                if !t.is_empty() && l.bbox.height() > 0 && l.bbox.width() > 0 {
                    out.push(LineItem {
                        image: dir.join(&lf.image),
                        bbox: l.bbox,
                        text: t.to_string(),
                    });
                }
            }
        }
    }
    anyhow::ensure!(
        !out.is_empty(),
        "no text lines in {dirs:?} (ove-docgen writes NAME.lines.json beside each image)"
    );
    Ok(out)
}

/// Uniform in `[-1, 1)`.
fn signed(rng: &mut SplitMix64) -> f32 {
    (rng.unit() * 2.0 - 1.0) as f32
}

/// A permutation of `0..n`.
pub fn permutation(rng: &mut SplitMix64, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut v);
    v
}

/// `b` with each side moved by up to `JITTER * height`, kept non-empty.
pub fn jitter(b: LineBox, rng: &mut SplitMix64) -> LineBox {
    let h = b.height() as f32 * JITTER;
    let mv = |v: u32, r: f32| (v as f32 + r * h).round().max(0.0) as u32;
    let (x0, y0) = (mv(b.x0, signed(rng)), mv(b.y0, signed(rng)));
    let (x1, y1) = (mv(b.x1, signed(rng)), mv(b.y1, signed(rng)));
    LineBox {
        x0,
        y0,
        x1: x1.max(x0 + 1),
        y1: y1.max(y0 + 1),
    }
}

/// Random changes of a training crop's glyph shapes (none by default).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reshape {
    /// Widths are scaled by a factor drawn log-uniformly in `[1/(1+w), 1+w]` (0: off).
    pub width: f32,
    /// Share of crops whose strokes are made bolder or lighter (half each).
    pub stroke: f32,
}

impl Reshape {
    /// `crop` with its width scaled and its strokes changed as drawn from `rng`.
    pub fn apply(&self, crop: RgbImage, rng: &mut SplitMix64) -> RgbImage {
        let mut crop = crop;
        if self.width > 0.0 {
            let f = (signed(rng) * self.width.ln_1p()).exp();
            let w = ((crop.width() as f32 * f).round() as u32).max(1);
            if w != crop.width() {
                crop = resize_bicubic(&crop, w, crop.height());
            }
        }
        if (rng.unit() as f32) < self.stroke {
            crop = restroke(&crop, rng.unit() < 0.5);
        }
        crop
    }
}

/// Strokes half a pixel bolder (`bold`: each channel moves half-way to the darkest of the
/// pixel and its right, lower and lower-right neighbours) or lighter (to the lightest).
/// Ink is darker than paper on every generated page, so darker is bolder.
fn restroke(img: &RgbImage, bold: bool) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let (x1, y1) = ((x + 1).min(w - 1), (y + 1).min(h - 1));
        let near = [img[(x, y)], img[(x1, y)], img[(x, y1)], img[(x1, y1)]];
        let mut out = img[(x, y)];
        for (c, o) in out.0.iter_mut().enumerate() {
            let vals = near.iter().map(|p| p.0[c]);
            let pick = if bold { vals.min() } else { vals.max() }.unwrap_or(*o);
            *o = (*o as u16 + pick as u16).div_ceil(2) as u8;
        }
        out
    })
}

/// Preprocessed line crops of a batch: the vision encoder's input.
#[derive(Debug, Default)]
pub struct LineBatch {
    pub pixel_values: Vec<f32>,
    pub grids: Vec<[usize; 3]>,
    pub texts: Vec<String>,
    /// Lines left out (undecodable page, crop the preprocessor refused), with why.
    pub skipped: Vec<String>,
}

/// Crops, scales and preprocesses `items` (boxes jittered and glyphs reshaped when `rng`
/// is given).
pub fn line_batch(
    items: &[&LineItem],
    line_height: u32,
    pre: &PreprocessorConfig,
    reshape: Reshape,
    mut rng: Option<&mut SplitMix64>,
) -> LineBatch {
    let mut batch = LineBatch::default();
    let opts = DecodeOptions::default();
    for item in items {
        let bbox = match rng.as_deref_mut() {
            Some(r) => jitter(item.bbox, r),
            None => item.bbox,
        };
        let r = load_rgb(&item.image, &opts)
            .map_err(anyhow::Error::from)
            .and_then(|page| {
                let mut crop = line_crop(&page, bbox, Some(line_height));
                if let Some(r) = rng.as_deref_mut() {
                    crop = reshape.apply(crop, r);
                }
                Ok(preprocess(&crop, pre)?)
            });
        match r {
            Ok(p) => {
                batch.pixel_values.extend_from_slice(&p.pixel_values);
                batch.grids.push(p.grid_thw);
                batch.texts.push(item.text.clone());
            }
            Err(e) => {
                batch
                    .skipped
                    .push(format!("{} {:?}: {e:#}", item.image.display(), item.bbox))
            }
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_near_and_non_empty() {
        let mut rng = SplitMix64::new(1);
        let b = LineBox {
            x0: 10,
            y0: 20,
            x1: 200,
            y1: 40,
        };
        for _ in 0..200 {
            let j = jitter(b, &mut rng);
            assert!(j.x1 > j.x0 && j.y1 > j.y0);
            assert!((j.y0 as i64 - 20).abs() <= 3 && (j.x1 as i64 - 200).abs() <= 3);
        }
        let p = permutation(&mut rng, 10);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn reshaping_scales_widths_and_moves_strokes_half_way() {
        let mut rng = SplitMix64::new(3);
        // A black stem two pixels wide on white.
        let img = RgbImage::from_fn(40, 32, |x, _| {
            image::Rgb(if (10..12).contains(&x) {
                [0; 3]
            } else {
                [255; 3]
            })
        });
        let off = Reshape::default();
        assert_eq!(off.apply(img.clone(), &mut rng), img);
        let wide = Reshape {
            width: 0.25,
            stroke: 0.0,
        };
        let mut widths = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let out = wide.apply(img.clone(), &mut rng);
            assert_eq!(out.height(), 32);
            assert!((32..=50).contains(&out.width()), "{}", out.width());
            widths.insert(out.width());
        }
        assert!(widths.iter().any(|&w| w < 40) && widths.iter().any(|&w| w > 40));
        // Bolder: the white pixel left of the stem goes half-way to black; lighter: the
        // stem's last column goes half-way to white; paper far away stays white.
        let bold = restroke(&img, true);
        assert_eq!(bold[(9, 5)].0, [128; 3]);
        assert_eq!(bold[(10, 5)].0, [0; 3]);
        assert_eq!(bold[(30, 5)].0, [255; 3]);
        let light = restroke(&img, false);
        assert_eq!(light[(11, 5)].0, [128; 3]);
        assert_eq!(light[(10, 5)].0, [0; 3]);
    }
}
