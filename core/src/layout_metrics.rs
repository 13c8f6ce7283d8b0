//! Scores of a found page layout against ground-truth text-line boxes.
//!
//! The layout stage (`ove_runtime::layout`) and whoever scores it against the document
//! generator's ground truth must agree on what a line box is and how boxes are matched, so
//! both live here, once: [`LineBox`] (a half-open pixel box), [`iou`], and [`match_lines`]
//! (one-to-one greedy matching by IoU, then precision, recall, F1 and a pairwise
//! reading-order agreement). `std` and `serde` only.

use serde::{Deserialize, Serialize};

/// A half-open pixel box `[x0, x1) x [y0, y1)` in the page image's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LineBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl LineBox {
    /// Width in pixels (0 for an empty or inverted box).
    pub fn width(&self) -> u32 {
        self.x1.saturating_sub(self.x0)
    }

    /// Height in pixels (0 for an empty or inverted box).
    pub fn height(&self) -> u32 {
        self.y1.saturating_sub(self.y0)
    }

    /// Area in pixels.
    pub fn area(&self) -> u64 {
        self.width() as u64 * self.height() as u64
    }

    /// The smallest box holding both (an empty box is ignored).
    pub fn union(&self, other: &LineBox) -> LineBox {
        if self.area() == 0 {
            return *other;
        }
        if other.area() == 0 {
            return *self;
        }
        LineBox {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
        }
    }
}

/// Intersection over union of two boxes; 0 when they do not overlap or both are empty.
pub fn iou(a: &LineBox, b: &LineBox) -> f64 {
    let iw = a.x1.min(b.x1).saturating_sub(a.x0.max(b.x0)) as u64;
    let ih = a.y1.min(b.y1).saturating_sub(a.y0.max(b.y0)) as u64;
    let inter = iw * ih;
    let union = a.area() + b.area() - inter;
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

/// How well found line boxes agree with the ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayoutScore {
    /// `matched / found`; 1 when nothing was found (no false line).
    pub precision: f64,
    /// `matched / truth`; 1 when the truth has no line.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Matched pairs (one-to-one).
    pub matched: usize,
    /// Found boxes.
    pub found: usize,
    /// Ground-truth boxes.
    pub truth: usize,
    /// Share of pairs of matched truth lines (i before j in truth order) whose found lines
    /// are in the same order (pairwise, Kendall-style agreement); 1 with fewer than 2 matches.
    pub reading_order: f64,
}

/// The one-to-one matching behind [`match_lines`]: `(truth index, found index, IoU)` for
/// each matched pair, in truth order. Pairs are taken greedily, highest IoU first (ties: the
/// lower truth index, then the lower found index), among pairs with IoU >= `min_iou` and > 0.
pub fn match_pairs(found: &[LineBox], truth: &[LineBox], min_iou: f64) -> Vec<(usize, usize, f64)> {
    let mut cands = Vec::new();
    for (t, tb) in truth.iter().enumerate() {
        for (f, fb) in found.iter().enumerate() {
            let v = iou(fb, tb);
            if v > 0.0 && v >= min_iou {
                cands.push((t, f, v));
            }
        }
    }
    cands.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    let mut t_used = vec![false; truth.len()];
    let mut f_used = vec![false; found.len()];
    let mut pairs = Vec::new();
    for (t, f, v) in cands {
        if !t_used[t] && !f_used[f] {
            t_used[t] = true;
            f_used[f] = true;
            pairs.push((t, f, v));
        }
    }
    pairs.sort_by_key(|p| p.0);
    pairs
}

