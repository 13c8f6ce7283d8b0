//! The CTC line reader: one linear layer over the vision encoder's patch tokens that emits
//! several frames per 14-px patch column, over the 256 UTF-8 bytes plus a blank.
//!
//! Why: an autoregressive decoder trained from random weights has to find the alignment
//! between image tokens and characters by itself, and on a small budget it never starts
//! to read. A CTC loss gives every image column a gradient from the first step, so a small
//! encoder learns glyphs from a few thousand lines. The trainer trains the head with the
//! encoder (`ove-train ctc`); a bundle may carry it (`ove export --ctc-head`) and then
//! `ove ocr` can read line crops with it, without running the decoder at all.
//!
//! This module is the one definition both sides use: the class alphabet (blank = 0, byte
//! `b` = `b + 1`, so every tokenizer character is reachable: byte-level BPE tokens are
//! bytes), the column pooling (the mean over a column's patch rows, in the preprocessor's
//! patch order), the frame layout (column `c` gives frames `c*F .. c*F+F`) and greedy
//! decoding (best class per frame, repeats merged, blanks dropped).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use crate::preprocess::patch_positions;
use crate::tensor_file::{read_safetensors, write_safetensors, Tensor};

/// The head's file, in a checkpoint directory and in a bundle.
pub const CTC_HEAD_FILE: &str = "ctc_head.safetensors";
/// `[F * CLASSES, D]`: the head's weight (F frames per patch column).
pub const WEIGHT: &str = "ctc_head.proj.weight";
/// `[F * CLASSES]`.
pub const BIAS: &str = "ctc_head.proj.bias";
/// The blank class.
pub const BLANK: usize = 0;
/// Blank + the 256 byte values.
pub const CLASSES: usize = 257;

/// The CTC targets of a text: its UTF-8 bytes, each shifted past the blank.
pub fn targets(text: &str) -> Vec<i64> {
    text.bytes().map(|b| b as i64 + 1).collect()
}

/// Which patch column each patch token belongs to, in the preprocessor's patch order, and
/// the number of columns (the grid's width) and of rows per column (`t * h`).
pub fn token_columns(grid_thw: [usize; 3], merge_size: usize) -> (Vec<usize>, usize, usize) {
    let cols = patch_positions(grid_thw, merge_size)
        .iter()
        .map(|p| p[1] as usize)
        .collect();
    (cols, grid_thw[2], grid_thw[0] * grid_thw[1])
}

/// Frames a line image of this patch grid yields.
pub fn frames(grid_thw: [usize; 3], frames_per_column: usize) -> usize {
    grid_thw[2] * frames_per_column
}

/// `[w, D]`: the mean of each patch column's tokens, from `tokens` `[P, D]`.
pub fn pool_columns(
    tokens: &[f32],
    d: usize,
    grid_thw: [usize; 3],
    merge_size: usize,
) -> Result<Vec<f32>> {
    let (cols, w, rows) = token_columns(grid_thw, merge_size);
    ensure!(
        tokens.len() == cols.len() * d,
        "{} vision values are not the {} patches x {d} of grid {grid_thw:?}",
        tokens.len(),
        cols.len()
    );
    let mut out = vec![0f32; w * d];
    for (tok, &c) in tokens.chunks_exact(d).zip(&cols) {
        for (o, v) in out[c * d..(c + 1) * d].iter_mut().zip(tok) {
            *o += v;
        }
    }
    let inv = 1.0 / rows as f32;
    out.iter_mut().for_each(|v| *v *= inv);
    Ok(out)
}

/// The text of a reading, `best` being each frame's best class: its greedy bytes
/// ([`greedy_bytes`]) when they are valid UTF-8, else the most probable frame path whose
/// bytes are ([`crate::ctc_utf8::best_valid_path`]) over the frames' softmax `[frames,
/// CLASSES]`, which `probs` gives only then (a character's bytes half read). The one
/// decoding the runtime's reader and the trainer's evaluation share.
pub fn reading_text<P: AsRef<[f32]>, E>(
    best: &[usize],
    probs: impl FnOnce() -> Result<P, E>,
) -> Result<String, E> {
    match String::from_utf8(greedy_bytes(best)) {
        Ok(text) => Ok(text),
        Err(_) => Ok(crate::ctc_utf8::best_valid_path(probs()?.as_ref())),
    }
}

