//! Column gutters: where a row of segments is two lines, not one.
//!
//! Rows are built across any horizontal gap, because a receipt's item and its price, a
//! form's label and value and a table's cells on one baseline are one line. Two text columns
//! side by side are not: between them runs a gutter, a strip of paper that separates the
//! segments of many consecutive rows, with prose on both sides. So a gap between two
//! neighbouring segments of a row cuts the row when:
//! - the strip of the gap, followed up and down the page (narrowing to the widest free part
//!   where another row's segments intrude, and stopping where less than a word gap is left,
//!   where a row spans it, or after a vertical stretch of several text heights with no row),
//!   separates segments on at least `gutter_min_rows` rows; and
//! - the segments on each side of it (the nearest on each of those rows) are wide, at least
//!   `column_min_width` text heights at the median: columns of prose. A receipt's prices, a
//!   form's labels and most table cells are narrow, so their rows stay whole.

use super::lines::{Group, Item};
use super::LayoutOptions;

/// The rows (sorted top to bottom, members sorted left to right) cut at gutters: each piece
/// a list of segment indices, left to right.
pub(crate) fn split_rows(
    rows: &[Group],
    segs: &[Item],
    th: f32,
    opts: &LayoutOptions,
) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for (ri, row) in rows.iter().enumerate() {
        let mut piece = vec![row.members[0]];
        for pair in row.members.windows(2) {
            if is_gutter(rows, segs, ri, pair[0], pair[1], th, opts) {
                out.push(std::mem::take(&mut piece));
            }
            piece.push(pair[1]);
        }
        out.push(piece);
    }
    out
}

fn is_gutter(
    rows: &[Group],
    segs: &[Item],
    ri: usize,
    s: usize,
    t: usize,
    th: f32,
    opts: &LayoutOptions,
) -> bool {
    let (a, b) = (&segs[s], &segs[t]);
    let h = a.h.max(b.h).max(0.6 * th);
    let min_w = opts.word_gap * h;
    if b.x0 - a.x1 < min_w {
        return false;
    }
    let col_min = opts.column_min_width * h;
    let mut left = vec![a.x1 - a.x0];
    let mut right = vec![b.x1 - b.x0];
    let mut support = 1;
    for up in [true, false] {
        let (mut lo, mut hi) = (a.x1, b.x0);
        let mut last = rows[ri].cy();
        let mut j = ri;
        loop {
            if up {
                if j == 0 {
                    break;
                }
                j -= 1;
            } else {
                j += 1;
                if j >= rows.len() {
                    break;
                }
            }
            let row = &rows[j];
            if (row.cy() - last).abs() > 4.0 * h {
                break;
            }
            last = row.cy();
            match widest_free(row, segs, lo, hi) {
                Some((l, r)) if r - l >= min_w => (lo, hi) = (l, r),
                _ => break,
            }
            // The nearest segments left and right of the strip on this row, if any.
            let mut nl: Option<&Item> = None;
            let mut nr: Option<&Item> = None;
            for &m in &row.members {
                let it = &segs[m];
                if it.x1 <= lo && nl.is_none_or(|n| it.x1 > n.x1) {
                    nl = Some(it);
                }
                if it.x0 >= hi && nr.is_none_or(|n| it.x0 < n.x0) {
                    nr = Some(it);
                }
            }
            if let (Some(l), Some(r)) = (nl, nr) {
                support += 1;
                left.push(l.x1 - l.x0);
                right.push(r.x1 - r.x0);
            }
        }
    }
    if support < opts.gutter_min_rows.max(1) {
        return false;
    }
    median(&mut left) >= col_min && median(&mut right) >= col_min
}

/// The widest part of `[lo, hi]` that no segment of `row` covers, if any.
fn widest_free(row: &Group, segs: &[Item], lo: f32, hi: f32) -> Option<(f32, f32)> {
    let mut best: Option<(f32, f32)> = None;
    let mut start = lo;
    // Members are sorted by x0; walk the covered parts within [lo, hi].
    for &m in &row.members {
        let it = &segs[m];
        if it.x1 <= start || it.x0 >= hi {
            if it.x0 >= hi {
                break;
            }
            continue;
        }
        if it.x0 > start && best.is_none_or(|(l, r)| it.x0 - start > r - l) {
            best = Some((start, it.x0));
        }
        start = start.max(it.x1);
    }
    if hi > start && best.is_none_or(|(l, r)| hi - start > r - l) {
        best = Some((start, hi));
    }
    best
}

fn median(v: &mut [f32]) -> f32 {
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f32::total_cmp).1
}
