//! The TensorRT layout: ONNX opset-21 `DequantizeLinear` on an INT4 initializer.
//!
//! TensorRT's weight-only int4 path recognises `DequantizeLinear(w_int4, scales)` with blocked
//! quantization feeding a `MatMul`. Its constraints, which this module enforces rather than
//! leaving them to a failed engine build on the target device:
//! * symmetric only (no zero-point input, so the zero point is 0 of type INT4);
//! * scales strictly positive (TensorRT rejects zero or negative scales at build time), so
//!   this is *not* ONNX Runtime's negative-scale convention but the conventional `amax / 7`;
//! * blocks along K only (`axis = 0` on the `[K, N]` weight), of 64 or 128, and K a multiple
//!   of the block: a blocked `DequantizeLinear` has no notion of a partial block.

use crate::matmul_nbits::{get_nibble, reference_matmul};
use crate::metrics::MetricsAccumulator;
use crate::weight::{check_len, checked_numel, WeightView};
use crate::{QuantError, Quantized};

/// The smallest scale ever emitted: 2^-24, the smallest positive f16, so a scale stays strictly
/// positive even if the exporter stores scales as f16 for a half-precision engine. It is what an
/// all-zero block gets (its codes are all 0, so any positive scale reproduces it exactly) and the
/// floor for blocks so tiny that `amax / 7` would fall below it.
pub const TRT_MIN_SCALE: f32 = 5.960_464_5e-8;

/// Block sizes the TensorRT int4 weight-only path accepts.
pub const TRT_BLOCK_SIZES: [usize; 2] = [64, 128];

/// A `[K, N]` weight quantized for `DequantizeLinear` (opset 21) + `MatMul`.
///
/// Graph: initializer `x` = [`Self::data`] of type INT4 and dims `[K, N]`; initializer
/// `x_scale` = [`Self::scales`] of type FLOAT and dims `[K / block_size, N]`; node
/// `DequantizeLinear(x, x_scale)` with attributes `axis = 0` and `block_size`; its output is
/// the `MatMul` B input.
#[derive(Debug, Clone, PartialEq)]
pub struct TrtInt4Weight {
    k: usize,
    n: usize,
    block_size: usize,
    /// INT4 values of the row-major `[K, N]` tensor packed as ONNX packs INT4 `raw_data`: element
    /// `i = k * N + n` lives in byte `i / 2`, low nibble when `i` is even, as a two's-complement
    /// nibble. Length `ceil(K * N / 2)`; an odd total leaves the last high nibble 0.
    pub data: Vec<u8>,
    /// f32 `[K / block_size, N]`, every entry `> 0`.
    pub scales: Vec<f32>,
}

/// Quantizes `w` symmetrically for TensorRT: per block of `block_size` K values of one output
/// column, `scale = max(amax / 7, TRT_MIN_SCALE)` and `q = clamp(round_half_even(w / scale), -8, 7)`
/// (the rounding and the division of ONNX `QuantizeLinear`, so the codes are the ones a
/// `QuantizeLinear` with these scales would produce).
///
/// Errors unless `block_size` is 64 or 128 and divides K.
pub fn quantize_trt_int4(
    w: WeightView<'_>,
    block_size: usize,
) -> Result<Quantized<TrtInt4Weight>, QuantError> {
    check_trt_block(w.k(), block_size)?;
    let (k, n) = (w.k(), w.n());
    let mut data = vec![0u8; (k * n).div_ceil(2)];
    let mut scales = vec![0.0f32; (k / block_size) * n];
    let mut acc = vec![MetricsAccumulator::default(); n];

    w.for_each_k_run(block_size, |col, k0, values| {
        let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = (amax / 7.0).max(TRT_MIN_SCALE);
        scales[(k0 / block_size) * n + col] = scale;
        for (i, &v) in values.iter().enumerate() {
            let q = (v / scale).round_ties_even().clamp(-8.0, 7.0) as i8;
            let idx = (k0 + i) * n + col;
            data[idx / 2] |= ((q as u8) & 0x0F) << (4 * (idx % 2));
            acc[col].add(v, f32::from(q) * scale);
        }
    });

    Ok(Quantized {
        tensor: TrtInt4Weight {
            k,
            n,
            block_size,
            data,
            scales,
        },
        metrics: MetricsAccumulator::finish_columns(&acc),
    })
}

fn check_trt_block(k: usize, block_size: usize) -> Result<(), QuantError> {
    if !TRT_BLOCK_SIZES.contains(&block_size) {
        return Err(QuantError::InvalidBlockSize {
            block_size,
            layout: "TensorRT DequantizeLinear",
            expected: "64 or 128",
        });
    }
    if !k.is_multiple_of(block_size) {
        return Err(QuantError::PartialBlock { k, block_size });
    }
    Ok(())
}

