//! The `com.microsoft::MatMulNBits` layout (ONNX Runtime's 4-bit weight-only MatMul).

use crate::metrics::{ErrorMetrics, MetricsAccumulator};
use crate::rtn::{self, BlockParams, SYM_ZERO_POINT};
use crate::weight::{check_len, checked_numel, WeightView};
use crate::{QuantError, Quantized};

/// Smallest block size ONNX Runtime's blockwise quantizer has a kernel for.
pub const MIN_BLOCK_SIZE: usize = 16;
/// Largest block size ONNX Runtime's blockwise quantizer has a kernel for.
pub const MAX_BLOCK_SIZE: usize = 256;

/// Checks a block size against what `MlasQuantizeBlockwise` implements (16, 32, 64, 128, 256).
pub(crate) fn check_ort_block_size(
    block_size: usize,
    layout: &'static str,
) -> Result<(), QuantError> {
    if block_size.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        Ok(())
    } else {
        Err(QuantError::InvalidBlockSize {
            block_size,
            layout,
            expected: "a power of two from 16 to 256",
        })
    }
}

/// How to quantize for `MatMulNBits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatMulNBitsConfig {
    /// Values of K per block: a power of two from 16 to 256.
    pub block_size: usize,
    /// Symmetric (no zero-point input, implicit zero point 8) or asymmetric (packed zero points).
    pub symmetric: bool,
}

/// The attribute values of the `MatMulNBits` node, typed as ONNX stores integer attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatMulNBitsAttributes {
    /// Attribute `K`: input features.
    pub k: i64,
    /// Attribute `N`: output features.
    pub n: i64,
    /// Attribute `bits`: always 4 here.
    pub bits: i64,
    /// Attribute `block_size`.
    pub block_size: i64,
}

/// A weight quantized for `com.microsoft::MatMulNBits`.
///
/// Node inputs, in order: `A` (activations), `B` = [`Self::b`], `scales` = [`Self::scales`],
/// and for asymmetric weights `zero_points` = [`Self::zero_points`]. Attributes:
/// [`Self::attributes`] (leave `accuracy_level` unset/0 to match the golden outputs).
#[derive(Debug, Clone, PartialEq)]
pub struct MatMulNBitsWeight {
    k: usize,
    n: usize,
    block_size: usize,
    /// uint8 `[N, blocks, block_size / 2]`: for output column `n` and block `b`, byte `j` holds
    /// `k = b * block_size + 2j` in its low nibble and `k + 1` in its high nibble. Codes past K
    /// (the tail of a partial last block) are 0, as ONNX Runtime leaves them.
    pub b: Vec<u8>,
    /// f32 `[N, blocks]` (ONNX Runtime also accepts it flattened to `[N * blocks]`).
    pub scales: Vec<f32>,
    /// uint8 `[N, ceil(blocks / 2)]` for asymmetric weights: block `2i` in the low nibble of
    /// byte `i`, block `2i + 1` in the high nibble. With an odd block count each row ends in a
    /// half-used byte whose high nibble is 8 (what ONNX Runtime writes; never read).
    pub zero_points: Option<Vec<u8>>,
}

