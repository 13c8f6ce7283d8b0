//! Image decoding and the reference-exact preprocessing.
//!
//! The model was trained on what transformers' `Qwen2VLImageProcessor` (on PIL images)
//! produces, so this module reproduces it value for value:
//! 1. decode ([`decode`]): sniff the format, refuse empty or oversized images from the
//!    header alone, decode under memory limits; JPEGs with a decoder that reproduces
//!    libjpeg-turbo (PIL's) bit for bit ([`jpeg`]);
//! 2. convert to RGB as the reference's `convert_to_rgb` does ([`rgb`]): PIL's
//!    `convert("RGB")`, which drops alpha (it does *not* composite over white, whatever
//!    older notes say: the golden data shows it);
//! 3. `smart_resize` ([`resize`]): sides to multiples of 28 within the pixel budget;
//! 4. Pillow's 8-bit bicubic resampling ([`resample`]);
//! 5. rescale by 1/255 and normalise by mean/std in the reference's float types
//!    ([`normalize`]);
//! 6. cut 14x14 patches in merge-block order ([`patchify`]), with the matching rotary
//!    positions ([`patch_positions`]).

pub mod decode;
pub mod error;
pub mod jpeg;
pub mod line;
pub mod normalize;
pub mod patchify;
pub mod resample;
pub mod resize;
pub mod rgb;

use std::path::Path;

pub use decode::{load_rgb, load_rgb_from_bytes, DecodeOptions};
pub use error::PreprocessError;
pub use line::line_crop;
pub use patchify::patch_positions;
pub use resample::resize_bicubic;
pub use resize::smart_resize;

use crate::config::PreprocessorConfig;
use normalize::NormalizeTable;
use patchify::{patchify, PatchLayout};

/// One preprocessed image: what the vision encoder takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// Row-major `[num_patches, patch_dim]` (588 for 14x14 RGB), rows in merge-block
    /// order (see [`patchify`]).
    pub pixel_values: Vec<f32>,
    /// `(1, h' / patch, w' / patch)`: one frame, and the patch grid.
    pub grid_thw: [usize; 3],
    /// `(h', w')`, the size the image was resized to.
    pub resized_hw: (usize, usize),
}

impl Preprocessed {
    /// Number of patch rows: `t * h * w` of the grid.
    pub fn num_patches(&self) -> usize {
        self.grid_thw.iter().product()
    }

    /// Values per patch row (`pixel_values.len() / num_patches()`).
    pub fn patch_dim(&self) -> usize {
        self.pixel_values
            .len()
            .checked_div(self.num_patches())
            .unwrap_or(0)
    }
}

/// Preprocesses an RGB image as the reference does: smart resize (if `do_resize`),
/// Pillow bicubic, rescale and normalise (if enabled), patchify.
///
/// The image is already RGB, so `do_convert_rgb` has nothing left to do here; decoding
/// ([`load_rgb`]) always converts, since the encoder only takes RGB.
pub fn preprocess(
    img: &image::RgbImage,
    cfg: &PreprocessorConfig,
) -> Result<Preprocessed, PreprocessError> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let [_, gh, gw] = patch_grid(h, w, cfg)?;
    let (rh, rw) = (gh * cfg.patch_size, gw * cfg.patch_size);
    if u32::try_from(rh).is_err() || u32::try_from(rw).is_err() {
        return Err(PreprocessError::Config(format!(
            "resized size {rh}x{rw} is too large"
        )));
    }

    let resized;
    let img = if (rh, rw) != (h, w) {
        resized = resize_bicubic(img, rw as u32, rh as u32);
        &resized
    } else {
        img
    };

    let layout = PatchLayout {
        patch_size: cfg.patch_size,
        merge_size: cfg.merge_size,
        temporal_patch_size: cfg.temporal_patch_size,
    };
    let pixel_values = patchify(img, layout, &NormalizeTable::new(cfg));
    Ok(Preprocessed {
        pixel_values,
        grid_thw: [1, rh / cfg.patch_size, rw / cfg.patch_size],
        resized_hw: (rh, rw),
    })
}

/// The patch grid `(1, h' / patch, w' / patch)` an image of `height x width` becomes:
/// the one rule for image sizes, used by [`preprocess`], by the trainer's packing (which
/// reads only image headers) and by anything else that counts image tokens
/// ([`crate::config::ModelConfig::tokens_per_image`] of this grid).
///
/// With `do_resize` the size is [`smart_resize`]d; without it, it must already be a
/// multiple of patch size x merge size.
pub fn patch_grid(
    height: usize,
    width: usize,
    cfg: &PreprocessorConfig,
) -> Result<[usize; 3], PreprocessError> {
    if height == 0 || width == 0 {
        return Err(PreprocessError::ZeroSize {
            width: width as u64,
            height: height as u64,
        });
    }
    if cfg.patch_size == 0 || cfg.merge_size == 0 || cfg.temporal_patch_size == 0 {
        return Err(PreprocessError::Config(
            "patch_size, merge_size and temporal_patch_size must be positive".into(),
        ));
    }
    let factor = cfg.factor();
    let (rh, rw) = if cfg.do_resize {
        let min_pixels = cfg.min_pixels().ok_or_else(|| {
            PreprocessError::Config("min_pixels missing (and no size.shortest_edge)".into())
        })?;
        let max_pixels = cfg.max_pixels().ok_or_else(|| {
            PreprocessError::Config("max_pixels missing (and no size.longest_edge)".into())
        })?;
        smart_resize(height, width, factor, min_pixels, max_pixels)?
    } else {
        (height, width)
    };
    if rh % factor != 0 || rw % factor != 0 {
        return Err(PreprocessError::Config(format!(
            "do_resize is off and the image ({rh}x{rw}) is not a multiple of patch_size x merge_size ({factor})"
        )));
    }
    Ok([1, rh / cfg.patch_size, rw / cfg.patch_size])
}

