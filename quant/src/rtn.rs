//! Round-to-nearest block math with ONNX Runtime's exact float semantics.
//!
//! ONNX Runtime 1.32's `MatMulNBits` quantizer (`quantize_matmul_4bits`, i.e. MLAS
//! `MlasQuantizeBlockwise` with column-wise blocks) works per block of up to `block_size`
//! consecutive K values of one output column:
//!
//! * it scans the block for `min` / `max` with strict `<` / `>` comparisons starting from
//!   `+FLT_MAX` / `-FLT_MAX` (values past K are never read, so a partial last block only sees
//!   its real values);
//! * **symmetric**: the signed extreme with the larger magnitude wins (`min` on a tie), and
//!   `scale = -extreme / 8`. The minus sign maps the larger half of the float range onto the
//!   longer side of the unsigned 4-bit range: the extreme itself lands on code 0, which is
//!   `-8` after the implicit zero point 8, and the opposite side is clipped at code 15 (`+7`).
//!   So scales are *negative* whenever the extreme is positive;
//! * **asymmetric**: `min` and `max` are first widened to include 0, `scale = (max - min) / 15`,
//!   and the zero point is `round(0 - min / scale)` clamped to `[0, 15]` (a zero scale keeps
//!   zero point 0);
//! * each code is `clamp(round(v * (1 / scale) + zp), 0, 15)`: a multiply by the f32
//!   reciprocal (not a division), then a separate f32 add (x86 builds of MLAS do not fuse it),
//!   then C `roundf`, i.e. round half *away from zero*. A zero scale uses reciprocal 0.
//!
//! Everything here is done in f32 in exactly that order so codes and scales are bit-identical;
//! Rust never contracts `a * b + c` into a fused multiply-add on its own.

/// Largest 4-bit code.
pub(crate) const CODE_MAX: u8 = 15;
/// The zero point symmetric blocks use implicitly (ONNX Runtime's default for `MatMulNBits`).
pub(crate) const SYM_ZERO_POINT: u8 = 8;

/// Scale and zero point of one block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BlockParams {
    pub scale: f32,
    pub zero_point: u8,
}

impl BlockParams {
    /// Derives the block's parameters from its values, as ONNX Runtime does.
    pub(crate) fn from_block(values: &[f32], symmetric: bool) -> Self {
        let (min, max) = scan_range(values);
        if symmetric {
            symmetric_params(min, max)
        } else {
            asymmetric_params(min, max)
        }
    }

    /// The 4-bit code for `v` (the quantizers hoist the reciprocal out of their loops instead).
    #[cfg(test)]
    pub(crate) fn quantize(&self, v: f32) -> u8 {
        quantize_with(v, reciprocal(self.scale), self.zero_point)
    }

    /// The value code `q` stands for: `(q - zp) * scale`, the integer difference first, as
    /// ONNX Runtime's dequantizer does.
    #[inline]
    pub(crate) fn dequantize(&self, q: u8) -> f32 {
        dequantize(q, self.zero_point, self.scale)
    }
}

/// `(q - zp) * scale` in f32 with the subtraction done exactly in integers.
#[inline]
pub(crate) fn dequantize(q: u8, zero_point: u8, scale: f32) -> f32 {
    (i32::from(q) - i32::from(zero_point)) as f32 * scale
}