/// Quantizes `w` with round-to-nearest exactly as ONNX Runtime 1.32's `MatMulNBits` quantizer
/// does, bit for bit: codes, scales and zero points. Per block of K values of one column, in f32:
///
/// * symmetric: `scale = -e / 8` where `e` is the block's min or max, whichever has the larger
///   magnitude (min on a tie), so `e` maps to code 0 (= -8) and the other side clips at +7;
///   scales are negative when `e > 0`, and an all-zero block has scale `-0.0`;
/// * asymmetric: `scale = (max(max, 0) - min(min, 0)) / 15`,
///   `zp = clamp(round(-min / scale), 0, 15)` (0 for a zero scale);
/// * `code = clamp(round(v * (1 / scale) + zp), 0, 15)` with `zp = 8` when symmetric, rounding
///   half away from zero, the multiply and the add rounded separately.
///
/// K need not be a multiple of the block size: the last block of each column is partial and
/// its codes past K are 0.
pub fn quantize_matmul_nbits(
    w: WeightView<'_>,
    config: MatMulNBitsConfig,
) -> Result<Quantized<MatMulNBitsWeight>, QuantError> {
    check_ort_block_size(config.block_size, "MatMulNBits")?;
    let (k, n, bs) = (w.k(), w.n(), config.block_size);
    let blocks = k.div_ceil(bs);
    let blob = bs / 2;
    checked_numel(&[n, blocks, blob])?;

    let mut b = vec![0u8; n * blocks * blob];
    let mut scales = vec![0.0f32; n * blocks];
    let zp_stride = blocks.div_ceil(2);
    // Padding nibbles start at 8 because ONNX Runtime's zero-point pair defaults to its mid value.
    let mut zero_points = (!config.symmetric).then(|| vec![0x88u8; n * zp_stride]);
    let mut acc = vec![MetricsAccumulator::default(); n];

    w.for_each_k_run(bs, |col, k0, values| {
        let blk = k0 / bs;
        let params = BlockParams::from_block(values, config.symmetric);
        scales[col * blocks + blk] = params.scale;
        if let Some(zps) = zero_points.as_mut() {
            set_nibble(&mut zps[col * zp_stride..], blk, params.zero_point);
        }
        let rs = rtn::reciprocal(params.scale);
        let dst = &mut b[(col * blocks + blk) * blob..][..blob];
        for (i, &v) in values.iter().enumerate() {
            let q = rtn::quantize_with(v, rs, params.zero_point);
            dst[i / 2] |= q << (4 * (i % 2));
            acc[col].add(v, params.dequantize(q));
        }
    });

    Ok(Quantized {
        tensor: MatMulNBitsWeight {
            k,
            n,
            block_size: bs,
            b,
            scales,
            zero_points,
        },
        metrics: MetricsAccumulator::finish_columns(&acc),
    })
}

/// Writes the 4-bit `value` at nibble index `i` of a packed buffer (even = low nibble).
fn set_nibble(buf: &mut [u8], i: usize, value: u8) {
    let byte = &mut buf[i / 2];
    let shift = 4 * (i % 2);
    *byte = (*byte & !(0x0F << shift)) | ((value & 0x0F) << shift);
}

/// Reads nibble `i` of a packed buffer (even = low nibble).
#[inline]
pub(crate) fn get_nibble(buf: &[u8], i: usize) -> u8 {
    (buf[i / 2] >> (4 * (i % 2))) & 0x0F
}

impl MatMulNBitsWeight {
    /// Bits per weight; `MatMulNBits` also has an 8-bit form, which this crate does not produce.
    pub const BITS: u32 = 4;

    /// Rebuilds a weight from its parts (e.g. read back from an ONNX file), checking every length.
    pub fn from_parts(
        k: usize,
        n: usize,
        block_size: usize,
        b: Vec<u8>,
        scales: Vec<f32>,
        zero_points: Option<Vec<u8>>,
    ) -> Result<Self, QuantError> {
        check_ort_block_size(block_size, "MatMulNBits")?;
        checked_numel(&[k, n])?;
        let blocks = k.div_ceil(block_size);
        check_len("B", &b, &[n, blocks, block_size / 2])?;
        check_len("scales", &scales, &[n, blocks])?;
        if let Some(zp) = &zero_points {
            check_len("zero_points", zp, &[n, blocks.div_ceil(2)])?;
        }
        Ok(Self {
            k,
            n,
            block_size,
            b,
            scales,
            zero_points,
        })
    }

    /// The weights `parts` side by side as one weight of `N = sum of their N` columns (a
    /// fused q/k/v or gate/up projection): every buffer is column-major in N, so this is a
    /// concatenation, and the product equals each part's product concatenated. The parts
    /// must share K, block size and symmetry.
    pub fn concat_columns(parts: &[Self]) -> Result<Self, QuantError> {
        let Some(first) = parts.first() else {
            return Err(QuantError::InvalidShape {
                shape: vec![],
                reason: "no weights to concatenate",
            });
        };
        if parts.iter().any(|p| {
            p.k != first.k
                || p.block_size != first.block_size
                || p.is_symmetric() != first.is_symmetric()
        }) {
            return Err(QuantError::InvalidShape {
                shape: parts.iter().map(|p| p.k).collect(),
                reason: "concatenated weights need the same K, block size and symmetry",
            });
        }
        let n = parts.iter().map(|p| p.n).sum();
        let b = parts.iter().flat_map(|p| p.b.iter().copied()).collect();
        let scales = parts
            .iter()
            .flat_map(|p| p.scales.iter().copied())
            .collect();
        let zero_points = first.zero_points.as_ref().map(|_| {
            parts
                .iter()
                .flat_map(|p| p.zero_points.iter().flatten().copied())
                .collect()
        });
        Self::from_parts(first.k, n, first.block_size, b, scales, zero_points)
    }

