//! Conversion of any decoded image to 8-bit RGB the way the reference does it.
//!
//! The reference (transformers 4.57.1 `convert_to_rgb`) keeps an `RGB` PIL image as it
//! is and calls PIL's `image.convert("RGB")` on anything else. That conversion simply
//! *drops* the alpha channel: a transparent pixel keeps whatever colour it stores (often
//! black), it is **not** composited over white. The golden data confirms it (its RGBA
//! case differs by up to 237 levels from a white composite). So [`to_rgb_like_pil`]
//! drops alpha; compositing over white with Pillow's exact arithmetic is still provided
//! ([`over_white`]) for callers that want it, but the reference path does not use it.
//!
//! What PIL's decoders and `convert("RGB")` give, and so what is reproduced here:
//! - gray: replicated to R, G and B; gray+alpha: the same, alpha dropped;
//! - palette (with or without `tRNS`): the palette colours, transparency ignored
//!   (the `image` crate expands palettes to the same colours);
//! - RGBA: alpha dropped;
//! - 16-bit RGB / RGBA / gray+alpha PNGs: PIL keeps the high byte of each sample
//!   (its `;16B` raw modes), which is what [`high_byte`] does;
//! - 16-bit grayscale is the exception: PIL opens it as `I;16` and converts it to RGB
//!   by *clamping* each sample to 255 (`I16_RGB`), which turns almost every such image
//!   white. That is a Pillow quirk nobody relies on, so it is not copied: 16-bit gray
//!   keeps its high byte like the other 16-bit modes.

use image::{DynamicImage, RgbImage};

/// Fixed-point bits of Pillow's alpha compositing (`AlphaComposite.c`).
const COMPOSITE_PRECISION_BITS: u32 = 7;

/// Pillow's `SHIFTFORDIV255`: `(a + (a >> 8)) >> 8`, a division by 255 that is exact
/// for the ranges used here once 0x80 has been added for rounding.
#[inline]
fn shift_for_div255(a: u32) -> u32 {
    ((a >> 8) + a) >> 8
}

/// Composites `src` over `dst` (both straight-alpha RGBA), exactly as Pillow's
/// `ImagingAlphaComposite` does it in 8-bit integers.
pub fn alpha_composite(dst: [u8; 4], src: [u8; 4]) -> [u8; 4] {
    let sa = u32::from(src[3]);
    if sa == 0 {
        return dst;
    }
    let da = u32::from(dst[3]);
    let blend = da * (255 - sa);
    let outa255 = sa * 255 + blend;
    // 255 * 255 * 255 * 128 still fits in 32 bits, as in Pillow.
    let coef1 = sa * 255 * 255 * (1 << COMPOSITE_PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << COMPOSITE_PRECISION_BITS) - coef1;
    let mix = |s: u8, d: u8| -> u8 {
        let tmp = u32::from(s) * coef1 + u32::from(d) * coef2;
        (shift_for_div255(tmp + (0x80 << COMPOSITE_PRECISION_BITS)) >> COMPOSITE_PRECISION_BITS)
            as u8
    };
    [
        mix(src[0], dst[0]),
        mix(src[1], dst[1]),
        mix(src[2], dst[2]),
        shift_for_div255(outa255 + 0x80) as u8,
    ]
}

/// One RGBA pixel composited over opaque white, alpha dropped, with Pillow's arithmetic
/// (`Image.alpha_composite(white, im).convert("RGB")`, what some other processors'
/// `convert_to_rgb` do). Not part of this model's reference path, which drops alpha.
#[inline]
pub fn over_white(px: [u8; 4]) -> [u8; 3] {
    let out = alpha_composite([255, 255, 255, 255], px);
    [out[0], out[1], out[2]]
}

/// The most significant byte of a 16-bit sample, as PIL's `;16B` unpackers keep it.
#[inline]
fn high_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Builds an RGB image from `(width, height)` and a per-pixel function of the pixel index.
fn rgb_from_fn(width: u32, height: u32, mut f: impl FnMut(usize) -> [u8; 3]) -> RgbImage {
    let n = width as usize * height as usize;
    let mut out = Vec::with_capacity(n * 3);
    for i in 0..n {
        out.extend_from_slice(&f(i));
    }
    RgbImage::from_raw(width, height, out).expect("buffer sized for width x height x 3")
}

