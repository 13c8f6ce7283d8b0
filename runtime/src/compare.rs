//! Metrics for comparing two runs' logits (e.g. an int4 bundle against its float twin):
//! max |diff|, top-1 agreement, mean KL divergence and greedy prefix agreement.
//!
//! Logits are row-major `[rows, vocab]` slices. The functions that take two of them panic
//! when their lengths differ or `vocab` does not divide them (check shapes first where
//! the input is not trusted, as `ove compare` does).

use crate::sampling::argmax;

/// Largest |a[i] - b[i]| (0 for empty inputs; NaN differences are skipped by `f32::max`).
///
/// Panics when the lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Rows of `[rows, vocab]` logits; panics on a shape mismatch.
fn rows(a: &[f32], b: &[f32], vocab: usize) -> usize {
    assert_eq!(a.len(), b.len(), "logits length mismatch");
    assert!(
        vocab > 0 && a.len().is_multiple_of(vocab),
        "{} logits are not rows of vocab {vocab}",
        a.len()
    );
    a.len() / vocab
}

/// Number of rows whose argmax (first on ties) is the same in `a` and `b`.
pub fn top1_matches(a: &[f32], b: &[f32], vocab: usize) -> usize {
    rows(a, b, vocab);
    a.chunks_exact(vocab)
        .zip(b.chunks_exact(vocab))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count()
}

/// Fraction of rows whose argmax is the same in `a` and `b` (0 when there are no rows).
pub fn top1_agreement(a: &[f32], b: &[f32], vocab: usize) -> f64 {
    top1_matches(a, b, vocab) as f64 / rows(a, b, vocab).max(1) as f64
}

/// `log(softmax(row))`, computed in f64 with the max subtracted.
pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// KL(softmax(p) || softmax(q)) of two logit rows of the same length, in nats.
pub fn kl(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter()
        .zip(&lq)
        .map(|(p, q)| p.exp() * (p - q))
        .sum::<f64>()
}

/// Mean over rows of KL(softmax(a) || softmax(b)), in nats (0 when there are no rows).
pub fn mean_kl(a: &[f32], b: &[f32], vocab: usize) -> f64 {
    let rows = rows(a, b, vocab);
    let total: f64 = a
        .chunks_exact(vocab)
        .zip(b.chunks_exact(vocab))
        .map(|(x, y)| kl(x, y))
        .sum();
    total / rows.max(1) as f64
}

/// Leading tokens that two greedy continuations share.
pub fn same_prefix(a: &[i64], b: &[i64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [f32; 6] = [1.0, 2.0, 0.5, 3.0, -1.0, 0.0];
    const B: [f32; 6] = [1.0, 0.0, 2.5, 3.0, -1.0, 0.5];

    #[test]
    fn max_abs_diff_is_the_largest_gap() {
        assert_eq!(max_abs_diff(&A, &B), 2.0);
        assert_eq!(max_abs_diff(&A, &A), 0.0);
        assert_eq!(max_abs_diff(&[], &[]), 0.0);
    }

    #[test]
    #[should_panic(expected = "length mismatch")]
    fn max_abs_diff_rejects_different_lengths() {
        max_abs_diff(&A, &B[..3]);
    }

    #[test]
    fn top1_counts_rows_with_the_same_argmax() {
        // Row 0: argmax 1 vs 2; row 1: argmax 0 vs 0.
        assert_eq!(top1_matches(&A, &B, 3), 1);
        assert_eq!(top1_agreement(&A, &B, 3), 0.5);
        assert_eq!(top1_agreement(&A, &A, 3), 1.0);
        // Ties go to the first index in both.
        assert_eq!(top1_agreement(&[1.0, 1.0], &[1.0, 0.5], 2), 1.0);
        assert_eq!(top1_agreement(&[], &[], 3), 0.0);
    }

    #[test]
    #[should_panic(expected = "not rows of vocab")]
    fn top1_rejects_a_vocab_that_does_not_divide() {
        top1_agreement(&A, &B, 4);
    }

    #[test]
    fn log_softmax_of_equal_logits_is_uniform() {
        let l = log_softmax(&[5.0, 5.0, 5.0, 5.0]);
        for x in l {
            assert!((x - 0.25f64.ln()).abs() < 1e-12);
        }
    }

    #[test]
    fn kl_matches_a_hand_computed_value() {
        // softmax([0, 0]) = (1/2, 1/2); softmax([ln 3, 0]) = (3/4, 1/4).
        // KL = 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3).
        let q = [3f32.ln(), 0.0];
        let want = 0.5 * (4.0f64 / 3.0).ln();
        assert!((kl(&[0.0, 0.0], &q) - want).abs() < 1e-7);
        assert!(kl(&q, &q).abs() < 1e-12);
        // Mean over two rows: one identical (KL 0), one as above.
        let a = [0.0, 0.0, 1.0, 1.0];
        let b = [q[0], q[1], 1.0, 1.0];
        assert!((mean_kl(&a, &b, 2) - want / 2.0).abs() < 1e-7);
        assert!(mean_kl(&A, &A, 3).abs() < 1e-12);
        assert!(mean_kl(&A, &B, 3) > 0.0);
    }

    #[test]
    fn same_prefix_stops_at_the_first_difference() {
        assert_eq!(same_prefix(&[1, 2, 3], &[1, 5, 3]), 1);
        assert_eq!(same_prefix(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(same_prefix(&[], &[1]), 0);
    }
}