    /// Input features K.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output features N.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Values of K per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Whether the weight has no zero-point input (implicit zero point 8).
    pub fn is_symmetric(&self) -> bool {
        self.zero_points.is_none()
    }

    /// Blocks per output column: `ceil(K / block_size)`.
    pub fn blocks(&self) -> usize {
        self.k.div_ceil(self.block_size)
    }

    /// Shape of [`Self::b`]: `[N, blocks, block_size / 2]`.
    pub fn b_shape(&self) -> [usize; 3] {
        [self.n, self.blocks(), self.block_size / 2]
    }

    /// Shape of [`Self::scales`]: `[N, blocks]`.
    pub fn scales_shape(&self) -> [usize; 2] {
        [self.n, self.blocks()]
    }

    /// Shape of [`Self::zero_points`] when present: `[N, ceil(blocks / 2)]`.
    pub fn zero_points_shape(&self) -> Option<[usize; 2]> {
        self.zero_points
            .as_ref()
            .map(|_| [self.n, self.blocks().div_ceil(2)])
    }

    /// The node's attribute values.
    pub fn attributes(&self) -> MatMulNBitsAttributes {
        MatMulNBitsAttributes {
            k: self.k as i64,
            n: self.n as i64,
            bits: i64::from(Self::BITS),
            block_size: self.block_size as i64,
        }
    }

    /// The unsigned 4-bit code of element `(k, n)`.
    pub fn code(&self, k: usize, n: usize) -> u8 {
        let blob = self.block_size / 2;
        let (blk, i) = (k / self.block_size, k % self.block_size);
        get_nibble(&self.b[(n * self.blocks() + blk) * blob..], i)
    }

    /// The zero point of block `blk` of column `n` (8 for symmetric weights).
    pub fn zero_point(&self, n: usize, blk: usize) -> u8 {
        match &self.zero_points {
            Some(zp) => get_nibble(&zp[n * self.blocks().div_ceil(2)..], blk),
            None => SYM_ZERO_POINT,
        }
    }

    /// The scale of block `blk` of column `n`.
    pub fn scale(&self, n: usize, blk: usize) -> f32 {
        self.scales[n * self.blocks() + blk]
    }

    /// Dequantizes to a row-major `[K, N]` f32 matrix (ONNX `MatMul` layout), computing each
    /// element as ONNX Runtime does: `(code - zero_point) * scale` in f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.k * self.n];
        for n in 0..self.n {
            for k in 0..self.k {
                let blk = k / self.block_size;
                out[k * self.n + n] =
                    rtn::dequantize(self.code(k, n), self.zero_point(n, blk), self.scale(n, blk));
            }
        }
        out
    }

    /// Reference CPU `MatMulNBits`: `Y[M, N] = A[M, K] x deq(B)`, accumulating in f64.
    ///
    /// ONNX Runtime at accuracy level 0 dequantizes to f32 and runs an f32 GEMM; accumulating in
    /// f64 here gives a reference that differs from it only by ONNX Runtime's own rounding.
    pub fn matmul(&self, a: &[f32], m: usize) -> Result<Vec<f32>, QuantError> {
        check_len("A", a, &[m, self.k])?;
        Ok(reference_matmul(a, m, self.k, self.n, &self.dequantize()))
    }
}

