//! The one error type of the crate.

use thiserror::Error;

/// Why a tensor could not be quantized (or a quantized tensor could not be rebuilt from parts).
///
/// Every variant carries the numbers needed to find the offending tensor in an export log,
/// because the exporter quantizes hundreds of tensors in one run and "invalid shape" alone
/// would not say which dimension was wrong.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QuantError {
    /// The block size is not one this layout supports.
    #[error("invalid block size {block_size} for {layout}: expected {expected}")]
    InvalidBlockSize {
        /// The block size that was asked for.
        block_size: usize,
        /// Which output layout rejected it.
        layout: &'static str,
        /// The accepted values, in words.
        expected: &'static str,
    },
    /// A dimension is zero, or the element count overflows `usize`.
    #[error("invalid shape {shape:?}: {reason}")]
    InvalidShape {
        /// The shape as given by the caller.
        shape: Vec<usize>,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A buffer does not have the length its shape implies.
    #[error("{what} has {actual} elements, but its shape {shape:?} needs {expected}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// Its declared shape.
        shape: Vec<usize>,
        /// The length the shape implies.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },
    /// The TensorRT layout only takes whole blocks along K.
    #[error("K = {k} is not a multiple of the block size {block_size}: the TensorRT DequantizeLinear layout takes whole blocks only")]
    PartialBlock {
        /// The reduction dimension.
        k: usize,
        /// The block size.
        block_size: usize,
    },
    /// The packed GatherBlockQuantized layout stores two values per byte along H, so H must be even.
    #[error("row width H = {h} is odd: the uint8 GatherBlockQuantized layout packs two 4-bit values per byte along H")]
    OddRowWidth {
        /// The row width.
        h: usize,
    },
    /// A weight is NaN or infinite; quantizing it would silently produce garbage codes.
    #[error("weight element {index} is not finite ({value})")]
    NonFinite {
        /// Flat index into the caller's buffer.
        index: usize,
        /// The value found there.
        value: f32,
    },
}
