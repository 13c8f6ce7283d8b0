//! Text lines for the CTC reader: every ground-truth line (`NAME.lines.json`, written by
//! `ove-docgen`) of one or more folders, cropped from its page as the runtime crops a line
//! the layout stage found ([`ove_core::preprocess::line_crop`]), scaled to the line height
//! and preprocessed with the checkpoint's preprocessor.
//!
//! The layout's boxes are not the generator's: each side of a training box is moved at
//! random (up to [`JITTER`] of the box height) so the reader does not learn to depend on
//! exact ink boxes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

use ove_core::config::PreprocessorConfig;
use ove_core::layout_metrics::LineBox;
use ove_core::preprocess::{line_crop, load_rgb, preprocess, DecodeOptions};

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

/// Preprocessed line crops of a batch: the vision encoder's input.
#[derive(Debug, Default)]
pub struct LineBatch {
    pub pixel_values: Vec<f32>,
    pub grids: Vec<[usize; 3]>,
    pub texts: Vec<String>,
    /// Lines left out (undecodable page, crop the preprocessor refused), with why.
    pub skipped: Vec<String>,
}

/// Crops, scales and preprocesses `items` (jittered when `rng` is given).
pub fn line_batch(
    items: &[&LineItem],
    line_height: u32,
    pre: &PreprocessorConfig,
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
                let crop = line_crop(&page, bbox, Some(line_height));
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
}
