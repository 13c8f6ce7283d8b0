//! Encoding a page's line crops in batches: one `lines.onnx` call for up to
//! [`MAX_LINE_BATCH`] lines instead of one `vision.onnx` call per line.
//!
//! Lines of a batch are padded to the longest one's patch count; the key bias keeps every
//! line's attention to its own class token and patches, so a line's rows are what
//! `vision.onnx` gives for it alone (the same products; only the summation order of the
//! engines' kernels may differ, in the last bits). Lines are sorted by length first, so a
//! batch pads little.

use anyhow::{Context, Result};
use ove_core::preprocess::{patch_positions, Preprocessed};

use crate::backend::LineBatchInputs;
use crate::generate::Model;

/// The most lines one `lines.onnx` call takes (the TensorRT profile's largest batch).
pub const MAX_LINE_BATCH: usize = 16;
/// The longest line, in patches, a `lines.onnx` call takes (a line of 256 patch columns
/// at 4 patch rows, far wider than a page); a longer one is encoded alone by vision.onnx.
pub const MAX_LINE_PATCHES: usize = 1024;
/// The most patches (padding included) one call holds: attention scores are
/// `[B, heads, 1 + P, 1 + P]`, so a batch of long lines is cut short rather than held whole.
pub const MAX_BATCH_PATCHES: usize = 4096;

/// Which crops go together, by index: sorted by patch count, consecutive runs of at most
/// `max_batch` (capped at [`MAX_LINE_BATCH`]) and [`MAX_BATCH_PATCHES`] padded patches,
/// none longer than 5/4 of the batch's shortest.
/// Crops over [`MAX_LINE_PATCHES`] (or every crop, at `max_batch` 1) are batches of their
/// own, which [`encode_lines`] sends through vision.onnx.
pub fn plan_batches(patches: &[usize], max_batch: usize) -> Vec<Vec<usize>> {
    let max_batch = max_batch.min(MAX_LINE_BATCH);
    let mut order: Vec<usize> = (0..patches.len()).collect();
    order.sort_by_key(|&i| (patches[i], i));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for i in order {
        // Sorted: the new crop is the longest, so the batch would pad to its length; a crop
        // over 5/4 of the batch's shortest starts a new batch (padding is paid in full on
        // a CPU, where one call per line costs little).
        let fits = |b: &Vec<usize>| {
            b.len() < max_batch
                && !alone(patches[b[0]], max_batch)
                && (b.len() + 1) * patches[i] <= MAX_BATCH_PATCHES
                && patches[i] * 4 <= patches[b[0]] * 5
        };
        match batches.last_mut() {
            Some(b) if !alone(patches[i], max_batch) && fits(b) => b.push(i),
            _ => batches.push(vec![i]),
        }
    }
    batches
}

/// Whether [`plan_batches`] leaves this crop to vision.onnx.
fn alone(patches: usize, max_batch: usize) -> bool {
    max_batch.min(MAX_LINE_BATCH) <= 1 || patches > MAX_LINE_PATCHES
}

/// The lines.onnx inputs of one batch of crops.
struct Packed {
    patches: usize,
    pixel_values: Vec<f32>,
    patch_pos: Vec<i64>,
    key_bias: Vec<f32>,
}

fn pack(crops: &[&Preprocessed], patch_dim: usize, merge: usize) -> Packed {
    let p = crops.iter().map(|c| c.num_patches()).max().unwrap_or(0);
    let b = crops.len();
    let mut x = Packed {
        patches: p,
        pixel_values: vec![0.0; b * p * patch_dim],
        patch_pos: vec![0; b * p * 2],
        key_bias: vec![f32::NEG_INFINITY; b * (p + 1)],
    };
    for (row, c) in crops.iter().enumerate() {
        let n = c.num_patches();
        let at = row * p * patch_dim;
        x.pixel_values[at..at + n * patch_dim].copy_from_slice(&c.pixel_values);
        for (j, [r, col]) in patch_positions(c.grid_thw, merge).into_iter().enumerate() {
            x.patch_pos[(row * p + j) * 2] = r;
            x.patch_pos[(row * p + j) * 2 + 1] = col;
        }
        // The class token and the line's own patches; the padding stays -inf.
        x.key_bias[row * (p + 1)..row * (p + 1) + 1 + n].fill(0.0);
    }
    x
}

