//! The `com.microsoft::GatherBlockQuantized` layout for embedding tables.
//!
//! Contract of the op for `uint8` data with `bits = 4` (ONNX Runtime's CPU kernel and
//! ContribOperators doc): `data` is `[V, H / 2]` uint8 holding the logical `[V, H]` table two
//! values per byte, element `(v, h)` at flat nibble `v * H + h`, low nibble first; `gather_axis`
//! must be 0 and `quantize_axis` the last axis (1); `scales` is `[V, ceil(H / block_size)]`;
//! optional `zero_points` is uint8 `[V, ceil(blocks / 2)]`, two per byte, low nibble first, each
//! row padded to whole bytes. Without zero points the op uses the `MatMulNBits` convention of an
//! implicit zero point 8, so symmetric codes here are unsigned with zero point 8, exactly as for
//! `MatMulNBits`. Output element = `(code - zero_point) * scale`.
//!
//! The quantization arithmetic is ONNX Runtime's `MatMulNBits` one (module `rtn`), applied
//! to blocks along H. Consequence worth knowing: for a tied embedding / LM head whose H is a
//! multiple of the block size, `data`, `scales` and `zero_points` here are byte-identical to the
//! `MatMulNBits` quantization of the same `[V, H]` matrix taken as a PyTorch `Linear` weight
//! (N = V, K = H), so one set of initializers can serve both nodes.

use crate::matmul_nbits::{check_ort_block_size, get_nibble};
use crate::metrics::MetricsAccumulator;
use crate::rtn::{self, BlockParams, SYM_ZERO_POINT};
use crate::weight::{check_len, checked_numel};
use crate::{QuantError, Quantized};

/// How to quantize an embedding table for `GatherBlockQuantized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatherBlockQuantizedConfig {
    /// Values of H per block: a power of two from 16 to 256.
    pub block_size: usize,
    /// Symmetric (no zero-point input, implicit 8) or asymmetric (packed zero points).
    pub symmetric: bool,
}

/// The attribute values of the `GatherBlockQuantized` node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatherBlockQuantizedAttributes {
    /// Attribute `gather_axis`: 0 (rows are token ids).
    pub gather_axis: i64,
    /// Attribute `quantize_axis`: 1 (blocks run along H).
    pub quantize_axis: i64,
    /// Attribute `block_size`.
    pub block_size: i64,
    /// Attribute `bits`: 4.
    pub bits: i64,
}

/// An embedding table quantized for `com.microsoft::GatherBlockQuantized` (uint8 data, 4 bits).
///
/// Node inputs, in order: `data` = [`Self::data`], `indices` (the token ids), `scales` =
/// [`Self::scales`], and for asymmetric tables `zero_points` = [`Self::zero_points`].
#[derive(Debug, Clone, PartialEq)]
pub struct GatherBlockQuantizedWeight {
    rows: usize,
    cols: usize,
    block_size: usize,
    /// uint8 `[V, H / 2]`: element `(v, h)` in byte `(v * H + h) / 2`, low nibble for even `h`.
    pub data: Vec<u8>,
    /// f32 `[V, ceil(H / block_size)]`.
    pub scales: Vec<f32>,
    /// uint8 `[V, ceil(blocks / 2)]` for asymmetric tables (padding nibble 8).
    pub zero_points: Option<Vec<u8>>,
}

