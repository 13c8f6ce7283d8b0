//! A borrowed view of a 2-D float weight, in either of the two layouts checkpoints and ONNX use.

use crate::QuantError;

/// How a `[K, N]` matrix (K = input features = reduction dim, N = output features) is laid out.
///
/// ONNX `MatMul` stores its right-hand side as `[K, N]`, while PyTorch `nn.Linear` (and so every
/// safetensors checkpoint) stores `weight` as `[out, in] = [N, K]`. Both are accepted so the
/// exporter never has to materialise a transposed copy of a multi-hundred-megabyte tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// Row-major `[K, N]`: element `(k, n)` at `k * N + n` (ONNX `MatMul` B).
    KxN,
    /// Row-major `[N, K]`: element `(k, n)` at `n * K + k` (PyTorch `nn.Linear.weight`).
    NxK,
}

/// A borrowed, validated 2-D weight. Indices are always logical `(k, n)` whatever the layout.
#[derive(Debug, Clone, Copy)]
pub struct WeightView<'a> {
    data: &'a [f32],
    k: usize,
    n: usize,
    layout: WeightLayout,
}

impl<'a> WeightView<'a> {
    /// A weight in ONNX `MatMul` layout, shape `[k, n]`.
    pub fn onnx(data: &'a [f32], k: usize, n: usize) -> Result<Self, QuantError> {
        Self::new(data, k, n, WeightLayout::KxN)
    }

    /// A PyTorch `nn.Linear.weight`, shape `[out_features, in_features]` = `[N, K]`.
    pub fn torch_linear(
        data: &'a [f32],
        out_features: usize,
        in_features: usize,
    ) -> Result<Self, QuantError> {
        Self::new(data, in_features, out_features, WeightLayout::NxK)
    }

    /// A weight with logical shape `[k, n]` stored in `layout`.
    ///
    /// Rejects NaN and infinities up front: ONNX Runtime's quantizer skips NaN when it scans a
    /// block and would then emit codes from a meaningless scale, which no one would notice until
    /// the model produced garbage. One linear scan is cheap next to reading the checkpoint.
    pub fn new(
        data: &'a [f32],
        k: usize,
        n: usize,
        layout: WeightLayout,
    ) -> Result<Self, QuantError> {
        let shape = match layout {
            WeightLayout::KxN => vec![k, n],
            WeightLayout::NxK => vec![n, k],
        };
        let numel = checked_numel(&shape)?;
        if data.len() != numel {
            return Err(QuantError::LengthMismatch {
                what: "weight",
                shape,
                expected: numel,
                actual: data.len(),
            });
        }
        if let Some((index, &value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(QuantError::NonFinite { index, value });
        }
        Ok(Self { data, k, n, layout })
    }

    /// The reduction dimension K (input features).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The output dimension N (output features).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The storage layout of the borrowed buffer.
    pub fn layout(&self) -> WeightLayout {
        self.layout
    }

    /// Element `(k, n)` of the logical `[K, N]` matrix.
    #[inline]
    pub fn at(&self, k: usize, n: usize) -> f32 {
        match self.layout {
            WeightLayout::KxN => self.data[k * self.n + n],
            WeightLayout::NxK => self.data[n * self.k + k],
        }
    }

    /// Calls `f(n, k0, values)` once for every run `values = W[k0 .. k0 + len, n]` where the runs
    /// cut K into consecutive pieces of `run` elements (the last one may be shorter).
    ///
    /// For `[N, K]` storage the runs are borrowed straight from the buffer. For `[K, N]` storage
    /// a tile of columns is copied band by band, so reads stay sequential in memory instead of
    /// striding by N for every element (a column walk over a 4096 x 11008 weight would touch a
    /// new cache line per element).
    pub(crate) fn for_each_k_run(&self, run: usize, mut f: impl FnMut(usize, usize, &[f32])) {
        debug_assert!(run > 0);
        match self.layout {
            WeightLayout::NxK => {
                for (n, row) in self.data.chunks_exact(self.k).enumerate() {
                    for (i, chunk) in row.chunks(run).enumerate() {
                        f(n, i * run, chunk);
                    }
                }
            }
            WeightLayout::KxN => {
                const TILE: usize = 64;
                let mut buf = vec![0.0f32; TILE * run];
                for n0 in (0..self.n).step_by(TILE) {
                    let cols = TILE.min(self.n - n0);
                    for k0 in (0..self.k).step_by(run) {
                        let len = run.min(self.k - k0);
                        for i in 0..len {
                            let row = &self.data[(k0 + i) * self.n + n0..][..cols];
                            for (c, &v) in row.iter().enumerate() {
                                buf[c * len + i] = v;
                            }
                        }
                        for c in 0..cols {
                            f(n0 + c, k0, &buf[c * len..(c + 1) * len]);
                        }
                    }
                }
            }
        }
    }
}

/// Product of the dims, rejecting zero dims and overflow (a zero-sized weight is always a bug
/// in the caller's shape bookkeeping, never a real layer).
pub(crate) fn checked_numel(shape: &[usize]) -> Result<usize, QuantError> {
    if shape.contains(&0) {
        return Err(QuantError::InvalidShape {
            shape: shape.to_vec(),
            reason: "every dimension must be at least 1",
        });
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| QuantError::InvalidShape {
            shape: shape.to_vec(),
            reason: "element count overflows usize",
        })
}

/// Checks that `buf` has exactly the length `shape` implies.
pub(crate) fn check_len<T>(
    what: &'static str,
    buf: &[T],
    shape: &[usize],
) -> Result<(), QuantError> {
    let expected = checked_numel(shape)?;
    if buf.len() != expected {
        return Err(QuantError::LengthMismatch {
            what,
            shape: shape.to_vec(),
            expected,
            actual: buf.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_visit_the_same_runs() {
        let (k, n) = (37, 70); // N > tile, K not a multiple of the run
        let kn: Vec<f32> = (0..k * n).map(|i| i as f32).collect();
        let mut nk = vec![0.0; k * n];
        for kk in 0..k {
            for nn in 0..n {
                nk[nn * k + kk] = kn[kk * n + nn];
            }
        }
        let collect = |w: WeightView<'_>| {
            let mut runs = Vec::new();
            w.for_each_k_run(16, |nn, k0, v| runs.push((nn, k0, v.to_vec())));
            runs.sort_by_key(|a| (a.0, a.1));
            runs
        };
        let a = collect(WeightView::onnx(&kn, k, n).unwrap());
        let b = collect(WeightView::torch_linear(&nk, n, k).unwrap());
        assert_eq!(a, b);
        assert_eq!(a.len(), n * 3);
        for (nn, k0, v) in &a {
            for (i, &x) in v.iter().enumerate() {
                assert_eq!(x, kn[(k0 + i) * n + nn]);
            }
        }
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(matches!(
            WeightView::onnx(&[0.0; 5], 2, 3),
            Err(QuantError::LengthMismatch {
                expected: 6,
                actual: 5,
                ..
            })
        ));
        assert!(matches!(
            WeightView::onnx(&[], 0, 3),
            Err(QuantError::InvalidShape { .. })
        ));
        assert!(matches!(
            WeightView::onnx(&[0.0, f32::NAN], 1, 2),
            Err(QuantError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            WeightView::torch_linear(&[f32::INFINITY, 0.0], 2, 1),
            Err(QuantError::NonFinite { index: 0, .. })
        ));
    }
}
