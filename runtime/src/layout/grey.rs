//! Grey conversion and the paper level (background) of a page.
//!
//! Photographed and scanned pages are lit unevenly: a gradient across the page, a shadow.
//! A local threshold copes with slow changes but not with the edge of a shadow, so the page
//! is first divided by an estimate of its own background (the paper), which leaves paper
//! near 255 everywhere and ink dark in proportion to its contrast. [`paper_gain`] gives the
//! factor per pixel; binarisation applies it (at half resolution, see `binarize`).
//!
//! The background is a grey-level closing (a maximum filter, then a minimum filter of the
//! same size) on a grid of 2x2-pixel cells (of the half-resolution page: 4x4 of the
//! original), each cell the mean of its pixels: the closing erases everything dark that is
//! narrower than the window (strokes, letters, lines of text) and keeps the edges of larger
//! areas where they are, so a shadow's edge stays sharp instead of leaking a dark band into
//! the normalised page. The reciprocal of the grid is interpolated bilinearly, so there is
//! no division per pixel. O(pixels).

/// Side of a background cell in pixels (the interpolation in [`widen`] assumes 2).
const CELL: usize = 2;

/// Luminance (Rec. 601 weights, in integers), row-major.
pub(crate) fn luma(page: &image::RgbImage) -> Vec<u8> {
    page.as_raw()
        .chunks_exact(3)
        .map(|p| ((77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32 + 128) >> 8) as u8)
        .collect()
}

/// Per pixel of `grey` (`w x h`), the gain that brings the paper under it to 255: 255 over
/// the background (a closing of radius about `radius` pixels), at least 1. `radius == 0`:
/// no normalisation, every gain 1.
pub(crate) fn paper_gain(grey: &[u8], w: usize, h: usize, radius: usize) -> Vec<f32> {
    if radius == 0 || w == 0 || h == 0 {
        return vec![1.0; w * h];
    }
    let (gw, gh) = (w.div_ceil(CELL), h.div_ceil(CELL));
    let r = radius.div_ceil(CELL);
    let mut bg = cells(grey, w, h);
    filter(&mut bg, gw, gh, r, u8::max);
    filter(&mut bg, gw, gh, r, u8::min);
    let recip: Vec<f32> = bg.iter().map(|&b| 255.0 / b.max(1) as f32).collect();
    let mut out = vec![0f32; w * h];
    let mut row = vec![0f32; gw];
    for y in 0..h {
        let (r0, r1, ty) = interp(y, gh);
        for (gx, v) in row.iter_mut().enumerate() {
            *v = recip[r0 * gw + gx] * (1.0 - ty) + recip[r1 * gw + gx] * ty;
        }
        widen(&row, &mut out[y * w..(y + 1) * w]);
    }
    out
}

/// `grey` times `gain`, capped at 255.
pub(crate) fn apply_gain(grey: &[u8], gain: &[f32]) -> Vec<u8> {
    grey.iter()
        .zip(gain)
        .map(|(&g, &k)| (g as f32 * k).min(255.0) as u8)
        .collect()
}

/// Grid cells `(i0, i1)` whose centres bracket pixel `p`, and the weight of `i1`.
fn interp(p: usize, n: usize) -> (usize, usize, f32) {
    let f = ((p as f32 + 0.5) / CELL as f32 - 0.5).clamp(0.0, (n - 1) as f32);
    let i0 = f as usize;
    let i1 = (i0 + 1).min(n - 1);
    (i0, i1, f - i0 as f32)
}

/// Linear interpolation of the cell values `row` (at cell centres) to every pixel of `full`.
fn widen(row: &[f32], full: &mut [f32]) {
    let w = full.len();
    // Before the first cell centre and after the last one: flat. Between two centres (two
    // pixels, as CELL is 2): a quarter and three quarters of the way.
    full[0] = row[0];
    let pairs = full[1..].chunks_exact_mut(CELL).zip(row.windows(2));
    for (out, pair) in pairs {
        let (a, b) = (pair[0], pair[1]);
        out[0] = 0.75 * a + 0.25 * b;
        out[1] = 0.25 * a + 0.75 * b;
    }
    let last = ((row.len() - 1) * CELL + 1).min(w);
    full[last..].fill(row[row.len() - 1]);
}