/// The bytes of the greedy reading: the best class of each frame, repeats merged and
/// blanks dropped.
pub fn greedy_bytes(best: &[usize]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut prev = BLANK;
    for &c in best {
        if c != prev && c != BLANK {
            bytes.push((c - 1).min(255) as u8);
        }
        prev = c;
    }
    bytes
}

/// How sure a greedy reading is, from 0 to 1: over its frames, the least probability
/// the head gave to the classes that leave the text as read there (the frame's best class,
/// the blank, and its neighbours' best classes: a frame on a glyph's edge hesitates
/// between the glyph and the blank, which changes nothing). What is left is the weight of
/// another character, a glyph taken for another or a character dropped; one such frame is
/// where a reading goes wrong, so the weakest frame, not the mean, tells a doubtful line.
/// `probs` is `[best.len(), CLASSES]`; an empty reading is sure (1).
pub fn confidence(best: &[usize], probs: &[f32]) -> f32 {
    let mut sure = 1f32;
    for (t, p) in probs.chunks_exact(CLASSES).enumerate().take(best.len()) {
        let mut keep = [best[t], BLANK, BLANK, BLANK];
        if t > 0 {
            keep[2] = best[t - 1];
        }
        if let Some(&next) = best.get(t + 1) {
            keep[3] = next;
        }
        let mut mass = 0f32;
        for (i, &c) in keep.iter().enumerate() {
            if !keep[..i].contains(&c) {
                mass += p[c];
            }
        }
        sure = sure.min(mass);
    }
    sure.min(1.0)
}

/// A loaded head: `logits = pooled_column @ weight^T + bias`, reshaped to `[F, CLASSES]`.
#[derive(Debug, Clone)]
pub struct CtcHead {
    /// `[F * CLASSES, D]`, row major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub d: usize,
    pub frames_per_column: usize,
}

impl CtcHead {
    /// Reads [`WEIGHT`] and [`BIAS`] from a safetensors file; F comes from the shape.
    pub fn load(path: &Path) -> Result<Self> {
        let tensors = read_safetensors(path)?;
        let get = |name: &str| {
            tensors
                .get(name)
                .with_context(|| format!("{}: no tensor {name}", path.display()))
        };
        let (w, b) = (get(WEIGHT)?, get(BIAS)?);
        let ws = w.shape().to_vec();
        ensure!(
            ws.len() == 2 && ws[0].is_multiple_of(CLASSES) && ws[0] > 0,
            "{}: {WEIGHT} has shape {ws:?}, expected [F * {CLASSES}, D]",
            path.display()
        );
        ensure!(
            b.shape() == [ws[0]],
            "{}: {BIAS} has shape {:?}, expected [{}]",
            path.display(),
            b.shape(),
            ws[0]
        );
        Ok(Self {
            weight: w.to_f32(),
            bias: b.to_f32(),
            d: ws[1],
            frames_per_column: ws[0] / CLASSES,
        })
    }

