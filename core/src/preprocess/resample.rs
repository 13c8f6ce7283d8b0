//! Pillow-exact 8-bit bicubic resampling (`Image.resize(size, Image.BICUBIC)`).
//!
//! The reference resizes with PIL, and the vision encoder sees the rounding of every
//! pixel, so this reimplements the algorithm of Pillow's `src/libImaging/Resample.c`
//! rather than using any other bicubic filter:
//! - separable passes, horizontal first, then vertical, except that (since Pillow 13.0)
//!   the vertical pass goes first when the height shrinks by more than twice as many
//!   pixels as the width; a pass is skipped when its dimension does not change, and the
//!   image between the passes is 8-bit (rounded and clamped), as Pillow stores it;
//! - the cubic convolution kernel with `a = -0.5` and support 2, widened by the scale
//!   factor when shrinking (so shrinking averages over the whole footprint);
//! - for output pixel `i` the footprint is centred at `(i + 0.5) * scale` in input
//!   coordinates, its first and last input pixels found by adding 0.5 and truncating
//!   toward zero, clipped to the image;
//! - the weights of each output pixel are normalised to sum to 1 in f64, then turned
//!   into fixed point with 22 fractional bits, rounding half away from zero;
//! - the sums start at one half (`1 << 21`) and are shifted back and clamped to 0..=255.
//!
//! Transformers calls `PIL.Image.resize((w, h), resample=BICUBIC)` with no `box` and the
//! default `reducing_gap=None`, so Pillow does no box pre-reduction: neither does this.
//! When the horizontal pass goes first it only computes the rows the vertical pass reads,
//! as in Pillow; that changes nothing but the work done.
//!
//! Older Pillow (before 13.0) always ran the horizontal pass first; for images whose
//! height shrinks much more than their width its results differ from 13.0's by a few
//! 8-bit levels on a small share of pixels. The golden reference data follows 13.0.

use image::RgbImage;

/// Fixed-point fraction bits: 32 bits minus 8 for the pixel value, minus 2 for the
/// overshoot of a kernel with negative lobes (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Support (half-width) of the bicubic kernel, in input pixels at scale 1.
const BICUBIC_SUPPORT: f64 = 2.0;

/// The cubic convolution kernel with `a = -0.5`, written with Pillow's operation order
/// so that the f64 results are the same bits.
#[inline]
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The fixed-point weights of one pass.
struct Coeffs {
    /// Maximum number of taps per output pixel (the row stride of `weights`).
    ksize: usize,
    /// Per output pixel: first input index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `out_size * ksize` weights with `PRECISION_BITS` fraction bits.
    weights: Vec<i32>,
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the full
    /// input range (`box = (0, in_size)`).
    fn new(in_size: usize, out_size: usize) -> Self {
        // Pillow takes the box edges as C floats and subtracts them as floats.
        let in0 = 0.0f32;
        let in1 = in_size as f32;
        let scale = f64::from(in1 - in0) / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = BICUBIC_SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;

        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0f64; ksize];
        for xx in 0..out_size {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // `(int)` in C truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let taps = (xmax - xmin).max(0) as usize;
            let mut ww = 0.0f64;
            for (x, kx) in k.iter_mut().enumerate().take(taps) {
                let w = bicubic_filter(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            let row = &mut weights[xx * ksize..(xx + 1) * ksize];
            for (x, out) in row.iter_mut().enumerate().take(taps) {
                let mut v = k[x];
                if ww != 0.0 {
                    v /= ww;
                }
                let scaled = v * f64::from(1u32 << PRECISION_BITS);
                *out = if v < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            bounds.push((xmin as usize, taps));
        }
        Self {
            ksize,
            bounds,
            weights,
        }
    }

    #[inline]
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (start, n) = self.bounds[i];
        (start, &self.weights[i * self.ksize..i * self.ksize + n])
    }
}

/// Pillow's `clip8`: drop the fraction bits (arithmetic shift) and clamp to a byte.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The rounding offset every accumulator starts from.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass: rows `row0..row0 + rows` of `src` (`src_w` pixels wide) resampled to
/// the width of `coeffs`, into a new 8-bit buffer.
fn horizontal_pass(src: &[u8], src_w: usize, row0: usize, rows: usize, coeffs: &Coeffs) -> Vec<u8> {
    let out_w = coeffs.bounds.len();
    let mut out = vec![0u8; rows * out_w * 3];
    for (r, out_row) in out.chunks_exact_mut(out_w * 3).enumerate() {
        let in_row = &src[(row0 + r) * src_w * 3..(row0 + r + 1) * src_w * 3];
        for (xx, out_px) in out_row.chunks_exact_mut(3).enumerate() {
            let (start, k) = coeffs.taps(xx);
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (j, &w) in k.iter().enumerate() {
                let p = &in_row[(start + j) * 3..(start + j) * 3 + 3];
                s0 += i32::from(p[0]) * w;
                s1 += i32::from(p[1]) * w;
                s2 += i32::from(p[2]) * w;
            }
            out_px[0] = clip8(s0);
            out_px[1] = clip8(s1);
            out_px[2] = clip8(s2);
        }
    }
    out
}

/// Vertical pass: `src` (`width` pixels wide, its first row being source row `row0`)
/// resampled to the height of `coeffs`, into a new 8-bit buffer.
fn vertical_pass(src: &[u8], width: usize, row0: usize, coeffs: &Coeffs) -> Vec<u8> {
    let stride = width * 3;
    let out_h = coeffs.bounds.len();
    let mut out = vec![0u8; out_h * stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (start, k) = coeffs.taps(yy);
        let start = start - row0;
        for (i, o) in out_row.iter_mut().enumerate() {
            let mut s = HALF;
            for (j, &w) in k.iter().enumerate() {
                s += i32::from(src[(start + j) * stride + i]) * w;
            }
            *o = clip8(s);
        }
    }
    out
}

/// Whether Pillow runs the vertical pass first: since Pillow 13.0 it does when the height
/// shrinks by more than twice as many pixels as the width (to make the horizontal pass
/// cheaper). The order changes the 8-bit rounding of the intermediate image, so it has
/// to be the same as the reference's.
fn vertical_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let dh = in_h as i64 - out_h as i64;
    let dw = in_w as i64 - out_w as i64;
    dh > 0 && dh > dw * 2
}