/// MLAS's block scan: strict comparisons from `(+FLT_MAX, -FLT_MAX)`.
fn scan_range(values: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in values {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `-extreme / 8`, the extreme being whichever of `max`/`min` has the strictly larger magnitude
/// (`min` on a tie). Note an all-zero block gets scale `-0.0`, which matters for bitwise equality.
fn symmetric_params(min: f32, max: f32) -> BlockParams {
    let extreme = if max.abs() > min.abs() { max } else { min };
    BlockParams {
        scale: -extreme / 8.0,
        zero_point: SYM_ZERO_POINT,
    }
}

/// Range widened to include zero, spread over the 15 steps of the unsigned 4-bit range.
fn asymmetric_params(min: f32, max: f32) -> BlockParams {
    // std::min / std::max semantics (first argument kept unless the second is strictly better),
    // so signed zeros come out as in ONNX Runtime.
    let min = if 0.0 < min { 0.0 } else { min };
    let max = if max < 0.0 { 0.0 } else { max };
    let scale = (max - min) / 15.0;
    let zp_f = if scale != 0.0 { 0.0 - min / scale } else { min };
    let zero_point = if zp_f < 0.0 {
        0
    } else if zp_f > 15.0 {
        CODE_MAX
    } else {
        zp_f.round() as u8
    };
    BlockParams { scale, zero_point }
}

/// `1 / scale`, or 0 for a zero scale (so an all-zero block quantizes to its zero point).
#[inline]
pub(crate) fn reciprocal(scale: f32) -> f32 {
    if scale != 0.0 {
        1.0 / scale
    } else {
        0.0
    }
}

/// `clamp(roundf(v * rs + zp), 0, 15)` with the multiply and add rounded separately.
#[inline]
pub(crate) fn quantize_with(v: f32, reciprocal_scale: f32, zero_point: u8) -> u8 {
    let x = v * reciprocal_scale + f32::from(zero_point);
    // `as u8` maps NaN (only reachable through a subnormal scale) to 0 rather than panicking.
    x.round().clamp(0.0, f32::from(CODE_MAX)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_negative_extreme_gives_positive_scale() {
        let p = BlockParams::from_block(&[-1.0, 0.25, 0.5], true);
        assert_eq!(p.scale, 0.125);
        assert_eq!(p.zero_point, 8);
        assert_eq!(p.quantize(-1.0), 0); // the extreme sits on -8
        assert_eq!(p.quantize(0.5), 12);
        assert_eq!(p.dequantize(0), -1.0);
    }

    #[test]
    fn symmetric_positive_extreme_gives_negative_scale() {
        let p = BlockParams::from_block(&[1.0, -0.5], true);
        assert_eq!(p.scale, -0.125);
        assert_eq!(p.quantize(1.0), 0);
        assert_eq!(p.dequantize(0), 1.0);
        assert_eq!(p.quantize(-0.5), 12);
    }

    #[test]
    fn symmetric_tie_takes_min_and_clips_the_other_side() {
        let p = BlockParams::from_block(&[1.0, -1.0], true);
        assert_eq!(p.scale, 0.125);
        assert_eq!(p.quantize(-1.0), 0);
        assert_eq!(p.quantize(1.0), 15); // 16 clipped: +1.0 comes back as 0.875
    }

    #[test]
    fn symmetric_zero_block_has_negative_zero_scale() {
        let p = BlockParams::from_block(&[0.0; 4], true);
        assert_eq!(p.scale.to_bits(), (-0.0f32).to_bits());
        assert_eq!(p.quantize(0.0), 8);
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        // scale 1 (via reciprocal 1): 0.5 + 8 = 8.5 -> 9, -0.5 + 8 = 7.5 -> 8.
        assert_eq!(quantize_with(0.5, 1.0, 8), 9);
        assert_eq!(quantize_with(-0.5, 1.0, 8), 8);
        assert_eq!(quantize_with(-100.0, 1.0, 8), 0);
        assert_eq!(quantize_with(100.0, 1.0, 8), 15);
    }

    #[test]
    fn asymmetric_params() {
        let p = BlockParams::from_block(&[-1.0, 2.0], false);
        assert_eq!(p.scale, 3.0f32 / 15.0);
        assert_eq!(p.zero_point, 5);
        // Positive-only block: range widened to 0, zero point 0.
        let p = BlockParams::from_block(&[1.0, 3.0], false);
        assert_eq!(p.scale, 3.0f32 / 15.0);
        assert_eq!(p.zero_point, 0);
        // Negative-only block: zero point at the top.
        let p = BlockParams::from_block(&[-3.0, -1.0], false);
        assert_eq!(p.zero_point, 15);
        // All zero: zero scale, zero point 0, codes 0.
        let p = BlockParams::from_block(&[0.0; 3], false);
        assert_eq!((p.scale, p.zero_point), (0.0, 0));
        assert_eq!(p.quantize(0.0), 0);
        assert_eq!(p.dequantize(0), 0.0);
    }
}