    /// Writes the head as [`Self::load`] reads it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let rows = self.frames_per_column * CLASSES;
        let mut t = BTreeMap::new();
        t.insert(
            WEIGHT.to_string(),
            Tensor::f32(vec![rows, self.d], self.weight.clone()),
        );
        t.insert(BIAS.to_string(), Tensor::f32(vec![rows], self.bias.clone()));
        write_safetensors(path, &t)
    }

    /// The text of one line image from its vision tokens `[P, D]`.
    pub fn read(&self, tokens: &[f32], grid_thw: [usize; 3], merge_size: usize) -> Result<String> {
        Ok(self.read_scored(tokens, grid_thw, merge_size)?.0)
    }

    /// The text of one line image ([`reading_text`]) and the reading's confidence
    /// ([`confidence`]).
    pub fn read_scored(
        &self,
        tokens: &[f32],
        grid_thw: [usize; 3],
        merge_size: usize,
    ) -> Result<(String, f32)> {
        let pooled = pool_columns(tokens, self.d, grid_thw, merge_size)?;
        let (best, probs) = self.frame_probs(&pooled)?;
        let text = reading_text(&best, || Ok::<_, anyhow::Error>(&probs[..]))?;
        Ok((text, confidence(&best, &probs)))
    }

    /// The best class of every frame for pooled columns `[w, D]`.
    pub fn best_classes(&self, pooled: &[f32]) -> Result<Vec<usize>> {
        Ok(self.frame_probs(pooled)?.0)
    }

    /// The best class of every frame for pooled columns `[w, D]`, and every frame's
    /// softmax over the classes, `[frames, CLASSES]` row major.
    pub fn frame_probs(&self, pooled: &[f32]) -> Result<(Vec<usize>, Vec<f32>)> {
        let d = self.d;
        if !pooled.len().is_multiple_of(d) {
            bail!(
                "{} pooled values are not a multiple of D = {d}",
                pooled.len()
            );
        }
        let n = pooled.len() / d * self.frames_per_column;
        let mut best = Vec::with_capacity(n);
        let mut probs = vec![0f32; n * CLASSES];
        let mut frames = probs.chunks_exact_mut(CLASSES);
        for col in pooled.chunks_exact(d) {
            for f in 0..self.frames_per_column {
                let p = frames.next().expect("one row of probabilities a frame");
                let mut arg = (BLANK, f32::NEG_INFINITY);
                for (c, l) in p.iter_mut().enumerate() {
                    let row = f * CLASSES + c;
                    let w = &self.weight[row * d..(row + 1) * d];
                    *l = self.bias[row] + dot(w, col);
                    if *l > arg.1 {
                        arg = (c, *l);
                    }
                }
                // Softmax from the best logit down: no overflow.
                p.iter_mut().for_each(|l| *l = (*l - arg.1).exp());
                let z: f32 = p.iter().sum();
                p.iter_mut().for_each(|v| *v /= z);
                best.push(arg.0);
            }
        }
        Ok((best, probs))
    }
}

/// `a . b` summed in [`LANES`] independent partial sums: a single running sum is one long
/// chain of dependent adds that the compiler may not reorder (float addition is not
/// associative), so it neither vectorises nor pipelines; lanes do both. This product is
/// most of the CTC head's time, and the head was a quarter of a receipt's reading time.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let (a_body, a_tail) = a.split_at(a.len() - a.len() % LANES);
    let (b_body, b_tail) = b.split_at(a_body.len());
    for (x, y) in a_body.chunks_exact(LANES).zip(b_body.chunks_exact(LANES)) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Partial sums of [`dot`]: two AVX registers or four SSE ones.
