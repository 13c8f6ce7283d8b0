//! Blocks of lines and the reading order of a page.
//!
//! A block is a column's run of lines one below the other: two lines are linked when each
//! is the other's only nearest neighbour (below, above) that overlaps it horizontally, within
//! `block_gap` text heights. Uniqueness keeps columns apart: a title spanning two columns
//! has two lines right below it, so it links to neither. Blocks are therefore chains, read
//! top to bottom.
//!
//! Blocks are ordered by a recursive X-Y cut: a set of blocks with a vertical strip of
//! paper through it is read column by column, left to right; otherwise it is cut into
//! horizontal bands, read top to bottom, where consecutive bands that share a vertical gap
//! are kept together first (so two columns whose paragraph breaks happen to line up are
//! still read column by column, not band by band).

use super::lines::TextLine;
use super::LayoutOptions;

/// An interval of paper `(from, to)` between groups of blocks, along one axis.
type Gap = (f32, f32);

/// An axis-aligned box in the deskewed frame.
#[derive(Debug, Clone, Copy)]
struct Rect {
    x0: f32,
    x1: f32,
    y0: f32,
    y1: f32,
}

/// `(line index, block index)` for every line, in reading order; blocks are numbered in
/// reading order too.
pub(crate) fn reading_order(lines: &[TextLine], opts: &LayoutOptions) -> Vec<(usize, usize)> {
    let n = lines.len();
    let near = |a: &TextLine, b: &TextLine| {
        // `b` below `a`, overlapping it horizontally, close enough.
        let overlap = a.x1.min(b.x1) - a.x0.max(b.x0);
        b.cy > a.cy + 0.5 * a.h.min(b.h)
            && overlap > 0.0
            && b.y0 - a.y1 <= opts.block_gap * a.h.max(b.h)
    };
    // The unique nearest line below (and above) each line, if there is one.
    let unique = |cands: Vec<usize>, key: &dyn Fn(usize) -> f32| -> Option<usize> {
        let best = cands.iter().map(|&c| key(c)).fold(f32::MAX, f32::min);
        let mut it = cands.iter().filter(|&&c| {
            let tol = 0.5 * lines[c].h;
            key(c) <= best + tol
        });
        match (it.next(), it.next()) {
            (Some(&c), None) => Some(c),
            _ => None,
        }
    };
    let mut below = vec![None; n];
    let mut above = vec![None; n];
    for a in 0..n {
        let down: Vec<usize> = (0..n).filter(|&b| near(&lines[a], &lines[b])).collect();
        below[a] = unique(down, &|b| lines[b].y0);
        let up: Vec<usize> = (0..n).filter(|&b| near(&lines[b], &lines[a])).collect();
        above[a] = unique(up, &|b| -lines[b].y1);
    }
    let linked_below = |a: usize| below[a].filter(|&b| above[b] == Some(a));
    let mut has_above = vec![false; n];
    for a in 0..n {
        if let Some(b) = linked_below(a) {
            has_above[b] = true;
        }
    }
    let mut blocks: Vec<Vec<usize>> = Vec::new();
    for start in (0..n).filter(|&i| !has_above[i]) {
        let mut chain = vec![start];
        let mut cur = start;
        while let Some(b) = linked_below(cur) {
            if chain.len() > n {
                break; // cannot happen (links go downwards); a guard all the same
            }
            chain.push(b);
            cur = b;
        }
        blocks.push(chain);
    }
    let rects: Vec<Rect> = blocks
        .iter()
        .map(|b| {
            b.iter().fold(
                Rect {
                    x0: f32::MAX,
                    x1: f32::MIN,
                    y0: f32::MAX,
                    y1: f32::MIN,
                },
                |r, &l| Rect {
                    x0: r.x0.min(lines[l].x0),
                    x1: r.x1.max(lines[l].x1),
                    y0: r.y0.min(lines[l].y0),
                    y1: r.y1.max(lines[l].y1),
                },
            )
        })
        .collect();
    let mut order = Vec::with_capacity(blocks.len());
    xy_cut((0..blocks.len()).collect(), &rects, &mut order);
    let mut out = Vec::with_capacity(n);
    for (bi, &b) in order.iter().enumerate() {
        out.extend(blocks[b].iter().map(|&l| (l, bi)));
    }
    out
}

