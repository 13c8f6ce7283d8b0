//! Decoding: hostile, broken and unusual files give clear errors, never panics, and
//! supported formats and modes decode as the reference's PIL reads them.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, RgbImage};
use ove_core::preprocess::{load_rgb, load_rgb_from_bytes, DecodeOptions, PreprocessError};

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A PNG whose IHDR announces `width x height` RGB pixels; `rest` adds a tiny IDAT
/// (a zlib stream of one empty stored block) and IEND after it.
fn png_header(width: u32, height: u32, rest: bool) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    if rest {
        chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0, 0, 0, 1],
        );
        chunk(&mut out, b"IEND", &[]);
    }
    out
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
    })
}

#[test]
fn header_announcing_too_many_pixels_is_refused_before_decoding() {
    let opts = DecodeOptions::default();
    assert_eq!(opts.max_pixels, 100_000_000);
    for rest in [false, true] {
        // 20000 x 20000 = 400 MP, announced by a file of a few dozen bytes.
        let err = load_rgb_from_bytes(&png_header(20_000, 20_000, rest), &opts).unwrap_err();
        assert!(
            matches!(
                err,
                PreprocessError::TooManyPixels {
                    pixels: 400_000_000,
                    limit: 100_000_000
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "image announces 400000000 pixels, over the limit of 100000000 \
             (raise it with --max-image-pixels)"
        );
    }
}

#[test]
fn the_pixel_limit_is_configurable_and_checked_for_every_format() {
    let img = DynamicImage::ImageRgb8(gradient(120, 100));
    let small = DecodeOptions { max_pixels: 11_999 };
    let exact = DecodeOptions { max_pixels: 12_000 };
    for format in [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::Gif,
        ImageFormat::WebP,
    ] {
        let bytes = encode(&img, format);
        let err = load_rgb_from_bytes(&bytes, &small).unwrap_err();
        assert!(
            matches!(
                err,
                PreprocessError::TooManyPixels {
                    pixels: 12_000,
                    limit: 11_999
                }
            ),
            "{format:?}: {err}"
        );
        let ok = load_rgb_from_bytes(&bytes, &exact).unwrap();
        assert_eq!(ok.dimensions(), (120, 100), "{format:?}");
    }
}

#[test]
fn zero_size_image_is_refused() {
    let err = load_rgb_from_bytes(&png_header(0, 0, true), &DecodeOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "image is 0x0, it has no pixels");
    let err = load_rgb_from_bytes(&png_header(0, 7, true), &DecodeOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            PreprocessError::ZeroSize {
                width: 0,
                height: 7
            }
        ),
        "{err}"
    );
}

#[test]
fn zero_bytes_text_and_garbage_are_not_images() {
    let opts = DecodeOptions::default();
    assert!(matches!(
        load_rgb_from_bytes(&[], &opts),
        Err(PreprocessError::Empty)
    ));
    let err = load_rgb_from_bytes(b"hello, this is a text file\n", &opts).unwrap_err();
    assert!(matches!(err, PreprocessError::NotAnImage), "{err}");
    assert_eq!(err.to_string(), "not an image or unsupported format");
    for len in 1..40 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        assert!(load_rgb_from_bytes(&bytes, &opts).is_err());
    }
}

#[test]
fn truncated_and_corrupt_files_are_errors_not_panics() {
    let opts = DecodeOptions::default();
    let img = DynamicImage::ImageRgb8(gradient(64, 48));
    for format in [
        ImageFormat::Png,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::Gif,
        ImageFormat::WebP,
    ] {
        let bytes = encode(&img, format);
        for cut in [bytes.len() / 2, bytes.len() - 13, 20] {
            let err = load_rgb_from_bytes(&bytes[..cut], &opts);
            assert!(
                err.is_err(),
                "{format:?} cut at {cut} of {} decoded",
                bytes.len()
            );
        }
    }
    // PNG truncated inside its pixel data: a "truncated or corrupt" error.
    let bytes = encode(&img, ImageFormat::Png);
    let err = load_rgb_from_bytes(&bytes[..bytes.len() / 2], &opts).unwrap_err();
    assert!(
        err.to_string().starts_with("truncated or corrupt image"),
        "{err}"
    );
    // Flipped bytes everywhere in a JPEG: whatever comes out, nothing panics.
    let jpeg = encode(&img, ImageFormat::Jpeg);
    for i in (2..jpeg.len()).step_by(7) {
        let mut bad = jpeg.clone();
        bad[i] ^= 0x5A;
        let _ = load_rgb_from_bytes(&bad, &opts);
        let _ = load_rgb_from_bytes(&jpeg[..i], &opts);
    }
}

