//! Decoding an image file into 8-bit RGB, safely, as the reference's PIL sees it.
//!
//! An image can come from anywhere (a user's upload, a crawled page), so decoding is
//! guarded in three steps:
//! 1. the format is sniffed from the first bytes (never trusted from the file name);
//! 2. the header alone is read and its dimensions are checked against
//!    [`DecodeOptions::max_pixels`] and against zero *before any pixel is decoded*, so a
//!    small file announcing 50 000 x 50 000 pixels is refused without allocating for it;
//! 3. the decoder then runs under `image::Limits` set to the announced size, so a header
//!    that lies cannot make it allocate much more than what was accepted.
//!
//! Every failure is a [`PreprocessError`]; nothing here panics on bad input.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;

use image::error::ImageError;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use super::error::PreprocessError;
use super::jpeg;
use super::rgb::to_rgb_like_pil;

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// The largest width x height a header may announce (default 100 million pixels,
    /// about 300 MB as 8-bit RGB). The CLI exposes it as `--max-image-pixels`.
    pub max_pixels: u64,
}

impl DecodeOptions {
    /// The default pixel limit: 100 megapixels.
    pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_pixels: Self::DEFAULT_MAX_PIXELS,
        }
    }
}

/// Allocation budget while only the header is parsed (ancillary PNG chunks such as ICC
/// profiles and text, TIFF directories). Real headers need far less.
const HEADER_ALLOC_BUDGET: u64 = 64 * 1024 * 1024;

/// Slack on top of the announced output size for decoders' internal buffers
/// (rows, tiles, Huffman tables, frame buffers).
const DECODER_ALLOC_SLACK: u64 = 64 * 1024 * 1024;

/// What the first bytes say, read before any decoder is built.
struct Sniffed {
    format: ImageFormat,
    /// For PNG only: (width, height) from the IHDR chunk.
    png_ihdr: Option<(u32, u32)>,
}

/// Reads the first bytes of `reader` and rewinds it.
fn sniff<R: Read + Seek>(reader: &mut R) -> Result<Sniffed, PreprocessError> {
    let start = reader.stream_position().map_err(io_corrupt)?;
    let mut head = Vec::with_capacity(32);
    reader
        .by_ref()
        .take(32)
        .read_to_end(&mut head)
        .map_err(io_corrupt)?;
    reader.seek(SeekFrom::Start(start)).map_err(io_corrupt)?;
    if head.is_empty() {
        return Err(PreprocessError::Empty);
    }
    let format = image::guess_format(&head).map_err(|_| PreprocessError::NotAnImage)?;
    if !matches!(
        format,
        ImageFormat::Png
            | ImageFormat::Jpeg
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Tiff
            | ImageFormat::Gif
    ) {
        return Err(PreprocessError::NotAnImage);
    }
    // PNG: signature (8), chunk length (4), "IHDR" (4), width (4), height (4).
    let png_ihdr = if format == ImageFormat::Png && head.len() >= 24 && &head[12..16] == b"IHDR" {
        let be = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        Some((be(16), be(20)))
    } else {
        None
    };
    Ok(Sniffed { format, png_ihdr })
}