/// Resizes an 8-bit RGB image with bicubic filtering, bit-identical to Pillow's
/// (13.0) `Image.resize((width, height), Image.BICUBIC)`.
///
/// A zero target size gives an empty image; the same size gives a copy.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if out_w == 0 || out_h == 0 || in_w == 0 || in_h == 0 {
        return RgbImage::new(width, height);
    }
    let need_horizontal = out_w != in_w;
    let need_vertical = out_h != in_h;
    let src = img.as_raw();
    let out = match (need_horizontal, need_vertical) {
        (false, false) => return img.clone(),
        (true, false) => horizontal_pass(src, in_w, 0, in_h, &Coeffs::new(in_w, out_w)),
        (false, true) => vertical_pass(src, in_w, 0, &Coeffs::new(in_h, out_h)),
        (true, true) => {
            let horiz = Coeffs::new(in_w, out_w);
            let vert = Coeffs::new(in_h, out_h);
            if vertical_first(in_w, in_h, out_w, out_h) {
                let mid = vertical_pass(src, in_w, 0, &vert);
                horizontal_pass(&mid, in_w, 0, out_h, &horiz)
            } else {
                // Only the source rows the vertical pass reads go through the first pass.
                let first = vert.bounds[0].0;
                let (last_start, last_n) = vert.bounds[out_h - 1];
                let mid = horizontal_pass(src, in_w, first, last_start + last_n - first, &horiz);
                vertical_pass(&mid, out_w, first, &vert)
            }
        }
    };
    RgbImage::from_raw(width, height, out).expect("resampled buffer is width x height x 3")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_shape() {
        assert_eq!(bicubic_filter(0.0), 1.0);
        assert_eq!(bicubic_filter(1.0), 0.0);
        assert_eq!(bicubic_filter(-1.0), 0.0);
        assert_eq!(bicubic_filter(2.0), 0.0);
        assert!(bicubic_filter(1.5) < 0.0);
        assert_eq!(bicubic_filter(0.5), bicubic_filter(-0.5));
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(10, 56), (3000, 728), (333, 504), (640, 644), (7, 3)] {
            let c = Coeffs::new(i, o);
            for xx in 0..o {
                let (start, k) = c.taps(xx);
                assert!(start + k.len() <= i);
                let s: i64 = k.iter().map(|&w| i64::from(w)).sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{i}->{o} px {xx}: {s}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([12, 200, 255]));
        for (w, h) in [(56, 28), (10, 5), (37, 60), (90, 23)] {
            let out = resize_bicubic(&img, w, h);
            assert_eq!(out.dimensions(), (w, h));
            assert!(out.pixels().all(|p| p.0 == [12, 200, 255]), "{w}x{h}");
        }
    }

    #[test]
    fn same_size_is_a_copy_and_one_axis_is_separate() {
        let img = RgbImage::from_fn(9, 7, |x, y| image::Rgb([(x * 20) as u8, (y * 30) as u8, 7]));
        assert_eq!(resize_bicubic(&img, 9, 7), img);
        // Only the width changes: every row is resampled on its own, so a column-constant
        // image (values depend on x only) keeps identical rows.
        let cols = RgbImage::from_fn(9, 7, |x, _| image::Rgb([(x * 25) as u8, 0, 255]));
        let out = resize_bicubic(&cols, 20, 7);
        for y in 1..7 {
            for x in 0..20 {
                assert_eq!(out.get_pixel(x, y), out.get_pixel(x, 0));
            }
        }
    }

    #[test]
    fn overshoot_is_clamped() {
        // A hard black/white edge makes the negative lobes overshoot; values must clamp.
        let img = RgbImage::from_fn(8, 1, |x, _| {
            if x < 4 {
                image::Rgb([0; 3])
            } else {
                image::Rgb([255; 3])
            }
        });
        let out = resize_bicubic(&img, 29, 1);
        let row: Vec<u8> = out.pixels().map(|p| p.0[0]).collect();
        assert_eq!(row[0], 0);
        assert_eq!(row[28], 255);
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
    }
}