#[test]
fn missing_files_and_directories_are_io_errors() {
    let opts = DecodeOptions::default();
    let dir = tempfile::tempdir().unwrap();
    let err = load_rgb(&dir.path().join("nope.png"), &opts).unwrap_err();
    assert!(matches!(err, PreprocessError::Io { .. }), "{err}");
    assert!(err.to_string().contains("nope.png"), "{err}");
    assert!(matches!(
        load_rgb(dir.path(), &opts),
        Err(PreprocessError::Io { .. })
    ));
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        load_rgb(&empty, &opts),
        Err(PreprocessError::Empty)
    ));
}

#[test]
fn lossless_formats_round_trip_to_the_same_rgb() {
    let rgb = gradient(33, 17);
    let opts = DecodeOptions::default();
    for format in [
        ImageFormat::Png,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::WebP,
    ] {
        let bytes = encode(&DynamicImage::ImageRgb8(rgb.clone()), format);
        assert_eq!(
            load_rgb_from_bytes(&bytes, &opts).unwrap(),
            rgb,
            "{format:?}"
        );
    }
    // The format comes from the content, not the file name.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("really-a-png.jpg");
    std::fs::write(
        &path,
        encode(&DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Png),
    )
    .unwrap();
    assert_eq!(load_rgb(&path, &opts).unwrap(), rgb);
}

#[test]
fn modes_convert_like_pil_convert_rgb() {
    let opts = DecodeOptions::default();
    // RGBA: alpha is dropped (PIL's convert("RGB")), a transparent pixel keeps its colour.
    let rgba = image::RgbaImage::from_fn(4, 2, |x, y| {
        image::Rgba([x as u8 * 60, y as u8 * 90, 7, (x * 80) as u8])
    });
    let got = load_rgb_from_bytes(
        &encode(&DynamicImage::ImageRgba8(rgba.clone()), ImageFormat::Png),
        &opts,
    )
    .unwrap();
    for (x, y, p) in got.enumerate_pixels() {
        let q = rgba.get_pixel(x, y).0;
        assert_eq!(p.0, [q[0], q[1], q[2]]);
    }
    // Gray and gray + alpha: replicated.
    let la = image::GrayAlphaImage::from_fn(3, 3, |x, y| {
        image::LumaA([(x * 50 + y) as u8, (y * 100) as u8])
    });
    let got = load_rgb_from_bytes(
        &encode(&DynamicImage::ImageLumaA8(la.clone()), ImageFormat::Png),
        &opts,
    )
    .unwrap();
    for (x, y, p) in got.enumerate_pixels() {
        let l = la.get_pixel(x, y).0[0];
        assert_eq!(p.0, [l, l, l]);
    }
    // 16-bit: the high byte of each sample, as PIL's ";16B" raw modes keep it.
    let rgb16 = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(5, 2, |x, y| {
        image::Rgb([x as u16 * 0x1234, 0xFFFF - y as u16 * 0x0101, 0x80FF])
    });
    let got = load_rgb_from_bytes(
        &encode(&DynamicImage::ImageRgb16(rgb16.clone()), ImageFormat::Png),
        &opts,
    )
    .unwrap();
    for (x, y, p) in got.enumerate_pixels() {
        let q = rgb16.get_pixel(x, y).0;
        assert_eq!(
            p.0,
            [(q[0] >> 8) as u8, (q[1] >> 8) as u8, (q[2] >> 8) as u8]
        );
    }
}

#[test]
fn gif_first_frame_and_jpeg_decode() {
    let opts = DecodeOptions::default();
    // A GIF of few colours survives palette quantisation exactly.
    let flat = RgbImage::from_fn(16, 8, |x, _| {
        if x < 8 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    });
    let got = load_rgb_from_bytes(
        &encode(&DynamicImage::ImageRgb8(flat.clone()), ImageFormat::Gif),
        &opts,
    )
    .unwrap();
    assert_eq!(got, flat);
    // JPEG is lossy: close, not equal.
    let img = gradient(40, 24);
    let got = load_rgb_from_bytes(
        &encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Jpeg),
        &opts,
    )
    .unwrap();
    assert_eq!(got.dimensions(), (40, 24));
    let err: f64 = got
        .as_raw()
        .iter()
        .zip(img.as_raw())
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
        .sum::<f64>()
        / img.as_raw().len() as f64;
    assert!(err < 8.0, "mean error {err}");
}