const LANES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_sums_every_product_tail_included() {
        for n in [0, 1, 15, 16, 17, 192, 200] {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5).collect();
            let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert_eq!(dot(&a, &b), want, "n = {n}");
        }
    }

    #[test]
    fn targets_are_bytes_past_the_blank() {
        assert_eq!(targets("A1"), vec![66, 50]);
        assert_eq!(targets("€").len(), 3);
    }

    #[test]
    fn greedy_merges_repeats_and_drops_blanks() {
        let a = b'a' as usize + 1;
        let b = b'b' as usize + 1;
        assert_eq!(greedy_bytes(&[0, a, a, 0, a, b, b, 0]), b"aab");
        assert_eq!(greedy_bytes(&[]), b"");
        // Bytes of a multi-byte character, split by blanks, come back whole; a valid
        // greedy reading is the text, and the frames' probabilities are not asked for.
        let e: Vec<usize> = "é".bytes().flat_map(|x| [x as usize + 1, 0]).collect();
        let text = reading_text(&e, || Err::<Vec<f32>, _>("probabilities asked for"));
        assert_eq!(text.as_deref(), Ok("é"));
    }

    #[test]
    fn columns_are_pooled_in_patch_order() {
        // Grid 1x2x4, merge 2: patch order is the 2x2 blocks in raster order.
        let grid = [1, 2, 4];
        let (cols, w, rows) = token_columns(grid, 2);
        assert_eq!((cols, w, rows), (vec![0, 1, 0, 1, 2, 3, 2, 3], 4, 2));
        let tokens: Vec<f32> = (0..8).map(|i| i as f32).collect();
        // Column 0 holds tokens 0 and 2, column 1 tokens 1 and 3, ...
        assert_eq!(
            pool_columns(&tokens, 1, grid, 2).unwrap(),
            vec![1.0, 2.0, 5.0, 6.0]
        );
        assert!(pool_columns(&tokens[..7], 1, grid, 2).is_err());
    }

    #[test]
    fn a_head_reads_its_best_classes_and_round_trips() {
        // D = 2, F = 2: frame 0 picks 'h' from feature 0, frame 1 blank from feature 1.
        let d = 2;
        let rows = 2 * CLASSES;
        let mut weight = vec![0f32; rows * d];
        let h = b'h' as usize + 1;
        weight[h * d] = 1.0;
        weight[(CLASSES + BLANK) * d + 1] = 1.0;
        let head = CtcHead {
            weight,
            bias: vec![0.0; rows],
            d,
            frames_per_column: 2,
        };
        let best = head.best_classes(&[1.0, 1.0, 1.0, 1.0]).unwrap();
        assert_eq!(best, vec![h, BLANK, h, BLANK]);
        assert_eq!(greedy_bytes(&best), b"hh");
        // Each frame's best logit is 1, the other 256 are 0: p = e / (e + 256), and every
        // frame's probabilities sum to 1.
        let p = std::f32::consts::E / (std::f32::consts::E + 256.0);
        let (best, probs) = head.frame_probs(&[1.0, 1.0]).unwrap();
        assert_eq!(best, vec![h, BLANK]);
        assert!((probs[h] - p).abs() < 1e-6, "{} vs {p}", probs[h]);
        assert!((probs[CLASSES + BLANK] - p).abs() < 1e-6);
        for row in probs.chunks_exact(CLASSES) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        // Each frame keeps h and the blank: its best class (p) and the other one, one of
        // the 256 classes sharing 1 - p; the rest is other characters.
        let (text, conf) = head.read_scored(&[1.0, 1.0], [1, 1, 1], 1).unwrap();
        assert_eq!(text, "h");
        assert!((conf - p - (1.0 - p) / 256.0).abs() < 1e-6, "{conf}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(CTC_HEAD_FILE);
        head.save(&p).unwrap();
        let back = CtcHead::load(&p).unwrap();
        assert_eq!(back.frames_per_column, 2);
        assert_eq!(back.weight, head.weight);
    }

    #[test]
    fn confidence_is_the_weakest_frame_and_ignores_glyph_edges() {
        let a = b'a' as usize + 1;
        let b = b'b' as usize + 1;
        let frame = |pairs: &[(usize, f32)]| {
            let mut p = vec![0f32; CLASSES];
            for &(c, v) in pairs {
                p[c] = v;
            }
            p
        };
        // a, a-or-blank, blank: hesitating at the edge of a glyph costs nothing.
        let best = [a, a, BLANK];
        let probs = [
            frame(&[(a, 1.0)]),
            frame(&[(a, 0.5), (BLANK, 0.5)]),
            frame(&[(BLANK, 1.0)]),
        ]
        .concat();
        assert_eq!(confidence(&best, &probs), 1.0);
        // A frame that gives b 0.4 where a is read: the line is 0.6 sure.
        let probs = [
            frame(&[(a, 1.0)]),
            frame(&[(a, 0.6), (b, 0.4)]),
            frame(&[(BLANK, 1.0)]),
        ]
        .concat();
        assert!((confidence(&best, &probs) - 0.6).abs() < 1e-6);
        // A blank frame that gives b 0.3: a character may have been dropped.
        let probs = [
            frame(&[(a, 1.0)]),
            frame(&[(a, 1.0)]),
            frame(&[(BLANK, 0.7), (b, 0.3)]),
        ]
        .concat();
        assert!((confidence(&best, &probs) - 0.7).abs() < 1e-6);
        assert_eq!(confidence(&[], &[]), 1.0);
    }
}
