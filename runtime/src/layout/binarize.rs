//! Local binarisation (Sauvola) of the grey page, its paper level normalised, into an ink
//! mask.
//!
//! A global threshold loses faint print next to bold print and cannot follow what lighting
//! normalisation leaves; Sauvola's threshold `T = m (1 + k (s / R - 1))` over a window
//! around each pixel (local mean `m`, standard deviation `s`, dynamic range `R`, here the
//! page's largest `s` so that faint print survives) follows both. The
//! window sums come from running box sums, the separable form of an integral image: column
//! sums over the window's rows are updated once per row, then a prefix sum over those gives
//! every window in O(1), so the whole page is O(pixels) for any window size and needs only
//! O(width) memory. The window statistics change slowly (the window is a few text heights
//! wide), so they and the thresholds are computed at half resolution (2x2 means, half the
//! radius) and each full-resolution pixel is compared with its 2x2 cell's threshold; this
//! quarters the cost and barely changes the mask (pixel noise even weighs less). The paper
//! level is normalised at half resolution too, and each threshold is carried back to the
//! raw grey level of its cell, so the full-resolution page is only read, never rewritten.
//!
//! Dark on light only: a pixel darker than [`ABSOLUTE_INK`] (in the normalised page, where
//! paper is about 255) is ink whatever its window, so large dark areas stay solid.

/// Normalised grey level below which a pixel is ink regardless of its neighbourhood.
const ABSOLUTE_INK: u8 = 100;

use super::grey;

/// The ink mask (1 = ink, 0 = paper), row-major, of the grey page `img` (`w x h`):
/// Sauvola's `k` over a window of radius `radius`, after normalising the paper level with a
/// background closing of radius `background_radius` (0: none), all in pixels of `img`.
pub(crate) fn sauvola(
    img: &[u8],
    w: usize,
    h: usize,
    radius: usize,
    k: f32,
    background_radius: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; w * h];
    if w == 0 || h == 0 {
        return out;
    }
    let (w2, h2) = (w.div_ceil(2), h.div_ceil(2));
    let half = halve(img, w, h);
    let gain = grey::paper_gain(&half, w2, h2, background_radius / 2);
    let norm = grey::apply_gain(&half, &gain);
    // Thresholds of the normalised page, brought back to raw grey levels: with
    // `n = g * gain`, `n < t` is `g < t / gain` (rounded up, one too high only when exact).
    let thr: Vec<u8> = thresholds(&norm, w2, h2, (radius / 2).max(1), k)
        .iter()
        .zip(&gain)
        .map(|(&t, &gn)| ((t as f32 / gn) as i32 + 1).min(255) as u8)
        .collect();
    for y in 0..h {
        let t = &thr[(y / 2) * w2..(y / 2 + 1) * w2];
        let src = &img[y * w..(y + 1) * w];
        let dst = &mut out[y * w..(y + 1) * w];
        let pairs = dst.chunks_exact_mut(2).zip(src.chunks_exact(2)).zip(t);
        for ((d, s), &t) in pairs {
            d[0] = (s[0] < t) as u8;
            d[1] = (s[1] < t) as u8;
        }
        if w % 2 == 1 {
            dst[w - 1] = (src[w - 1] < t[w2 - 1]) as u8;
        }
    }
    out
}

/// `img` at half resolution, each pixel the mean of (up to) 2x2.
fn halve(img: &[u8], w: usize, h: usize) -> Vec<u8> {
    let (w2, h2) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = vec![0u8; w2 * h2];
    for y2 in 0..h2 {
        let r0 = &img[2 * y2 * w..(2 * y2 + 1) * w];
        // An odd last row pairs with itself.
        let r1 = if 2 * y2 + 1 < h {
            &img[(2 * y2 + 1) * w..(2 * y2 + 2) * w]
        } else {
            r0
        };
        let o = &mut out[y2 * w2..(y2 + 1) * w2];
        let pairs = r0.chunks_exact(2).zip(r1.chunks_exact(2));
        for (o, (a, b)) in o.iter_mut().zip(pairs) {
            let sum = a[0] as u16 + a[1] as u16 + b[0] as u16 + b[1] as u16;
            *o = ((sum + 2) / 4) as u8;
        }
        if w % 2 == 1 {
            o[w2 - 1] = (r0[w - 1] as u16 + r1[w - 1] as u16).div_ceil(2) as u8;
        }
    }
    out
}

/// Per pixel of `img` (`w x h`), the smallest grey level that is paper: Sauvola's threshold
/// over the `2r + 1` window, rounded up, and at least [`ABSOLUTE_INK`]. The dynamic range
/// `R` is the page's largest window deviation within [`MIN_RANGE`, 128] rather than a
/// fixed 128 (Wolf and Jolion's idea): on a page of faint print no window reaches the
/// contrast of black on white, and with the fixed range its text would fall under paper.
fn thresholds(img: &[u8], w: usize, h: usize, r: usize, k: f32) -> Vec<u8> {
    let (mean, sd) = window_stats(img, w, h, r);
    let range = sd.iter().copied().fold(MIN_RANGE, f32::max).min(128.0);
    let k_range = k / range;
    mean.iter()
        .zip(&sd)
        .map(|(&m, &s)| {
            let t = m * (1.0 - k + k_range * s);
            (t as i32 + 1).clamp(ABSOLUTE_INK as i32, 255) as u8
        })
        .collect()
}

