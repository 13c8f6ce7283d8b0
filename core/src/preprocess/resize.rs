//! `smart_resize`: the size the reference resizes an image to before cutting patches.
//!
//! Both sides become multiples of `factor` (patch size x merge size = 28), the pixel count
//! is kept within `[min_pixels, max_pixels]`, and the aspect ratio is kept as well as that
//! allows. This is transformers' `Qwen2VLImageProcessor` `smart_resize` (4.57), computed
//! the way Python computes it, because a different rounding of one side changes the
//! number of patches and so the whole prompt:
//! - `/` on two Python ints is a correctly rounded f64 division, as it is here on
//!   integers below 2^53;
//! - Python's `round()` rounds halves to even (`round(2.5) == 2`), hence
//!   [`f64::round_ties_even`] and not [`f64::round`];
//! - `math.floor` / `math.ceil` of an f64.

use super::error::PreprocessError;

/// The largest aspect ratio the reference accepts (`max / min > 200` is an error).
pub const MAX_ASPECT_RATIO: f64 = 200.0;

/// Returns the `(height, width)` an image of `height x width` is resized to.
///
/// Errors when the aspect ratio exceeds 200 (as the reference does), on a zero side,
/// and on a zero `factor` or `max_pixels` (the reference would divide by zero).
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(usize, usize), PreprocessError> {
    if height == 0 || width == 0 {
        return Err(PreprocessError::ZeroSize {
            width: width as u64,
            height: height as u64,
        });
    }
    if factor == 0 {
        return Err(PreprocessError::Config(
            "the resize factor (patch_size x merge_size) is 0".into(),
        ));
    }
    if max_pixels == 0 {
        return Err(PreprocessError::Config("max_pixels is 0".into()));
    }
    let (h, w) = (height as f64, width as f64);
    let ratio = h.max(w) / h.min(w);
    if ratio > MAX_ASPECT_RATIO {
        return Err(PreprocessError::AspectRatio { ratio });
    }
    let f = factor as f64;
    let area = height as u64 * width as u64;
    let mut h_bar = (h / f).round_ties_even() as u64 * factor as u64;
    let mut w_bar = (w / f).round_ties_even() as u64 * factor as u64;
    if h_bar * w_bar > max_pixels {
        let beta = (area as f64 / max_pixels as f64).sqrt();
        h_bar = (factor as u64).max((h / beta / f).floor() as u64 * factor as u64);
        w_bar = (factor as u64).max((w / beta / f).floor() as u64 * factor as u64);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / area as f64).sqrt();
        h_bar = (h * beta / f).ceil() as u64 * factor as u64;
        w_bar = (w * beta / f).ceil() as u64 * factor as u64;
    }
    // A side can only round to 0 here if min_pixels is 0; the spec says "at least factor".
    let h_bar = h_bar.max(factor as u64);
    let w_bar = w_bar.max(factor as u64);
    Ok((h_bar as usize, w_bar as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 56 * 56;
    const MAX: u64 = 28 * 28 * 1280;

    #[test]
    fn exact_multiples_of_28_are_unchanged() {
        assert_eq!(
            smart_resize(28 * 10, 28 * 20, 28, MIN, MAX).unwrap(),
            (280, 560)
        );
        assert_eq!(smart_resize(56, 56, 28, MIN, MAX).unwrap(), (56, 56));
        assert_eq!(
            smart_resize(1008, 728, 28, MIN, 1008 * 728).unwrap(),
            (1008, 728)
        );
    }

    #[test]
    fn rounds_halves_to_even_like_python() {
        // 42 / 28 = 1.5 -> 2 ; 70 / 28 = 2.5 -> 2 (banker's rounding); 98 / 28 = 3.5 -> 4.
        assert_eq!(smart_resize(70, 98, 28, MIN, MAX).unwrap(), (56, 112));
        assert_eq!(smart_resize(70, 42, 28, 0, MAX).unwrap(), (56, 56));
        // Not a half: ordinary rounding.
        assert_eq!(smart_resize(300, 2000, 28, MIN, MAX).unwrap(), (308, 1988));
    }

    #[test]
    fn tiny_images_are_scaled_up_to_min_pixels() {
        // 10 x 10 rounds to 0 x 0, so it is scaled up: beta = sqrt(3136 / 100) = 5.6,
        // ceil(10 * 5.6 / 28) = 2 -> 56 x 56.
        assert_eq!(smart_resize(10, 10, 28, MIN, MAX).unwrap(), (56, 56));
        // Small but not tiny: 30 x 40 -> 28 x 28 < 3136 -> beta = sqrt(3136 / 1200).
        let (h, w) = smart_resize(30, 40, 28, MIN, MAX).unwrap();
        assert_eq!((h, w), (56, 56 + 28));
        assert!((h * w) as u64 >= MIN);
        // A 1-pixel-high strip within the aspect limit.
        let (h, w) = smart_resize(1, 150, 28, MIN, MAX).unwrap();
        assert!(
            (h * w) as u64 >= MIN && h % 28 == 0 && w % 28 == 0,
            "{h}x{w}"
        );
    }

    #[test]
    fn max_pixels_boundary() {
        // Exactly at the limit after rounding: kept.
        assert_eq!(
            smart_resize(560, 560, 28, MIN, 560 * 560).unwrap(),
            (560, 560)
        );
        // One factor step over: shrunk below the limit.
        let (h, w) = smart_resize(560, 588, 28, MIN, 560 * 560).unwrap();
        assert!((h * w) as u64 <= 560 * 560, "{h}x{w}");
        assert_eq!((h, w), (532, 560));
        // A huge image lands under the limit, both sides multiples of 28.
        let (h, w) = smart_resize(4000, 3000, 28, MIN, 401_408).unwrap();
        assert!((h * w) as u64 <= 401_408 && h % 28 == 0 && w % 28 == 0);
        assert_eq!((h, w), (728, 532));
    }

    #[test]
    fn aspect_ratio_200_is_accepted_and_above_is_refused() {
        assert!(smart_resize(20, 4000, 28, MIN, MAX).is_ok());
        assert!(smart_resize(4000, 20, 28, MIN, MAX).is_ok());
        let err = smart_resize(20, 4001, 28, MIN, MAX).unwrap_err();
        assert!(matches!(err, PreprocessError::AspectRatio { .. }));
        let err = smart_resize(20, 5000, 28, MIN, MAX).unwrap_err();
        assert_eq!(err.to_string(), "aspect ratio 250.0 exceeds 200");
    }

    #[test]
    fn degenerate_inputs_are_errors_not_panics() {
        assert!(matches!(
            smart_resize(0, 10, 28, MIN, MAX),
            Err(PreprocessError::ZeroSize { .. })
        ));
        assert!(smart_resize(10, 10, 0, MIN, MAX).is_err());
        assert!(smart_resize(10, 10, 28, 0, 0).is_err());
    }
}