/// Packs signed 4-bit values (each in `-8..=7`) two per byte as ONNX INT4 tensors are stored:
/// element `2i` in the low nibble of byte `i`, element `2i + 1` in the high nibble.
pub fn pack_int4(values: &[i8]) -> Vec<u8> {
    values
        .chunks(2)
        .map(|pair| {
            debug_assert!(pair.iter().all(|v| (-8..=7).contains(v)));
            let lo = (pair[0] as u8) & 0x0F;
            let hi = pair.get(1).map_or(0, |&v| (v as u8) & 0x0F);
            lo | (hi << 4)
        })
        .collect()
}

/// Inverse of [`pack_int4`]: the first `len` signed 4-bit values of `packed`.
pub fn unpack_int4(packed: &[u8], len: usize) -> Vec<i8> {
    (0..len)
        .map(|i| sign_extend(get_nibble(packed, i)))
        .collect()
}

#[inline]
fn sign_extend(nibble: u8) -> i8 {
    ((nibble << 4) as i8) >> 4
}

impl TrtInt4Weight {
    /// The `axis` attribute of the `DequantizeLinear` node: blocks run along K of `[K, N]`.
    pub const AXIS: i64 = 0;

    /// Rebuilds a weight from its parts, checking lengths, block size and scale positivity.
    pub fn from_parts(
        k: usize,
        n: usize,
        block_size: usize,
        data: Vec<u8>,
        scales: Vec<f32>,
    ) -> Result<Self, QuantError> {
        checked_numel(&[k, n])?;
        check_trt_block(k, block_size)?;
        if data.len() != (k * n).div_ceil(2) {
            return Err(QuantError::LengthMismatch {
                what: "INT4 data (packed bytes)",
                shape: vec![k, n],
                expected: (k * n).div_ceil(2),
                actual: data.len(),
            });
        }
        check_len("scales", &scales, &[k / block_size, n])?;
        Ok(Self {
            k,
            n,
            block_size,
            data,
            scales,
        })
    }

    /// Input features K.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output features N.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The `block_size` attribute of the `DequantizeLinear` node.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Logical dims of the INT4 initializer: `[K, N]`.
    pub fn data_shape(&self) -> [usize; 2] {
        [self.k, self.n]
    }

    /// Dims of the scale initializer: `[K / block_size, N]`.
    pub fn scales_shape(&self) -> [usize; 2] {
        [self.k / self.block_size, self.n]
    }

    /// The signed code of element `(k, n)`.
    pub fn code(&self, k: usize, n: usize) -> i8 {
        sign_extend(get_nibble(&self.data, k * self.n + n))
    }