/// Per cell, the mean of its pixels (the closing's maximum then picks the paper-only cells
/// around, and averaging keeps pixel noise from biasing it).
fn cells(grey: &[u8], w: usize, h: usize) -> Vec<u8> {
    let (gw, gh) = (w.div_ceil(CELL), h.div_ceil(CELL));
    let mut sum = vec![0u32; gw * gh];
    for y in 0..h {
        let acc = &mut sum[(y / CELL) * gw..(y / CELL + 1) * gw];
        for (a, chunk) in acc.iter_mut().zip(grey[y * w..(y + 1) * w].chunks(CELL)) {
            *a += chunk.iter().map(|&v| v as u32).sum::<u32>();
        }
    }
    let mut out = vec![0u8; gw * gh];
    for gy in 0..gh {
        let rows = (h - gy * CELL).min(CELL) as u32;
        for gx in 0..gw {
            let n = rows * (w - gx * CELL).min(CELL) as u32;
            out[gy * gw + gx] = ((sum[gy * gw + gx] + n / 2) / n) as u8;
        }
    }
    out
}

/// Separable square filter of radius `r` (cells) with `pick` (max or min), in place; whole
/// rows are combined with shifted copies of themselves, which vectorises.
fn filter<F: Fn(u8, u8) -> u8>(g: &mut [u8], gw: usize, gh: usize, r: usize, pick: F) {
    let src = g.to_vec();
    for y in 0..gh {
        let row = &src[y * gw..(y + 1) * gw];
        let dst = &mut g[y * gw..(y + 1) * gw];
        for d in 1..=r.min(gw.saturating_sub(1)) {
            for (o, &v) in dst[d..].iter_mut().zip(row) {
                *o = pick(*o, v);
            }
            for (o, &v) in dst.iter_mut().zip(&row[d..]) {
                *o = pick(*o, v);
            }
        }
    }
    let src = g.to_vec();
    for y in 0..gh {
        let dst = &mut g[y * gw..(y + 1) * gw];
        for yy in y.saturating_sub(r)..(y + r + 1).min(gh) {
            for (o, &v) in dst.iter_mut().zip(&src[yy * gw..(yy + 1) * gw]) {
                *o = pick(*o, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalise(g: &[u8], w: usize, h: usize, radius: usize) -> Vec<u8> {
        apply_gain(g, &paper_gain(g, w, h, radius))
    }

    #[test]
    fn flat_paper_becomes_white_and_ink_keeps_contrast() {
        let (w, h) = (64, 48);
        let mut g = vec![200u8; w * h];
        g[20 * w + 20] = 100; // one ink pixel at half the paper's brightness
        let n = normalise(&g, w, h, 12);
        assert!(n[5 * w + 5] >= 250, "paper {}", n[5 * w + 5]);
        let ink = n[20 * w + 20];
        assert!((120..=135).contains(&ink), "ink {ink}");
    }

    #[test]
    fn shadow_edge_stays_sharp() {
        // Paper 240 above row 40, a shadow at 120 below it: both normalise to paper.
        let (w, h) = (100, 80);
        let g: Vec<u8> = (0..w * h)
            .map(|i| if i / w < 40 { 240 } else { 120 })
            .collect();
        let n = normalise(&g, w, h, 12);
        for y in (0..h).filter(|&y| !(38..42).contains(&y)) {
            assert!(n[y * w + 50] >= 235, "row {y}: {}", n[y * w + 50]);
        }
        // A text stroke inside the shadow keeps its contrast (half the shadow's level).
        let mut g = g;
        for y in 60..66 {
            g[y * w + 30] = 60;
        }
        let n = normalise(&g, w, h, 12);
        assert!(n[62 * w + 30] < 140, "{}", n[62 * w + 30]);
    }

    #[test]
    fn gradient_is_flattened() {
        let (w, h) = (200, 50);
        let g: Vec<u8> = (0..w * h).map(|i| (120 + (i % w) / 2) as u8).collect();
        let n = normalise(&g, w, h, 12);
        for x in [0, 50, 100, 150, 199] {
            assert!(n[25 * w + x] >= 240, "x {x}: {}", n[25 * w + x]);
        }
    }

    #[test]
    fn luma_weights() {
        let img = image::RgbImage::from_raw(2, 1, vec![255, 255, 255, 255, 0, 0]).unwrap();
        assert_eq!(luma(&img), vec![255, 77]);
    }
}
