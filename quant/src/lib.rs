//! Blockwise 4-bit round-to-nearest quantization of float weights, in the layouts the two
//! deployment runtimes execute (see issue: int4 export).
//!
//! * [`quantize_matmul_nbits`] → [`MatMulNBitsWeight`] for ONNX Runtime's
//!   `com.microsoft::MatMulNBits`. Bit-identical (codes, scales, zero points) to ONNX Runtime
//!   1.32's own RTN quantizer, so an exported model is the model ONNX Runtime's tooling would
//!   have produced, and the golden outputs in `shared/golden/quant` apply to it unchanged.
//! * [`quantize_trt_int4`] → [`TrtInt4Weight`] for TensorRT: an INT4 initializer behind an
//!   opset-21 blocked `DequantizeLinear`, symmetric with strictly positive scales.
//! * [`quantize_gather_block_quantized`] → [`GatherBlockQuantizedWeight`] for embedding
//!   tables behind `com.microsoft::GatherBlockQuantized`.
//!
//! Every quantizer also returns the tensor's [`ErrorMetrics`] (relative Frobenius and max-abs
//! error), measured while quantizing so the exporter does not need a second pass.
//!
//! Weights are borrowed through [`WeightView`], which takes either the ONNX `[K, N]` layout or
//! the PyTorch `nn.Linear` `[N, K]` layout without a transposed copy. There is no global state:
//! each call reads one tensor and returns owned buffers, so an exporter can stream a checkpoint
//! tensor by tensor (or in parallel) and drop each float tensor as soon as it is quantized.

mod error;
mod gather;
mod matmul_nbits;
mod metrics;
mod rtn;
mod trt;
mod weight;

pub use error::QuantError;
pub use gather::{
    quantize_gather_block_quantized, GatherBlockQuantizedAttributes, GatherBlockQuantizedConfig,
    GatherBlockQuantizedWeight,
};
pub use matmul_nbits::{
    matmul_nbits_error, quantize_matmul_nbits, MatMulNBitsAttributes, MatMulNBitsConfig,
    MatMulNBitsWeight, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE,
};
pub use metrics::{error_metrics, ErrorMetrics};
pub use trt::{
    pack_int4, quantize_trt_int4, unpack_int4, TrtInt4Weight, TRT_BLOCK_SIZES, TRT_MIN_SCALE,
};
pub use weight::{WeightLayout, WeightView};

/// A quantized tensor together with how much precision quantizing it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized<T> {
    /// The tensor in its target layout.
    pub tensor: T,
    /// Error of `dequantize(tensor)` against the float input.
    pub metrics: ErrorMetrics,
}