/// The smallest dynamic range used for Sauvola's threshold: below it, on a blank noisy page,
/// the noise itself would count as contrast.
const MIN_RANGE: f32 = 48.0;

/// Mean and standard deviation of the `2r + 1` square window around each pixel (clipped at
/// the edges).
fn window_stats(img: &[u8], w: usize, h: usize, r: usize) -> (Vec<f32>, Vec<f32>) {
    let mut mean = vec![0f32; w * h];
    let mut sd = vec![0f32; w * h];
    // Column sums over the window's rows, and their prefix sums along the row. The prefix
    // sums wrap around u32, which is harmless: a window's sum (at most 255^2 (2r+1)^2) fits,
    // and wrapping differences of wrapping sums are exact.
    let mut col_s = vec![0u32; w];
    let mut col_q = vec![0u32; w];
    let mut ps = vec![0u32; w + 1];
    let mut pq = vec![0u32; w + 1];
    let (mut top, mut bot) = (0usize, 0usize);
    for y in 0..h {
        let (want_top, want_bot) = (y.saturating_sub(r), (y + r + 1).min(h));
        while bot < want_bot {
            for ((s, q), &v) in col_s.iter_mut().zip(&mut col_q).zip(&img[bot * w..]) {
                *s += v as u32;
                *q += v as u32 * v as u32;
            }
            bot += 1;
        }
        while top < want_top {
            for ((s, q), &v) in col_s.iter_mut().zip(&mut col_q).zip(&img[top * w..]) {
                *s -= v as u32;
                *q -= v as u32 * v as u32;
            }
            top += 1;
        }
        for x in 0..w {
            ps[x + 1] = ps[x].wrapping_add(col_s[x]);
            pq[x + 1] = pq[x].wrapping_add(col_q[x]);
        }
        let rows = (bot - top) as f32;
        let (m_row, s_row) = (&mut mean[y * w..(y + 1) * w], &mut sd[y * w..(y + 1) * w]);
        // Windows clipped by the left or right edge, one by one.
        let (inner0, inner1) = (r.min(w), w.saturating_sub(r).max(r.min(w)));
        for x in (0..inner0).chain(inner1..w) {
            let (x0, x1) = (x.saturating_sub(r), (x + r + 1).min(w));
            let inv_n = 1.0 / ((x1 - x0) as f32 * rows);
            let m = ps[x1].wrapping_sub(ps[x0]) as f32 * inv_n;
            let q = pq[x1].wrapping_sub(pq[x0]) as f32 * inv_n;
            m_row[x] = m;
            s_row[x] = (q - m * m).max(0.0).sqrt();
        }
        // The full-width windows between: straight zipped passes the compiler vectorises.
        if inner1 > inner0 {
            let inv_n = 1.0 / ((2 * r + 1) as f32 * rows);
            let span = inner0..inner1;
            let (lo, hi) = (inner0 - r, inner0 + r + 1);
            let n = span.len();
            let (s_hi, s_lo) = (&ps[hi..hi + n], &ps[lo..lo + n]);
            let (q_hi, q_lo) = (&pq[hi..hi + n], &pq[lo..lo + n]);
            let (m_out, s_out) = (&mut m_row[span.clone()], &mut s_row[span]);
            for i in 0..n {
                // Window sums are below 2^31: through i32, which converts to f32 directly.
                let m = s_hi[i].wrapping_sub(s_lo[i]) as i32 as f32 * inv_n;
                let q = q_hi[i].wrapping_sub(q_lo[i]) as i32 as f32 * inv_n;
                m_out[i] = m;
                s_out[i] = (q - m * m).max(0.0).sqrt();
            }
        }
    }
    (mean, sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dark_square_on_paper_is_ink_and_paper_is_not() {
        let (w, h) = (60, 40);
        let mut g = vec![250u8; w * h];
        for y in 10..20 {
            for x in 10..30 {
                g[y * w + x] = 150; // grey ink, above ABSOLUTE_INK: Sauvola decides
            }
        }
        let b = sauvola(&g, w, h, 10, 0.25, 0);
        let ink: usize = b.iter().map(|&v| v as usize).sum();
        assert_eq!(ink, 200);
        assert_eq!(b[15 * w + 15], 1);
        assert_eq!(b[30 * w + 50], 0);
    }

    #[test]
    fn flat_page_has_no_ink() {
        let g = vec![180u8; 50 * 30];
        assert!(sauvola(&g, 50, 30, 5, 0.3, 14).iter().all(|&v| v == 0));
    }
}
