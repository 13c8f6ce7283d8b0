//! Cutting the resized image into the flattened patch rows the vision encoder takes,
//! and the rotary positions of those rows.
//!
//! The reference (`Qwen2VLImageProcessor._preprocess`) reshapes the channel-first frames
//! to `(t, T, C, h/m, m, p, w/m, m, p)` and permutes to `(t, h/m, w/m, m, m, C, T, p, p)`:
//! - rows go over 2x2 (merge x merge) blocks in raster order over the block grid, and
//!   inside a block top-left, top-right, bottom-left, bottom-right, so the four patches
//!   the merger concatenates into one LLM token are consecutive;
//! - within a row, values are channel-major: all of channel 0's `T x p x p` values, then
//!   channel 1, then 2; within a channel, frame-major, then row-major over the patch.
//!
//! One still image is one frame; when `temporal_patch_size` T > 1 the reference repeats
//! the frame to fill the T slots, so each channel holds T identical copies.

use image::RgbImage;

use super::normalize::NormalizeTable;

/// Patch geometry.
#[derive(Debug, Clone, Copy)]
pub struct PatchLayout {
    pub patch_size: usize,
    pub merge_size: usize,
    pub temporal_patch_size: usize,
}

impl PatchLayout {
    /// Values per row: 3 x T x p x p.
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// Flattens `img` (both sides multiples of `patch_size * merge_size`) into rows of
/// [`PatchLayout::patch_dim`] normalised values, in the reference's patch order.
pub fn patchify(img: &RgbImage, layout: PatchLayout, norm: &NormalizeTable) -> Vec<f32> {
    let (p, m, t) = (
        layout.patch_size,
        layout.merge_size,
        layout.temporal_patch_size,
    );
    let (w, h) = (img.width() as usize, img.height() as usize);
    debug_assert!(h % (p * m) == 0 && w % (p * m) == 0);
    let (gh, gw) = (h / p, w / p);
    let src = img.as_raw();
    let mut out = Vec::with_capacity(gh * gw * layout.patch_dim());
    let mut channel = vec![0f32; p * p];
    for [row, col] in patch_positions([1, gh, gw], m) {
        let (y0, x0) = (row as usize * p, col as usize * p);
        for c in 0..3 {
            for (dy, dst) in channel.chunks_exact_mut(p).enumerate() {
                let base = ((y0 + dy) * w + x0) * 3 + c;
                for (dx, v) in dst.iter_mut().enumerate() {
                    *v = norm.get(c, src[base + dx * 3]);
                }
            }
            for _ in 0..t {
                out.extend_from_slice(&channel);
            }
        }
    }
    out
}

/// The (row, col) patch-grid coordinates of every patch row, in the order
/// [`patchify`] emits them; for `grid_t` > 1 frames the frame's order repeats.
/// The vision encoder's 2-D rotary embedding is indexed by these.
///
/// # Panics
/// If the grid's height or width is not a multiple of `merge_size` (no preprocessed
/// image has such a grid).
pub fn patch_positions(grid_thw: [usize; 3], merge_size: usize) -> Vec<[i64; 2]> {
    let [t, h, w] = grid_thw;
    let m = merge_size;
    assert!(
        m > 0 && h % m == 0 && w % m == 0,
        "patch grid {h}x{w} is not a multiple of merge size {m}"
    );
    let mut out = Vec::with_capacity(t * h * w);
    for _ in 0..t {
        for bh in 0..h / m {
            for bw in 0..w / m {
                for ih in 0..m {
                    for iw in 0..m {
                        out.push([(bh * m + ih) as i64, (bw * m + iw) as i64]);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_merge_blocks() {
        let pos = patch_positions([1, 2, 4], 2);
        assert_eq!(
            pos,
            vec![
                [0, 0],
                [0, 1],
                [1, 0],
                [1, 1],
                [0, 2],
                [0, 3],
                [1, 2],
                [1, 3]
            ]
        );
        let pos = patch_positions([2, 2, 2], 2);
        assert_eq!(pos.len(), 8);
        assert_eq!(pos[..4], pos[4..]);
        // merge 1: plain raster order.
        assert_eq!(
            patch_positions([1, 2, 2], 1),
            vec![[0, 0], [0, 1], [1, 0], [1, 1]]
        );
    }
}