/// Every crop's vision tokens `[P_i, D]` (what vision.onnx gives as `vision_tokens` for
/// the crop alone), in the order of `crops`. At most `max_batch` lines a call; 1, or a
/// bundle without lines.onnx, encodes them one by one through vision.onnx.
pub fn encode_lines(
    model: &mut Model,
    crops: &[Preprocessed],
    max_batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let patch_dim = model.manifest().model.vision_config.patch_dim();
    let merge = model.manifest().model.vision_config.spatial_merge_size;
    let d = model.manifest().model.vision_config.hidden_size;
    let max_batch = if model.bundle().lines().is_some() {
        max_batch
    } else {
        1
    };
    let counts: Vec<usize> = crops.iter().map(|c| c.num_patches()).collect();
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); crops.len()];
    for batch in plan_batches(&counts, max_batch) {
        if batch.len() == 1 && alone(counts[batch[0]], max_batch) {
            let c = &crops[batch[0]];
            out[batch[0]] = model
                .encode_image(&c.pixel_values, c.grid_thw)
                .with_context(|| format!("line crop {}", batch[0] + 1))?
                .vision_tokens;
            continue;
        }
        let members: Vec<&Preprocessed> = batch.iter().map(|&i| &crops[i]).collect();
        let x = pack(&members, patch_dim, merge);
        let tokens = model
            .encode_line_batch(&LineBatchInputs {
                batch: members.len(),
                patches: x.patches,
                pixel_values: &x.pixel_values,
                patch_pos: &x.patch_pos,
                key_bias: &x.key_bias,
            })
            .with_context(|| format!("a batch of {} line crops", members.len()))?;
        for (row, &i) in batch.iter().enumerate() {
            let at = row * x.patches * d;
            out[i] = tokens[at..at + counts[i] * d].to_vec();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_similar_lengths_in_order() {
        let p = [40, 8, 2000, 12, 8, 40];
        // Lengths within 5/4 of a batch's shortest share it.
        assert_eq!(
            plan_batches(&p, 2),
            vec![vec![1, 4], vec![3], vec![0, 5], vec![2]]
        );
        assert_eq!(plan_batches(&p, 16), plan_batches(&p, 2));
        assert_eq!(
            plan_batches(&[8, 9, 10, 11], 16),
            vec![vec![0, 1, 2], vec![3]]
        );
        // Never more than MAX_LINE_BATCH lines, nor MAX_BATCH_PATCHES padded patches.
        let sizes = |b: Vec<Vec<usize>>| b.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(plan_batches(&[4; 40], 100)), vec![16, 16, 8]);
        assert_eq!(sizes(plan_batches(&[1000; 9], 16)), vec![4, 4, 1]);
        // One by one: every crop alone, shortest first.
        assert_eq!(plan_batches(&p, 1).len(), 6);
        assert!(plan_batches(&[], 16).is_empty());
    }

    #[test]
    fn padding_is_masked_and_positions_follow_each_grid() {
        let crop = |w: usize| Preprocessed {
            pixel_values: vec![1.0; 2 * w * 3],
            grid_thw: [1, 2, w],
            resized_hw: (28, 14 * w),
        };
        let (a, b) = (crop(2), crop(4));
        let x = pack(&[&a, &b], 3, 2);
        assert_eq!(x.patches, 8);
        let inf = f32::NEG_INFINITY;
        // Line 0: class + 4 patches, then 4 padding keys; line 1: class + 8 patches.
        assert_eq!(
            &x.key_bias[..9],
            &[0.0, 0.0, 0.0, 0.0, 0.0, inf, inf, inf, inf]
        );
        assert!(x.key_bias[9..].iter().all(|&v| v == 0.0));
        assert_eq!(&x.pixel_values[12..24], &[0.0; 12]);
        let pos_b: Vec<i64> = patch_positions([1, 2, 4], 2)
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(&x.patch_pos[16..], &pos_b[..]);
    }
}