/// Quantizes a row-major `[rows, cols]` = `[V, H]` table along H.
///
/// H must be even (the packed uint8 form cannot express a half byte per row); it need not be a
/// multiple of the block size (the last block of each row is then partial).
pub fn quantize_gather_block_quantized(
    table: &[f32],
    rows: usize,
    cols: usize,
    config: GatherBlockQuantizedConfig,
) -> Result<Quantized<GatherBlockQuantizedWeight>, QuantError> {
    check_ort_block_size(config.block_size, "GatherBlockQuantized")?;
    check_table_shape(rows, cols)?;
    check_len("embedding table", table, &[rows, cols])?;
    if let Some((index, &value)) = table.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(QuantError::NonFinite { index, value });
    }

    let bs = config.block_size;
    let blocks = cols.div_ceil(bs);
    let zp_stride = blocks.div_ceil(2);
    let mut data = vec![0u8; rows * cols / 2];
    let mut scales = vec![0.0f32; rows * blocks];
    let mut zero_points = (!config.symmetric).then(|| vec![0x88u8; rows * zp_stride]);
    // One accumulator per row, merged in order: the same accumulation as `MatMulNBits` on the
    // transposed view, so a tied head reports identical metrics through either layout.
    let mut acc = vec![MetricsAccumulator::default(); rows];

    for (v, row) in table.chunks_exact(cols).enumerate() {
        for (blk, values) in row.chunks(bs).enumerate() {
            let params = BlockParams::from_block(values, config.symmetric);
            scales[v * blocks + blk] = params.scale;
            if let Some(zps) = zero_points.as_mut() {
                let byte = &mut zps[v * zp_stride + blk / 2];
                let shift = 4 * (blk % 2);
                *byte = (*byte & !(0x0F << shift)) | (params.zero_point << shift);
            }
            let rs = rtn::reciprocal(params.scale);
            for (i, &x) in values.iter().enumerate() {
                let q = rtn::quantize_with(x, rs, params.zero_point);
                let idx = v * cols + blk * bs + i;
                data[idx / 2] |= q << (4 * (idx % 2));
                acc[v].add(x, params.dequantize(q));
            }
        }
    }

    Ok(Quantized {
        tensor: GatherBlockQuantizedWeight {
            rows,
            cols,
            block_size: bs,
            data,
            scales,
            zero_points,
        },
        metrics: MetricsAccumulator::finish_columns(&acc),
    })
}

fn check_table_shape(rows: usize, cols: usize) -> Result<(), QuantError> {
    checked_numel(&[rows, cols])?;
    if !cols.is_multiple_of(2) {
        return Err(QuantError::OddRowWidth { h: cols });
    }
    Ok(())
}

impl GatherBlockQuantizedWeight {
    /// Bits per value.
    pub const BITS: u32 = 4;