/// Groups of `ids` separated by gaps in the projection `span` (sorted along it), and the
/// gaps between consecutive groups.
fn split(mut ids: Vec<usize>, span: impl Fn(usize) -> (f32, f32)) -> (Vec<Vec<usize>>, Vec<Gap>) {
    ids.sort_by(|&a, &b| span(a).0.total_cmp(&span(b).0));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut gaps = Vec::new();
    let mut end = f32::MIN;
    for id in ids {
        let (s, e) = span(id);
        if groups.is_empty() || s >= end {
            if !groups.is_empty() {
                gaps.push((end, s));
            }
            groups.push(Vec::new());
        }
        groups.last_mut().expect("a group was just pushed").push(id);
        end = end.max(e);
    }
    (groups, gaps)
}

fn intersect(a: &[Gap], b: &[Gap]) -> Vec<Gap> {
    let mut out = Vec::new();
    for &(a0, a1) in a {
        for &(b0, b1) in b {
            let (l, r) = (a0.max(b0), a1.min(b1));
            if r > l {
                out.push((l, r));
            }
        }
    }
    out
}

fn xy_cut(ids: Vec<usize>, rects: &[Rect], out: &mut Vec<usize>) {
    if ids.len() <= 1 {
        out.extend(ids);
        return;
    }
    let xs = |i: usize| (rects[i].x0, rects[i].x1);
    let ys = |i: usize| (rects[i].y0, rects[i].y1);
    let (cols, _) = split(ids.clone(), xs);
    if cols.len() > 1 {
        for c in cols {
            xy_cut(c, rects, out);
        }
        return;
    }
    let (bands, _) = split(ids.clone(), ys);
    if bands.len() > 1 {
        // Keep consecutive bands together while they share a vertical gap.
        let mut merged: Vec<(Vec<usize>, Vec<Gap>)> = Vec::new();
        for band in bands {
            let (_, gaps) = split(band.clone(), xs);
            if let Some((ids, common)) = merged.last_mut() {
                let both = intersect(common, &gaps);
                if !both.is_empty() {
                    ids.extend(band);
                    *common = both;
                    continue;
                }
            }
            merged.push((band, gaps));
        }
        if merged.len() > 1 {
            for (m, _) in merged {
                xy_cut(m, rects, out);
            }
            return;
        }
    }
    // Neither cut exists: top to bottom, then left to right.
    let mut ids = ids;
    ids.sort_by(|&a, &b| {
        let (ra, rb) = (&rects[a], &rects[b]);
        ra.y0.total_cmp(&rb.y0).then(ra.x0.total_cmp(&rb.x0))
    });
    out.extend(ids);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(x0: f32, y0: f32, x1: f32, y1: f32) -> Rect {
        Rect { x0, x1, y0, y1 }
    }

    fn cut(rects: &[Rect]) -> Vec<usize> {
        let mut out = Vec::new();
        xy_cut((0..rects.len()).collect(), rects, &mut out);
        out
    }

    #[test]
    fn title_then_columns_then_footer() {
        let rects = [
            r(0.0, 0.0, 100.0, 10.0),    // 0 title
            r(60.0, 20.0, 100.0, 50.0),  // 1 right column, paragraph 1
            r(0.0, 20.0, 40.0, 50.0),    // 2 left column, paragraph 1
            r(0.0, 60.0, 40.0, 90.0),    // 3 left column, paragraph 2 (breaks line up)
            r(60.0, 60.0, 100.0, 90.0),  // 4 right column, paragraph 2
            r(0.0, 100.0, 100.0, 110.0), // 5 footer
        ];
        assert_eq!(cut(&rects), vec![0, 2, 3, 1, 4, 5]);
    }

    #[test]
    fn stacked_blocks_read_down() {
        let rects = [r(0.0, 50.0, 80.0, 60.0), r(10.0, 0.0, 90.0, 40.0)];
        assert_eq!(cut(&rects), vec![1, 0]);
    }
}
