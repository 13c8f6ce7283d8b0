//! The one error type of image decoding and preprocessing.
//!
//! Every way an input file can be wrong ends here with a message a user can act on:
//! a bad or hostile image must never panic the CLI or the runtime.

use std::path::PathBuf;

/// Why an image could not be decoded or preprocessed.
#[derive(thiserror::Error, Debug)]
pub enum PreprocessError {
    /// The file could not be opened or read at all.
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Zero bytes: nothing to sniff a format from.
    #[error("empty file (0 bytes): not an image")]
    Empty,

    /// The first bytes match none of the supported formats (PNG, JPEG, WebP, BMP, TIFF, GIF).
    #[error("not an image or unsupported format")]
    NotAnImage,

    /// A supported container using a feature the decoder does not implement.
    #[error("unsupported image: {0}")]
    Unsupported(String),

    /// The data ends early or does not follow its format.
    #[error("truncated or corrupt image: {0}")]
    Corrupt(String),

    /// The header announces an image without pixels.
    #[error("image is {width}x{height}, it has no pixels")]
    ZeroSize { width: u64, height: u64 },

    /// The header announces more pixels than [`super::DecodeOptions::max_pixels`] allows.
    #[error(
        "image announces {pixels} pixels, over the limit of {limit} \
         (raise it with --max-image-pixels)"
    )]
    TooManyPixels { pixels: u64, limit: u64 },

    /// The decoder wanted more memory than the announced size justifies (a lying header).
    #[error("image needs more memory than its header announces ({0})")]
    DecodeLimit(String),

    /// The reference (`smart_resize`) refuses images thinner than 1:200.
    #[error("aspect ratio {ratio:?} exceeds 200")]
    AspectRatio { ratio: f64 },

    /// The preprocessor config cannot be applied to this image.
    #[error("preprocessor config: {0}")]
    Config(String),
}