    /// Dequantizes to row-major `[K, N]` as `DequantizeLinear` defines it: `q * scale` in f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.k * self.n];
        for (idx, o) in out.iter_mut().enumerate() {
            let (k, n) = (idx / self.n, idx % self.n);
            *o = f32::from(self.code(k, n)) * self.scales[(k / self.block_size) * self.n + n];
        }
        out
    }

    /// Reference `MatMul(A, DequantizeLinear(W))`: `Y[M, N] = A[M, K] x deq(W)`, f64 accumulation.
    pub fn matmul(&self, a: &[f32], m: usize) -> Result<Vec<f32>, QuantError> {
        check_len("A", a, &[m, self.k])?;
        Ok(reference_matmul(a, m, self.k, self.n, &self.dequantize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(k: usize, n: usize) -> Vec<f32> {
        (0..k * n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect()
    }

    #[test]
    fn block_size_and_partial_block_errors() {
        let w = vec![0.1f32; 192 * 4];
        let view = WeightView::onnx(&w, 192, 4).unwrap();
        for bs in [16, 32, 256, 0, 96] {
            assert!(matches!(
                quantize_trt_int4(view, bs),
                Err(QuantError::InvalidBlockSize { .. })
            ));
        }
        assert!(quantize_trt_int4(view, 64).is_ok());
        let err = quantize_trt_int4(view, 128).unwrap_err();
        assert_eq!(
            err,
            QuantError::PartialBlock {
                k: 192,
                block_size: 128
            }
        );
        assert!(err.to_string().contains("not a multiple"));
    }

    #[test]
    fn int4_packing_order() {
        // First element in the low nibble, two's complement.
        assert_eq!(pack_int4(&[1, 2]), vec![0x21]);
        assert_eq!(pack_int4(&[-1, 7]), vec![0x7F]);
        assert_eq!(pack_int4(&[-8, 0, 3]), vec![0x08, 0x03]);
        let all: Vec<i8> = (-8..=7).collect();
        assert_eq!(unpack_int4(&pack_int4(&all), all.len()), all);

        // In the quantized tensor, flat index k * N + n, so row-adjacent elements share a byte.
        let (k, n) = (64, 3);
        let mut w = vec![0.0f32; k * n];
        w[0] = 7.0; // (0, 0): amax 7 -> scale 1 -> code 7
        w[1] = -3.0; // (0, 1): scale 3/7 -> code -7
        w[2] = 2.0; // (0, 2)
        w[n] = 1.0; // (1, 0) -> code 1, flat index 3: high nibble of byte 1
        let q = quantize_trt_int4(WeightView::onnx(&w, k, n).unwrap(), 64)
            .unwrap()
            .tensor;
        assert_eq!(q.data[0], 0x97); // low 7, high -7 = 0x9
        assert_eq!(q.data[1], 0x17); // low (0,2) = 7, high (1,0) = 1
        assert_eq!((q.code(0, 1), q.code(1, 0)), (-7, 1));
    }

    #[test]
    fn scales_strictly_positive_even_for_zero_blocks() {
        let (k, n) = (128, 5);
        let mut w = ramp(k, n);
        for kk in 0..64 {
            w[kk * n + 2] = 0.0; // block 0 of column 2 all zero
            w[kk * n + 4] = -0.0;
        }
        w[70 * n + 3] = 1e-30; // a block that is nearly zero
        for kk in 64..128 {
            if kk != 70 {
                w[kk * n + 3] = 0.0;
            }
        }
        let q = quantize_trt_int4(WeightView::onnx(&w, k, n).unwrap(), 64).unwrap();
        assert!(q.tensor.scales.iter().all(|&s| s > 0.0 && s.is_finite()));
        assert_eq!(q.tensor.scales[2], TRT_MIN_SCALE);
        assert_eq!(q.tensor.scales[n + 3], TRT_MIN_SCALE);
        let deq = q.tensor.dequantize();
        assert!((0..64).all(|kk| deq[kk * n + 2] == 0.0));
    }

    #[test]
    fn round_trip_error_within_half_step() {
        let (k, n) = (256, 6);
        let w = ramp(k, n);
        for bs in TRT_BLOCK_SIZES {
            let q = quantize_trt_int4(WeightView::onnx(&w, k, n).unwrap(), bs).unwrap();
            let t = &q.tensor;
            assert_eq!(t.scales_shape(), [k / bs, n]);
            let deq = t.dequantize();
            let mut max_code = 0i8;
            for kk in 0..k {
                for nn in 0..n {
                    let s = t.scales[(kk / bs) * n + nn];
                    let e = (w[kk * n + nn] - deq[kk * n + nn]).abs();
                    assert!(e <= s * 0.5001, "({kk},{nn}): {e} > {s}/2");
                    max_code = max_code.max(t.code(kk, nn).abs());
                }
            }
            assert_eq!(max_code, 7); // amax / 7 uses the symmetric range [-7, 7]
                                     // Roughly uniform values: RMS error step/sqrt(12) against RMS amax/sqrt(3) ~ 0.07.
            assert!(q.metrics.relative_frobenius < 0.1, "{:?}", q.metrics);
            assert!(q.metrics.max_abs > 0.0);
            let direct = crate::error_metrics(&w, &deq);
            assert!((direct.relative_frobenius - q.metrics.relative_frobenius).abs() < 1e-12);
            assert_eq!(
                (direct.max_abs, direct.numel),
                (q.metrics.max_abs, q.metrics.numel)
            );
        }
    }

    #[test]
    fn torch_layout_matches_onnx_layout() {
        let (k, n) = (128, 7); // odd K * N: last byte half used
        let kn = ramp(k, n);
        let mut nk = vec![0.0; k * n];
        for kk in 0..k {
            for nn in 0..n {
                nk[nn * k + kk] = kn[kk * n + nn];
            }
        }
        let a = quantize_trt_int4(WeightView::onnx(&kn, k, n).unwrap(), 128).unwrap();
        let b = quantize_trt_int4(WeightView::torch_linear(&nk, n, k).unwrap(), 128).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.tensor.data.len(), (k * n).div_ceil(2));
        let x: Vec<f32> = (0..2 * k).map(|i| (i as f32 * 0.1).sin()).collect();
        let y = a.tensor.matmul(&x, 2).unwrap();
        let y_ref = crate::matmul_nbits::reference_matmul(&x, 2, k, n, &a.tensor.dequantize());
        assert_eq!(y, y_ref);
        let rebuilt =
            TrtInt4Weight::from_parts(k, n, 128, a.tensor.data.clone(), a.tensor.scales.clone())
                .unwrap();
        assert_eq!(rebuilt, a.tensor);
    }

    #[test]
    fn ties_round_to_even() {
        // amax 7 -> scale 1: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2.
        let mut w = vec![0.0f32; 64];
        w[..5].copy_from_slice(&[7.0, 0.5, 1.5, 2.5, -2.5]);
        let q = quantize_trt_int4(WeightView::onnx(&w, 64, 1).unwrap(), 64)
            .unwrap()
            .tensor;
        let codes: Vec<i8> = (0..5).map(|kk| q.code(kk, 0)).collect();
        assert_eq!(codes, vec![7, 0, 2, 2, -2]);
    }
}