/// Converts a decoded image to RGB as the reference sees it: PIL's `convert("RGB")`,
/// which drops alpha (see the module docs).
pub fn to_rgb_like_pil(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageRgb8(i) => i,
        DynamicImage::ImageRgba8(i) => {
            let s = i.as_raw();
            rgb_from_fn(w, h, |k| [s[4 * k], s[4 * k + 1], s[4 * k + 2]])
        }
        DynamicImage::ImageLuma8(i) => {
            let s = i.as_raw();
            rgb_from_fn(w, h, |k| [s[k], s[k], s[k]])
        }
        DynamicImage::ImageLumaA8(i) => {
            let s = i.as_raw();
            rgb_from_fn(w, h, |k| [s[2 * k], s[2 * k], s[2 * k]])
        }
        DynamicImage::ImageLuma16(i) => {
            let s = i.as_raw();
            rgb_from_fn(w, h, |k| {
                let l = high_byte(s[k]);
                [l, l, l]
            })
        }
        DynamicImage::ImageLumaA16(i) => {
            let s = i.as_raw();
            rgb_from_fn(w, h, |k| {
                let l = high_byte(s[2 * k]);
                [l, l, l]
            })
        }
        DynamicImage::ImageRgb16(i) => {
            let s = i.as_raw();
            rgb_from_fn(w, h, |k| {
                [
                    high_byte(s[3 * k]),
                    high_byte(s[3 * k + 1]),
                    high_byte(s[3 * k + 2]),
                ]
            })
        }
        DynamicImage::ImageRgba16(i) => {
            let s = i.as_raw();
            rgb_from_fn(w, h, |k| {
                [
                    high_byte(s[4 * k]),
                    high_byte(s[4 * k + 1]),
                    high_byte(s[4 * k + 2]),
                ]
            })
        }
        // Float images and any future variant: the crate's own 8-bit conversion, which
        // also drops alpha.
        other => other.to_rgb8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fully_transparent_is_white_whatever_the_colour() {
        for c in [0u8, 17, 128, 255] {
            assert_eq!(over_white([c, 255 - c, c / 2, 0]), [255, 255, 255]);
        }
    }

    #[test]
    fn opaque_is_unchanged() {
        for c in 0..=255u8 {
            assert_eq!(over_white([c, 255 - c, c / 3, 255]), [c, 255 - c, c / 3]);
        }
    }

    #[test]
    fn half_transparent_mixes_with_white() {
        // Black at alpha 128 over white: 255 * 127 / 255 = 127 exactly in real numbers;
        // Pillow's fixed point lands on 127 as well.
        assert_eq!(over_white([0, 0, 0, 128]), [127, 127, 127]);
        // Over white, opaque-ish values approach the colour, thin ones approach white.
        assert_eq!(over_white([0, 0, 0, 1]), [254, 254, 254]);
        assert_eq!(over_white([0, 0, 0, 254]), [1, 1, 1]);
        assert_eq!(over_white([200, 100, 0, 128]), [227, 177, 127]);
    }

    #[test]
    fn composite_matches_the_real_valued_formula_within_rounding() {
        // Over opaque white: out = (c * a + 255 * (255 - a)) / 255, rounded.
        for a in 1..=255u32 {
            for c in (0..=255u32).step_by(5) {
                let exact = (c * a + 255 * (255 - a)) as f64 / 255.0;
                let got = over_white([c as u8, c as u8, c as u8, a as u8])[0] as f64;
                assert!(
                    (got - exact).abs() <= 0.5 + 1e-9,
                    "c={c} a={a}: {got} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn general_composite_keeps_pillow_alpha() {
        // Half over half: out alpha = 128 + 128 * 127 / 255 ~ 191.7 -> 192.
        assert_eq!(
            alpha_composite([0, 0, 0, 128], [255, 255, 255, 128])[3],
            192
        );
        assert_eq!(alpha_composite([1, 2, 3, 4], [9, 9, 9, 0]), [1, 2, 3, 4]);
    }

    #[test]
    fn modes_convert_like_pil_convert_rgb() {
        let la = DynamicImage::ImageLumaA8(
            image::GrayAlphaImage::from_raw(2, 1, vec![10, 0, 20, 255]).unwrap(),
        );
        assert_eq!(to_rgb_like_pil(la).as_raw(), &vec![10, 10, 10, 20, 20, 20]);
        let l16 =
            DynamicImage::ImageLuma16(image::ImageBuffer::from_raw(1, 1, vec![0xABCDu16]).unwrap());
        assert_eq!(to_rgb_like_pil(l16).as_raw(), &vec![0xAB, 0xAB, 0xAB]);
        let rgb16 = DynamicImage::ImageRgb16(
            image::ImageBuffer::from_raw(1, 1, vec![0x01FFu16, 0xFF00, 0x8080]).unwrap(),
        );
        assert_eq!(to_rgb_like_pil(rgb16).as_raw(), &vec![0x01, 0xFF, 0x80]);
        // Alpha is dropped, not composited: a transparent black pixel stays black.
        let rgba = DynamicImage::ImageRgba8(
            image::RgbaImage::from_raw(2, 1, vec![1, 2, 3, 0, 4, 5, 6, 128]).unwrap(),
        );
        assert_eq!(to_rgb_like_pil(rgba).as_raw(), &vec![1, 2, 3, 4, 5, 6]);
    }
}