/// Scores `found` (in the layout's reading order) against `truth` (in true reading order):
/// one-to-one greedy matching by IoU (see [`match_pairs`]), then precision, recall, F1 and
/// the reading-order agreement of the matched lines.
pub fn match_lines(found: &[LineBox], truth: &[LineBox], min_iou: f64) -> LayoutScore {
    let pairs = match_pairs(found, truth, min_iou);
    let matched = pairs.len();
    let precision = if found.is_empty() {
        1.0
    } else {
        matched as f64 / found.len() as f64
    };
    let recall = if truth.is_empty() {
        1.0
    } else {
        matched as f64 / truth.len() as f64
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    // `pairs` is in truth order: count the pairs whose found indices are in order too.
    let (mut agree, mut total) = (0u64, 0u64);
    for i in 0..matched {
        for j in i + 1..matched {
            total += 1;
            if pairs[i].1 < pairs[j].1 {
                agree += 1;
            }
        }
    }
    let reading_order = if total == 0 {
        1.0
    } else {
        agree as f64 / total as f64
    };
    LayoutScore {
        precision,
        recall,
        f1,
        matched,
        found: found.len(),
        truth: truth.len(),
        reading_order,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x0: u32, y0: u32, x1: u32, y1: u32) -> LineBox {
        LineBox { x0, y0, x1, y1 }
    }

    #[test]
    fn iou_known_cases() {
        // Identical boxes.
        assert_eq!(iou(&b(0, 0, 10, 10), &b(0, 0, 10, 10)), 1.0);
        // Disjoint and merely touching (half-open) boxes.
        assert_eq!(iou(&b(0, 0, 10, 10), &b(20, 0, 30, 10)), 0.0);
        assert_eq!(iou(&b(0, 0, 10, 10), &b(10, 0, 20, 10)), 0.0);
        // Half overlap: inter 50, union 150.
        assert!((iou(&b(0, 0, 10, 10), &b(5, 0, 15, 10)) - 1.0 / 3.0).abs() < 1e-12);
        // One inside the other: inter 25, union 100.
        assert!((iou(&b(0, 0, 10, 10), &b(0, 0, 5, 5)) - 0.25).abs() < 1e-12);
        // Corner overlap: inter 4 (2x2), union 100 + 100 - 4.
        assert!((iou(&b(0, 0, 10, 10), &b(8, 8, 18, 18)) - 4.0 / 196.0).abs() < 1e-12);
        // Empty boxes.
        assert_eq!(iou(&b(3, 3, 3, 3), &b(3, 3, 3, 3)), 0.0);
        assert_eq!(iou(&b(5, 5, 2, 2), &b(0, 0, 10, 10)), 0.0);
    }

    #[test]
    fn perfect_match_scores_one() {
        let truth = [b(0, 0, 100, 20), b(0, 30, 100, 50), b(0, 60, 80, 80)];
        let s = match_lines(&truth, &truth, 0.5);
        assert_eq!((s.matched, s.found, s.truth), (3, 3, 3));
        assert_eq!(
            (s.precision, s.recall, s.f1, s.reading_order),
            (1.0, 1.0, 1.0, 1.0)
        );
    }

    #[test]
    fn greedy_takes_highest_iou_first_one_to_one() {
        // Both found boxes overlap both truth boxes; the IoUs, highest first:
        // (t0, f1) 0.8, (t1, f0) 7/13, (t1, f1) 0.5, (t0, f0) 1/3.
        let truth = [b(0, 0, 10, 10), b(2, 0, 12, 10)];
        let found = [b(5, 0, 15, 10), b(0, 0, 8, 10)];
        assert!((iou(&found[1], &truth[0]) - 0.8).abs() < 1e-12);
        assert!((iou(&found[1], &truth[1]) - 0.5).abs() < 1e-12);
        assert!((iou(&found[0], &truth[0]) - 1.0 / 3.0).abs() < 1e-12);
        assert!((iou(&found[0], &truth[1]) - 7.0 / 13.0).abs() < 1e-12);
        // At min_iou 0.5: t0-f1 (0.8) first; t1-f0 (7/13 = 0.538) next: two matches.
        assert_eq!(
            match_pairs(&found, &truth, 0.5),
            vec![(0, 1, 0.8), (1, 0, 7.0 / 13.0)]
        );
        // At min_iou 0.55 only (t0, f1) is left: one match of two each.
        let s = match_lines(&found, &truth, 0.55);
        assert_eq!(s.matched, 1);
        assert_eq!((s.precision, s.recall), (0.5, 0.5));
        assert!((s.f1 - 0.5).abs() < 1e-12);
    }

    #[test]
    fn precision_recall_f1_by_hand() {
        // Three truth lines; found: two good ones, one false line, one too-small box.
        let truth = [b(0, 0, 100, 20), b(0, 30, 100, 50), b(0, 60, 100, 80)];
        let found = [
            b(0, 0, 100, 20),   // t0, IoU 1
            b(0, 32, 100, 50),  // t1, IoU 0.9
            b(0, 200, 50, 220), // nothing
            b(0, 60, 20, 80),   // t2, IoU 0.2 < 0.5
        ];
        let s = match_lines(&found, &truth, 0.5);
        assert_eq!((s.matched, s.found, s.truth), (2, 4, 3));
        assert!((s.precision - 0.5).abs() < 1e-12);
        assert!((s.recall - 2.0 / 3.0).abs() < 1e-12);
        // 2 * 0.5 * 2/3 / (0.5 + 2/3) = (2/3) / (7/6) = 4/7.
        assert!((s.f1 - 4.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn reading_order_is_pairwise_agreement() {
        let truth = [
            b(0, 0, 10, 10),
            b(0, 20, 10, 30),
            b(0, 40, 10, 50),
            b(0, 60, 10, 70),
        ];
        // Found in the order t1, t0, t2, t3: of the 6 truth pairs only (t0, t1) is swapped.
        let found = [truth[1], truth[0], truth[2], truth[3]];
        let s = match_lines(&found, &truth, 0.5);
        assert_eq!(s.matched, 4);
        assert!((s.reading_order - 5.0 / 6.0).abs() < 1e-12);
        // Fully reversed: no pair agrees.
        let rev: Vec<LineBox> = truth.iter().rev().copied().collect();
        assert_eq!(match_lines(&rev, &truth, 0.5).reading_order, 0.0);
        // Only the matched lines count: t3 missing, found order t2, t0, t1 -> pairs
        // (t0,t1) agree, (t0,t2) and (t1,t2) do not: 1/3.
        let part = [truth[2], truth[0], truth[1]];
        let s = match_lines(&part, &truth, 0.5);
        assert_eq!(s.matched, 3);
        assert!((s.reading_order - 1.0 / 3.0).abs() < 1e-12);
        // Fewer than two matches: 1.
        assert_eq!(match_lines(&[truth[3]], &truth, 0.5).reading_order, 1.0);
    }

    #[test]
    fn empty_inputs() {
        let truth = [b(0, 0, 10, 10)];
        let none = match_lines(&[], &[], 0.5);
        assert_eq!((none.precision, none.recall, none.f1), (1.0, 1.0, 1.0));
        let missed = match_lines(&[], &truth, 0.5);
        assert_eq!(
            (missed.precision, missed.recall, missed.f1),
            (1.0, 0.0, 0.0)
        );
        let extra = match_lines(&truth, &[], 0.5);
        assert_eq!((extra.precision, extra.recall, extra.f1), (0.0, 1.0, 0.0));
    }

    #[test]
    fn union_ignores_empty() {
        assert_eq!(b(0, 0, 0, 0).union(&b(2, 3, 4, 5)), b(2, 3, 4, 5));
        assert_eq!(b(0, 0, 2, 2).union(&b(5, 1, 6, 9)), b(0, 0, 6, 9));
    }
}
