//! Line crops: what a line reader sees of a page. One definition for the runtime (crops of
//! the layout's lines) and the trainer (crops of the generator's true line boxes), so a
//! model reads at inference exactly the kind of crop it was trained on.

use image::RgbImage;

use super::resize_bicubic;
use crate::layout_metrics::LineBox;

/// Margin around a line's ink box in a crop, as a share of the box height: room for
/// ascenders, descenders and accents the box missed.
pub const CROP_MARGIN: f32 = 0.3;
/// The largest scale-up of a line crop (a tiny line is not blown up without bound).
pub const MAX_UPSCALE: f32 = 4.0;

/// Text heights, as factors of the trained line height, at which a line reader may read
/// each line more than once (and vote per character, [`crate::vote`]): for a 32 px model
/// 26, 28, 30, 32, 34, 36 and 38 px. Ordered so that the middle `n` of them are the `n`
/// nearest the trained height ([`read_scales`]). Seven even steps of 1/16 read better than
/// the five uneven ones before them (0.81-1.19 in steps of 3/32): on held-out sets of seed
/// 7171, voting the lines the gate doubts, 1.76% / 5.38% CER on clean / degraded lines
/// against 2.16% / 6.13%, for 1.2-1.4x the time (models/default-ocr/README.md).
pub const READ_SCALES: [f32; 7] = [0.8125, 0.875, 0.9375, 1.0, 1.0625, 1.125, 1.1875];

/// The `n` scales of [`READ_SCALES`] nearest 1 (n = 1, 3, 5 or 7; clamped to that range
/// and rounded down to an odd count), in increasing order; 1.0 is the middle one.
pub fn read_scales(n: usize) -> &'static [f32] {
    let n = n.clamp(1, READ_SCALES.len());
    let n = if n.is_multiple_of(2) { n - 1 } else { n };
    let start = (READ_SCALES.len() - n) / 2;
    &READ_SCALES[start..start + n]
}

/// The crop of line `b`: the box with a margin of [`CROP_MARGIN`] of its height, clamped to
/// the page, scaled (bicubic) so that the box is `line_height` pixels tall when one is
/// given (at most [`MAX_UPSCALE`] times larger).
pub fn line_crop(page: &RgbImage, b: LineBox, line_height: Option<u32>) -> RgbImage {
    let h = b.height().max(1) as f32;
    let m = (h * CROP_MARGIN).ceil().max(2.0) as u32;
    let (x0, y0) = (b.x0.saturating_sub(m), b.y0.saturating_sub(m));
    let x0 = x0.min(page.width().saturating_sub(1));
    let y0 = y0.min(page.height().saturating_sub(1));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_scales_are_centred_on_the_trained_height() {
        assert_eq!(read_scales(1), &[1.0]);
        assert_eq!(read_scales(3), &[0.9375, 1.0, 1.0625]);
        assert_eq!(read_scales(5), &[0.875, 0.9375, 1.0, 1.0625, 1.125]);
        assert_eq!(read_scales(7), &READ_SCALES);
        assert_eq!(read_scales(4), read_scales(3));
        assert_eq!(read_scales(0), read_scales(1));
        assert_eq!(read_scales(9), read_scales(7));
    }

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
        // A box off the page still gives a (one-pixel) crop, not a panic.
        let off = LineBox {
            x0: 900,
            y0: 900,
            x1: 950,
            y1: 910,
        };
        assert_eq!(line_crop(&page, off, None).dimensions(), (1, 1));
    }
}
