//! Quantization error of one tensor, for the bundle manifest.

use serde::{Deserialize, Serialize};

/// How far the dequantized tensor is from the original float tensor.
///
/// Written into the bundle manifest per tensor so a bad layer (an outlier-heavy projection
/// that int4 destroys) can be spotted without running the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ErrorMetrics {
    /// `||W - deq(Q)||_F / ||W||_F`; 0 when W is all zeros (and so reproduced exactly).
    pub relative_frobenius: f64,
    /// `max |W - deq(Q)|` over all elements.
    pub max_abs: f64,
    /// Number of elements measured (the logical tensor, padding excluded).
    pub numel: u64,
}

/// Accumulates the metrics element by element, in f64 so a long sum of tiny squared errors
/// does not lose precision on billion-element tensors.
#[derive(Debug, Default, Clone)]
pub(crate) struct MetricsAccumulator {
    sum_sq_w: f64,
    sum_sq_err: f64,
    max_abs: f64,
    numel: u64,
}

impl MetricsAccumulator {
    #[inline]
    pub(crate) fn add(&mut self, original: f32, dequantized: f32) {
        let w = f64::from(original);
        let e = w - f64::from(dequantized);
        self.sum_sq_w += w * w;
        self.sum_sq_err += e * e;
        self.max_abs = self.max_abs.max(e.abs());
        self.numel += 1;
    }

    /// Folds `other` into `self`. Quantizers keep one accumulator per output column and merge
    /// them in column order, so the reported numbers do not depend on the order the blocks were
    /// visited in (which differs between the `[K, N]` and `[N, K]` input layouts).
    pub(crate) fn merge(&mut self, other: &Self) {
        self.sum_sq_w += other.sum_sq_w;
        self.sum_sq_err += other.sum_sq_err;
        self.max_abs = self.max_abs.max(other.max_abs);
        self.numel += other.numel;
    }

    /// Merges per-column accumulators in order and finishes.
    pub(crate) fn finish_columns(columns: &[Self]) -> ErrorMetrics {
        let mut total = Self::default();
        for c in columns {
            total.merge(c);
        }
        total.finish()
    }

    pub(crate) fn finish(&self) -> ErrorMetrics {
        let relative_frobenius = if self.sum_sq_w > 0.0 {
            (self.sum_sq_err / self.sum_sq_w).sqrt()
        } else if self.sum_sq_err == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        ErrorMetrics {
            relative_frobenius,
            max_abs: self.max_abs,
            numel: self.numel,
        }
    }
}

/// Computes the metrics of `dequantized` against `original` directly (same flat order).
///
/// Useful for a caller that dequantizes by other means (e.g. the runtime's own kernel) and
/// wants numbers comparable to the ones the quantizers report.
pub fn error_metrics(original: &[f32], dequantized: &[f32]) -> ErrorMetrics {
    assert_eq!(
        original.len(),
        dequantized.len(),
        "error_metrics: buffers differ in length"
    );
    let mut acc = MetricsAccumulator::default();
    for (&w, &d) in original.iter().zip(dequantized) {
        acc.add(w, d);
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // W = [3, 4], deq = [3, 3.5]: ||W|| = 5, ||err|| = 0.5.
        let m = error_metrics(&[3.0, 4.0], &[3.0, 3.5]);
        assert!((m.relative_frobenius - 0.1).abs() < 1e-15);
        assert_eq!(m.max_abs, 0.5);
        assert_eq!(m.numel, 2);
    }

    #[test]
    fn zero_tensor() {
        let m = error_metrics(&[0.0; 4], &[0.0; 4]);
        assert_eq!((m.relative_frobenius, m.max_abs), (0.0, 0.0));
        let m = error_metrics(&[0.0], &[1.0]);
        assert!(m.relative_frobenius.is_infinite());
    }

    #[test]
    fn serde_round_trip() {
        let m = error_metrics(&[1.0, -2.0], &[1.25, -2.0]);
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.contains("relative_frobenius") && s.contains("max_abs"));
        let back: ErrorMetrics = serde_json::from_str(&s).unwrap();
        assert_eq!(back, m);
    }
}