/// Decodes the image at `path` ([`load_rgb`]) and preprocesses it ([`preprocess`]).
pub fn preprocess_file(
    path: &Path,
    cfg: &PreprocessorConfig,
    opts: &DecodeOptions,
) -> Result<Preprocessed, PreprocessError> {
    preprocess(&load_rgb(path, opts)?, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config that leaves values as raw bytes, so a test can read pixels back.
    fn raw_cfg(temporal: usize) -> PreprocessorConfig {
        PreprocessorConfig {
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: temporal,
            min_pixels: Some(56 * 56),
            max_pixels: Some(28 * 28 * 1280),
            size: None,
            image_mean: [0.0; 3],
            image_std: [1.0; 3],
            rescale_factor: 1.0 / 255.0,
            do_resize: true,
            do_rescale: false,
            do_normalize: false,
            do_convert_rgb: true,
            resample: 3,
        }
    }

    /// Pixel (x, y) encodes its 14x14 patch coordinates and channel.
    fn synthetic(w: u32, h: u32) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (y / 14) as u8,
                (x / 14) as u8,
                ((x % 14) * 14 + y % 14) as u8,
            ])
        })
    }

    #[test]
    fn patch_order_and_layout_on_a_synthetic_image() {
        // 56 x 84: a multiple of 28, so no resampling; grid 4 x 6.
        let img = synthetic(84, 56);
        let out = preprocess(&img, &raw_cfg(1)).unwrap();
        assert_eq!(out.grid_thw, [1, 4, 6]);
        assert_eq!(out.resized_hw, (56, 84));
        assert_eq!(out.num_patches(), 24);
        assert_eq!(out.patch_dim(), 588);
        let positions = patch_positions(out.grid_thw, 2);
        assert_eq!(
            &positions[..6],
            &[[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3]]
        );
        for (i, [row, col]) in positions.iter().enumerate() {
            let patch = &out.pixel_values[i * 588..(i + 1) * 588];
            // Channel 0 holds the patch row, channel 1 the patch column, in every value.
            assert!(patch[..196].iter().all(|&v| v == *row as f32), "patch {i}");
            assert!(
                patch[196..392].iter().all(|&v| v == *col as f32),
                "patch {i}"
            );
            // Channel 2, row-major inside the patch: value (dx * 14 + dy) at dy * 14 + dx.
            for dy in 0..14 {
                for dx in 0..14 {
                    assert_eq!(patch[392 + dy * 14 + dx], (dx * 14 + dy) as f32);
                }
            }
        }
    }

    #[test]
    fn temporal_patch_size_repeats_the_frame_inside_each_channel() {
        let img = synthetic(56, 56);
        let one = preprocess(&img, &raw_cfg(1)).unwrap();
        let two = preprocess(&img, &raw_cfg(2)).unwrap();
        assert_eq!(two.grid_thw, [1, 4, 4]);
        assert_eq!(two.patch_dim(), 2 * 588);
        for i in 0..one.num_patches() {
            let a = &one.pixel_values[i * 588..(i + 1) * 588];
            let b = &two.pixel_values[i * 1176..(i + 1) * 1176];
            for c in 0..3 {
                assert_eq!(&b[c * 392..c * 392 + 196], &a[c * 196..(c + 1) * 196]);
                assert_eq!(&b[c * 392 + 196..(c + 1) * 392], &a[c * 196..(c + 1) * 196]);
            }
        }
    }

    #[test]
    fn normalisation_uses_float64_rescale_then_float32() {
        // The CLIP mean/std as a preprocessor_config.json states them.
        let cfg = PreprocessorConfig::from_json(
            Path::new("preprocessor_config.json"),
            r#"{"patch_size": 14, "merge_size": 2, "min_pixels": 3136, "max_pixels": 401408,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "rescale_factor": 0.00392156862745098}"#,
        )
        .unwrap();
        let img = image::RgbImage::from_pixel(56, 56, image::Rgb([0, 128, 255]));
        let out = preprocess(&img, &cfg).unwrap();
        for c in 0..3 {
            let v = [0u8, 128, 255][c];
            let want = (((v as f64) * (1.0 / 255.0)) as f32 - cfg.image_mean[c]) / cfg.image_std[c];
            assert_eq!(out.pixel_values[c * 196], want);
        }
    }

    #[test]
    fn unresized_size_must_fit_the_grid() {
        let mut cfg = raw_cfg(1);
        cfg.do_resize = false;
        assert!(preprocess(&synthetic(56, 56), &cfg).is_ok());
        let err = preprocess(&synthetic(50, 56), &cfg).unwrap_err();
        assert!(matches!(err, PreprocessError::Config(_)), "{err}");
    }

    #[test]
    fn small_images_are_resized_to_min_pixels() {
        let img = image::RgbImage::from_pixel(10, 10, image::Rgb([1, 2, 3]));
        let out = preprocess(&img, &raw_cfg(1)).unwrap();
        assert_eq!(out.resized_hw, (56, 56));
        assert_eq!(out.grid_thw, [1, 4, 4]);
        assert!(out
            .pixel_values
            .chunks(196)
            .all(|c| c.iter().all(|&v| v == c[0])));
    }

    #[test]
    fn aspect_ratio_over_200_is_an_error() {
        let img = image::RgbImage::new(5000, 20);
        let err = preprocess(&img, &raw_cfg(1)).unwrap_err();
        assert_eq!(err.to_string(), "aspect ratio 250.0 exceeds 200");
    }
}