/// `A[M, K] x W[K, N]` with f64 accumulation (shared by the layouts' reference matmuls).
pub(crate) fn reference_matmul(a: &[f32], m: usize, k: usize, n: usize, w: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; m * n];
    let mut row = vec![0.0f64; n];
    for i in 0..m {
        row.iter_mut().for_each(|r| *r = 0.0);
        for (kk, &x) in a[i * k..(i + 1) * k].iter().enumerate() {
            let x = f64::from(x);
            for (r, &wv) in row.iter_mut().zip(&w[kk * n..(kk + 1) * n]) {
                *r += x * f64::from(wv);
            }
        }
        for (out, &r) in y[i * n..(i + 1) * n].iter_mut().zip(&row) {
            *out = r as f32;
        }
    }
    y
}

/// The metrics of an existing `MatMulNBits` weight against its float original, accumulated
/// exactly as [`quantize_matmul_nbits`] does (so the two agree bit for bit).
pub fn matmul_nbits_error(original: WeightView<'_>, q: &MatMulNBitsWeight) -> ErrorMetrics {
    let deq = q.dequantize();
    let acc: Vec<MetricsAccumulator> = (0..q.n)
        .map(|n| {
            let mut a = MetricsAccumulator::default();
            for k in 0..q.k {
                a.add(original.at(k, n), deq[k * q.n + n]);
            }
            a
        })
        .collect();
    MetricsAccumulator::finish_columns(&acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(k: usize, n: usize, seed: u32) -> Vec<f32> {
        // Small deterministic pseudo-random weights (xorshift), with a few outliers.
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..k * n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let v = (s as f32 / u32::MAX as f32 - 0.5) * 0.1;
                if i % 97 == 0 {
                    v * 20.0
                } else {
                    v
                }
            })
            .collect()
    }

    #[test]
    fn rejects_invalid_block_sizes() {
        let w = vec![0.0f32; 64 * 2];
        let view = WeightView::onnx(&w, 64, 2).unwrap();
        for bs in [0, 1, 8, 24, 48, 100, 512, 1024] {
            let err = quantize_matmul_nbits(
                view,
                MatMulNBitsConfig {
                    block_size: bs,
                    symmetric: true,
                },
            )
            .unwrap_err();
            assert!(matches!(err, QuantError::InvalidBlockSize { .. }), "{bs}");
            assert!(err.to_string().contains("power of two"));
        }
        for bs in [16, 32, 64, 128, 256] {
            assert!(quantize_matmul_nbits(
                view,
                MatMulNBitsConfig {
                    block_size: bs,
                    symmetric: false
                }
            )
            .is_ok());
        }
    }

    #[test]
    fn layouts_agree_and_partial_blocks_pad_with_zero() {
        let (k, n) = (80, 70);
        let kn = sample(k, n, 7);
        let mut nk = vec![0.0; k * n];
        for kk in 0..k {
            for nn in 0..n {
                nk[nn * k + kk] = kn[kk * n + nn];
            }
        }
        for symmetric in [true, false] {
            let cfg = MatMulNBitsConfig {
                block_size: 32,
                symmetric,
            };
            let a = quantize_matmul_nbits(WeightView::onnx(&kn, k, n).unwrap(), cfg).unwrap();
            let b =
                quantize_matmul_nbits(WeightView::torch_linear(&nk, n, k).unwrap(), cfg).unwrap();
            assert_eq!(a, b);
            let t = &a.tensor;
            assert_eq!(t.b_shape(), [n, 3, 16]);
            // Block 2 holds k = 64..80 in bytes 0..8; bytes 8..16 are padding.
            for col in 0..n {
                assert!(t.b[(col * 3 + 2) * 16 + 8..(col * 3 + 3) * 16]
                    .iter()
                    .all(|&x| x == 0));
            }
            // Odd block count: the zero-point row ends in a half byte with pad nibble 8.
            if !symmetric {
                assert_eq!(t.zero_points_shape(), Some([n, 2]));
                let zp = t.zero_points.as_ref().unwrap();
                assert!((0..n).all(|c| zp[c * 2 + 1] >> 4 == 8));
            }
            // Reported metrics agree with an independent recomputation.
            let m = matmul_nbits_error(WeightView::onnx(&kn, k, n).unwrap(), t);
            assert_eq!(m, a.metrics);
            assert!(m.relative_frobenius > 0.0 && m.relative_frobenius < 0.2);
        }
    }

    #[test]
    fn error_bounded_by_half_step() {
        let (k, n) = (128, 8);
        let w = sample(k, n, 3);
        for symmetric in [true, false] {
            let q = quantize_matmul_nbits(
                WeightView::onnx(&w, k, n).unwrap(),
                MatMulNBitsConfig {
                    block_size: 64,
                    symmetric,
                },
            )
            .unwrap()
            .tensor;
            let deq = q.dequantize();
            for kk in 0..k {
                for nn in 0..n {
                    let s = q.scale(nn, kk / 64).abs();
                    let e = (w[kk * n + nn] - deq[kk * n + nn]).abs();
                    // Symmetric clips the far side at +7 steps: at most one full step there.
                    let bound = if symmetric { s * 1.0001 } else { s * 0.5001 };
                    assert!(e <= bound, "({kk},{nn}) err {e} scale {s}");
                }
            }
        }
    }

    #[test]
    fn concatenated_columns_quantize_and_multiply_as_the_parts() {
        // K = 80: a partial last block; asymmetric too, for the zero points.
        let (k, m) = (80, 3);
        for symmetric in [true, false] {
            let cfg = MatMulNBitsConfig {
                block_size: 32,
                symmetric,
            };
            let ws: Vec<Vec<f32>> = [5, 3, 4].iter().map(|&n| sample(k, n, n as u32)).collect();
            let parts: Vec<MatMulNBitsWeight> = ws
                .iter()
                .map(|w| {
                    let n = w.len() / k;
                    quantize_matmul_nbits(WeightView::torch_linear(w, n, k).unwrap(), cfg)
                        .unwrap()
                        .tensor
                })
                .collect();
            let fused = MatMulNBitsWeight::concat_columns(&parts).unwrap();
            assert_eq!(fused.n(), 12);
            // Quantizing the stacked [12, K] weight gives the same bytes.
            let stacked: Vec<f32> = ws.concat();
            let whole =
                quantize_matmul_nbits(WeightView::torch_linear(&stacked, 12, k).unwrap(), cfg)
                    .unwrap()
                    .tensor;
            assert_eq!(fused, whole);
            let a = sample(k, m, 9);
            let y = fused.matmul(&a, m).unwrap();
            let mut col = 0;
            for p in &parts {
                let yp = p.matmul(&a, m).unwrap();
                for r in 0..m {
                    assert_eq!(
                        &y[r * 12 + col..r * 12 + col + p.n()],
                        &yp[r * p.n()..(r + 1) * p.n()]
                    );
                }
                col += p.n();
            }
        }
        let a = quantize_matmul_nbits(
            WeightView::torch_linear(&sample(64, 2, 1), 2, 64).unwrap(),
            MatMulNBitsConfig {
                block_size: 32,
                symmetric: true,
            },
        )
        .unwrap()
        .tensor;
        let b = quantize_matmul_nbits(
            WeightView::torch_linear(&sample(96, 2, 1), 2, 96).unwrap(),
            MatMulNBitsConfig {
                block_size: 32,
                symmetric: true,
            },
        )
        .unwrap()
        .tensor;
        assert!(MatMulNBitsWeight::concat_columns(&[a, b]).is_err());
        assert!(MatMulNBitsWeight::concat_columns(&[]).is_err());
    }

    #[test]
    fn from_parts_checks_lengths() {
        assert!(matches!(
            MatMulNBitsWeight::from_parts(64, 2, 32, vec![0; 63], vec![0.0; 4], None),
            Err(QuantError::LengthMismatch { what: "B", .. })
        ));
        assert!(matches!(
            MatMulNBitsWeight::from_parts(64, 2, 32, vec![0; 64], vec![0.0; 4], Some(vec![0; 3])),
            Err(QuantError::LengthMismatch {
                what: "zero_points",
                ..
            })
        ));
        let w =
            MatMulNBitsWeight::from_parts(64, 2, 32, vec![0x88; 64], vec![1.0; 4], None).unwrap();
        assert!(w.dequantize().iter().all(|&v| v == 0.0));
        assert_eq!(
            w.attributes(),
            MatMulNBitsAttributes {
                k: 64,
                n: 2,
                bits: 4,
                block_size: 32
            }
        );
    }
}