    /// Rebuilds a table from its parts, checking every length.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        block_size: usize,
        data: Vec<u8>,
        scales: Vec<f32>,
        zero_points: Option<Vec<u8>>,
    ) -> Result<Self, QuantError> {
        check_ort_block_size(block_size, "GatherBlockQuantized")?;
        check_table_shape(rows, cols)?;
        let blocks = cols.div_ceil(block_size);
        check_len("data", &data, &[rows, cols / 2])?;
        check_len("scales", &scales, &[rows, blocks])?;
        if let Some(zp) = &zero_points {
            check_len("zero_points", zp, &[rows, blocks.div_ceil(2)])?;
        }
        Ok(Self {
            rows,
            cols,
            block_size,
            data,
            scales,
            zero_points,
        })
    }

    /// Vocabulary size V.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row width H (logical, unpacked).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Values of H per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks per row: `ceil(H / block_size)`.
    pub fn blocks(&self) -> usize {
        self.cols.div_ceil(self.block_size)
    }

    /// Dims of [`Self::data`]: `[V, H / 2]`.
    pub fn data_shape(&self) -> [usize; 2] {
        [self.rows, self.cols / 2]
    }

    /// Dims of [`Self::scales`]: `[V, blocks]`.
    pub fn scales_shape(&self) -> [usize; 2] {
        [self.rows, self.blocks()]
    }

    /// Dims of [`Self::zero_points`] when present: `[V, ceil(blocks / 2)]`.
    pub fn zero_points_shape(&self) -> Option<[usize; 2]> {
        self.zero_points
            .as_ref()
            .map(|_| [self.rows, self.blocks().div_ceil(2)])
    }

    /// The node's attribute values.
    pub fn attributes(&self) -> GatherBlockQuantizedAttributes {
        GatherBlockQuantizedAttributes {
            gather_axis: 0,
            quantize_axis: 1,
            block_size: self.block_size as i64,
            bits: i64::from(Self::BITS),
        }
    }

    /// The unsigned code of element `(v, h)`.
    pub fn code(&self, v: usize, h: usize) -> u8 {
        get_nibble(&self.data, v * self.cols + h)
    }

    /// The zero point of block `blk` of row `v` (8 when symmetric).
    pub fn zero_point(&self, v: usize, blk: usize) -> u8 {
        match &self.zero_points {
            Some(zp) => get_nibble(&zp[v * self.blocks().div_ceil(2)..], blk),
            None => SYM_ZERO_POINT,
        }
    }

    /// Dequantizes row `v` into `out` (length H), as the op does.
    pub fn dequantize_row_into(&self, v: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.cols, "dequantize_row_into: wrong row width");
        for (h, o) in out.iter_mut().enumerate() {
            let blk = h / self.block_size;
            *o = rtn::dequantize(
                self.code(v, h),
                self.zero_point(v, blk),
                self.scales[v * self.blocks() + blk],
            );
        }
    }

    /// Dequantizes the whole table to row-major `[V, H]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        for (v, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row_into(v, row);
        }
        out
    }

    /// Reference `GatherBlockQuantized`: the dequantized rows for `indices`, `[len, H]`.
    /// Negative indices count from the end as in the op; out-of-range ones are an error here
    /// (the op zero-fills them, which would hide a tokenizer/vocabulary mismatch).
    pub fn gather(&self, indices: &[i64]) -> Result<Vec<f32>, QuantError> {
        let mut out = vec![0.0f32; indices.len() * self.cols];
        for (&i, row) in indices.iter().zip(out.chunks_exact_mut(self.cols)) {
            let v = if i < 0 { i + self.rows as i64 } else { i };
            if v < 0 || v >= self.rows as i64 {
                return Err(QuantError::InvalidShape {
                    shape: vec![self.rows, self.cols],
                    reason: "gather index out of range for the table",
                });
            }
            self.dequantize_row_into(v as usize, row);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{quantize_matmul_nbits, MatMulNBitsConfig, WeightView};

    fn table(v: usize, h: usize) -> Vec<f32> {
        (0..v * h)
            .map(|i| ((i * 7919 % 257) as f32 - 128.0) / 512.0)
            .collect()
    }

    #[test]
    fn round_trip_and_packing() {
        let (v, h) = (11, 96);
        let t = table(v, h);
        for symmetric in [true, false] {
            for bs in [16, 32, 64] {
                let q = quantize_gather_block_quantized(
                    &t,
                    v,
                    h,
                    GatherBlockQuantizedConfig {
                        block_size: bs,
                        symmetric,
                    },
                )
                .unwrap();
                let g = &q.tensor;
                assert_eq!(g.data_shape(), [v, h / 2]);
                assert_eq!(g.scales_shape(), [v, h.div_ceil(bs)]);
                assert_eq!(g.zero_points.is_some(), !symmetric);
                let deq = g.dequantize();
                let direct = crate::error_metrics(&t, &deq);
                assert!((direct.relative_frobenius - q.metrics.relative_frobenius).abs() < 1e-12);
                assert_eq!(direct.max_abs, q.metrics.max_abs);
                assert!(q.metrics.relative_frobenius < 0.15, "{:?}", q.metrics);
                for vv in 0..v {
                    for hh in 0..h {
                        let s = g.scales[vv * g.blocks() + hh / bs].abs();
                        let e = (t[vv * h + hh] - deq[vv * h + hh]).abs();
                        assert!(e <= s * 1.0001, "({vv},{hh}) {e} vs {s}");
                        // Packing: low nibble for even h within the row's byte run.
                        let byte = g.data[vv * h / 2 + hh / 2];
                        let nib = if hh % 2 == 0 { byte & 0xF } else { byte >> 4 };
                        assert_eq!(nib, g.code(vv, hh));
                    }
                }
                let rows = g.gather(&[3, -1, 0]).unwrap();
                assert_eq!(&rows[..h], &deq[3 * h..4 * h]);
                assert_eq!(&rows[h..2 * h], &deq[(v - 1) * h..v * h]);
                assert!(g.gather(&[v as i64]).is_err());
                let back = GatherBlockQuantizedWeight::from_parts(
                    v,
                    h,
                    bs,
                    g.data.clone(),
                    g.scales.clone(),
                    g.zero_points.clone(),
                )
                .unwrap();
                assert_eq!(&back, g);
            }
        }
    }

    #[test]
    fn odd_block_count_pads_zero_points_per_row() {
        let (v, h) = (3, 48); // 3 blocks of 16 -> 2 zp bytes per row
        let t = table(v, h);
        let g = quantize_gather_block_quantized(
            &t,
            v,
            h,
            GatherBlockQuantizedConfig {
                block_size: 16,
                symmetric: false,
            },
        )
        .unwrap()
        .tensor;
        assert_eq!(g.zero_points_shape(), Some([3, 2]));
        let zp = g.zero_points.as_ref().unwrap();
        for vv in 0..v {
            assert_eq!(zp[vv * 2] & 0xF, g.zero_point(vv, 0));
            assert_eq!(zp[vv * 2] >> 4, g.zero_point(vv, 1));
            assert_eq!(zp[vv * 2 + 1] & 0xF, g.zero_point(vv, 2));
            assert_eq!(zp[vv * 2 + 1] >> 4, 8);
        }
    }

    #[test]
    fn ragged_last_block_and_errors() {
        let t = table(2, 40); // blocks of 32: one full, one of 8
        let g = quantize_gather_block_quantized(
            &t,
            2,
            40,
            GatherBlockQuantizedConfig {
                block_size: 32,
                symmetric: true,
            },
        )
        .unwrap();
        assert_eq!(g.tensor.scales_shape(), [2, 2]);
        assert_eq!(g.tensor.data.len(), 40);
        let cfg = GatherBlockQuantizedConfig {
            block_size: 32,
            symmetric: true,
        };
        assert!(matches!(
            quantize_gather_block_quantized(&table(2, 41), 2, 41, cfg),
            Err(QuantError::OddRowWidth { h: 41 })
        ));
        assert!(matches!(
            quantize_gather_block_quantized(
                &t,
                2,
                40,
                GatherBlockQuantizedConfig {
                    block_size: 12,
                    ..cfg
                }
            ),
            Err(QuantError::InvalidBlockSize { .. })
        ));
        assert!(matches!(
            quantize_gather_block_quantized(&t[..79], 2, 40, cfg),
            Err(QuantError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn identical_to_matmul_nbits_for_a_tied_head() {
        let (v, h) = (9, 128);
        let t = table(v, h);
        for symmetric in [true, false] {
            let g = quantize_gather_block_quantized(
                &t,
                v,
                h,
                GatherBlockQuantizedConfig {
                    block_size: 32,
                    symmetric,
                },
            )
            .unwrap();
            let m = quantize_matmul_nbits(
                WeightView::torch_linear(&t, v, h).unwrap(),
                MatMulNBitsConfig {
                    block_size: 32,
                    symmetric,
                },
            )
            .unwrap();
            assert_eq!(g.tensor.data, m.tensor.b);
            assert_eq!(
                g.tensor
                    .scales
                    .iter()
                    .map(|s| s.to_bits())
                    .collect::<Vec<_>>(),
                m.tensor
                    .scales
                    .iter()
                    .map(|s| s.to_bits())
                    .collect::<Vec<_>>()
            );
            assert_eq!(g.tensor.zero_points, m.tensor.zero_points);
            assert_eq!(g.metrics, m.metrics);
        }
    }
}
