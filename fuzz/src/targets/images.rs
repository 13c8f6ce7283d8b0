//! Image bytes: the project's JPEG decoder alone, and the whole decode + preprocess path.

use ove_core::layout_metrics::LineBox;
use ove_core::preprocess::{
    jpeg, line_crop, load_rgb_from_bytes, preprocess as preprocess_rgb, DecodeOptions,
    PreprocessError,
};

use crate::{fixtures, MAX_PIXELS};

/// The pixel check the decoder runs on the frame header before it allocates.
fn pixel_check(w: u32, h: u32) -> Result<(), PreprocessError> {
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_PIXELS {
        return Err(PreprocessError::TooManyPixels {
            pixels,
            limit: MAX_PIXELS,
        });
    }
    Ok(())
}

pub fn jpeg(data: &[u8]) {
    if let Ok(Some(img)) = jpeg::decode(data, pixel_check) {
        let pixels = u64::from(img.width()) * u64::from(img.height());
        assert!(
            pixels <= MAX_PIXELS,
            "decoded {pixels} pixels past the check"
        );
    }
}

pub fn preprocess(data: &[u8]) {
    let opts = DecodeOptions {
        max_pixels: MAX_PIXELS,
    };
    let Ok(rgb) = load_rgb_from_bytes(data, &opts) else {
        return;
    };
    let pixels = u64::from(rgb.width()) * u64::from(rgb.height());
    assert!(
        pixels <= MAX_PIXELS,
        "decoded {pixels} pixels past the limit"
    );
    let fx = fixtures::get();
    if let Ok(p) = preprocess_rgb(&rgb, &fx.small_preprocessor) {
        let [t, gh, gw] = p.grid_thw;
        assert_eq!(
            t * gh * gw,
            p.num_patches(),
            "grid and patch count disagree"
        );
        assert_eq!(
            p.pixel_values.len(),
            p.num_patches() * p.patch_dim(),
            "pixel values are not whole patches"
        );
    }
    // A line crop as `ove ocr` cuts it, from a box that may lie partly off the image.
    let (w, h) = (rgb.width(), rgb.height());
    let b = LineBox {
        x0: w / 8,
        y0: h / 8,
        x1: w.saturating_add(7),
        y1: h - h / 8,
    };
    let crop = line_crop(&rgb, b, fx.manifest.reading.line_height);
    assert!(crop.width() > 0 && crop.height() > 0, "empty line crop");
}