/// Refuses empty and oversized images from their announced dimensions.
fn check_dimensions(width: u32, height: u32, opts: &DecodeOptions) -> Result<(), PreprocessError> {
    if width == 0 || height == 0 {
        return Err(PreprocessError::ZeroSize {
            width: width.into(),
            height: height.into(),
        });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > opts.max_pixels {
        return Err(PreprocessError::TooManyPixels {
            pixels,
            limit: opts.max_pixels,
        });
    }
    Ok(())
}

fn io_corrupt(e: std::io::Error) -> PreprocessError {
    if e.kind() == ErrorKind::UnexpectedEof {
        PreprocessError::Corrupt("unexpected end of file".into())
    } else {
        PreprocessError::Corrupt(e.to_string())
    }
}

/// Maps the `image` crate's errors onto ours.
fn map_image_error(e: ImageError) -> PreprocessError {
    match e {
        ImageError::IoError(io) => io_corrupt(io),
        ImageError::Decoding(d) => PreprocessError::Corrupt(d.to_string()),
        ImageError::Parameter(p) => PreprocessError::Corrupt(p.to_string()),
        ImageError::Limits(l) => PreprocessError::DecodeLimit(l.to_string()),
        ImageError::Unsupported(u) => PreprocessError::Unsupported(u.to_string()),
        // `ImageError` only has encoding errors besides; they cannot occur when decoding.
        other => PreprocessError::Corrupt(other.to_string()),
    }
}

/// Decodes any supported image from a seekable reader into RGB (see the module docs).
fn decode<R: BufRead + Seek>(
    mut reader: R,
    opts: &DecodeOptions,
) -> Result<RgbImage, PreprocessError> {
    let sniffed = sniff(&mut reader)?;

    // JPEG: libjpeg-turbo-exact decoding where the file allows it (see `jpeg`), the
    // `image` crate otherwise. Either way the whole file is needed in memory.
    if sniffed.format == ImageFormat::Jpeg {
        let mut data = Vec::new();
        reader.read_to_end(&mut data).map_err(io_corrupt)?;
        if let Some(image) = jpeg::decode(&data, |w, h| check_dimensions(w, h, opts))? {
            return Ok(to_rgb_like_pil(image));
        }
        return decode_with_image_crate(Cursor::new(data.as_slice()), &sniffed, opts);
    }
    decode_with_image_crate(reader, &sniffed, opts)
}

/// Decodes with the `image` crate, header first, under limits (see the module docs).
fn decode_with_image_crate<R: BufRead + Seek>(
    reader: R,
    sniffed: &Sniffed,
    opts: &DecodeOptions,
) -> Result<RgbImage, PreprocessError> {
    // A PNG's size is at a fixed place: refuse it before the decoder even reads on
    // (it would otherwise parse every chunk up to the image data first).
    if let Some((w, h)) = sniffed.png_ihdr {
        check_dimensions(w, h, opts)?;
    }

    let mut image_reader = ImageReader::with_format(reader, sniffed.format);
    let mut header_limits = Limits::no_limits();
    header_limits.max_alloc = Some(HEADER_ALLOC_BUDGET);
    image_reader.limits(header_limits);
    let mut decoder = image_reader.into_decoder().map_err(map_image_error)?;

    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, opts)?;

    // From here on the decoder may not go past what its header announced.
    let mut limits = Limits::no_limits();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(
        decoder
            .total_bytes()
            .saturating_mul(2)
            .saturating_add(DECODER_ALLOC_SLACK),
    );
    decoder.set_limits(limits).map_err(map_image_error)?;

    // A decoder that panics on a malformed file (png 0.18's palette expansion does, on a
    // palette shorter than its bit depth needs) is a corrupt file to us, not a crash.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        DynamicImage::from_decoder(decoder)
    }))
    .map_err(|payload| {
        PreprocessError::Corrupt(format!(
            "the {:?} decoder failed on this file ({})",
            sniffed.format,
            crate::panic_message(payload.as_ref())
        ))
    })?;
    let image = decoded.map_err(map_image_error)?;
    Ok(to_rgb_like_pil(image))
}

/// Decodes the image file at `path` into 8-bit RGB as the reference sees it.
///
/// The format is sniffed from the content. Other modes become RGB as PIL's
/// `convert("RGB")` makes them, alpha dropped (see [`super::rgb`]). EXIF orientation is not applied: the reference (`PIL.Image.open`
/// without `ImageOps.exif_transpose`) does not apply it either.
pub fn load_rgb(path: &Path, opts: &DecodeOptions) -> Result<RgbImage, PreprocessError> {
    let io_err = |source| PreprocessError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    if file.metadata().map_err(io_err)?.is_dir() {
        return Err(io_err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "is a directory",
        )));
    }
    decode(BufReader::new(file), opts)
}

/// Decodes an in-memory image file (PNG, JPEG, WebP, BMP, TIFF, GIF) into 8-bit RGB.
pub fn load_rgb_from_bytes(
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<RgbImage, PreprocessError> {
    decode(Cursor::new(bytes), opts)
}
