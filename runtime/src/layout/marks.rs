//! Small marks and small lines: what joins a line without being one.
//!
//! Dots over i and j, accents, full stops, commas and quotes are too small to group into
//! lines by themselves (noise specks are the same size), so they are kept aside and each is
//! given to the line whose band it sits in, as is a larger component no line took (a comma
//! hanging below its word's centre line); and a line found much smaller than a line it
//! sits within or beside (a heading's punctuation, a dash that began a segment of its own)
//! is merged into it.

use super::components::Comp;
use super::lines::TextLine;
use super::skew::Frame;
use super::LayoutOptions;

/// Merges each line that is much shorter than a line it sits within (vertically) and
/// beside or inside (horizontally) into that line.
pub(crate) fn merge_small_lines(lines: &mut Vec<TextLine>, opts: &LayoutOptions) {
    let mut order: Vec<usize> = (0..lines.len()).collect();
    order.sort_by(|&a, &b| lines[a].max_h.total_cmp(&lines[b].max_h));
    let mut gone = vec![false; lines.len()];
    for &s in &order {
        let l = &lines[s];
        let mut best: Option<(f32, usize)> = None;
        for (m, big) in lines.iter().enumerate() {
            if m == s || gone[m] || big.max_h < 1.6 * l.max_h {
                continue;
            }
            let pad = 0.3 * big.h;
            let inside = l.y0 >= big.y0 - pad && l.y1 <= big.y1 + pad;
            let dx = (big.x0 - l.x1).max(l.x0 - big.x1);
            if inside && dx <= opts.word_gap * big.h && best.is_none_or(|(d, _)| dx < d) {
                best = Some((dx, m));
            }
        }
        if let Some((_, m)) = best {
            gone[s] = true;
            let (l, big) = pick_two(lines, s, m);
            big.core.append(&mut l.core);
            big.x0 = big.x0.min(l.x0);
            big.x1 = big.x1.max(l.x1);
        }
    }
    let mut i = 0;
    lines.retain(|_| {
        i += 1;
        !gone[i - 1]
    });
}

fn pick_two(v: &mut [TextLine], a: usize, b: usize) -> (&mut TextLine, &mut TextLine) {
    if a < b {
        let (lo, hi) = v.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}

/// The line each of `marks` joins (pairs of mark index and line index): the line whose
/// band (widened by a fifth of its mean component height) holds the whole mark and whose
/// extent its centre is within `reach` such heights of (a trailing full stop, comma or
/// dash after a space, a leading quote); the nearest band centre wins. Marks outside every
/// band join none, which is where most noise goes; the price is an accent above a line
/// without ascenders, which is left out of its box.
pub(crate) fn attach<'a>(
    lines: &[TextLine],
    marks: impl IntoIterator<Item = (usize, &'a Comp)>,
    frame: &Frame,
    th: f32,
    reach: f32,
) -> Vec<(usize, usize)> {
    let mut joined = Vec::new();
    if lines.is_empty() {
        return joined;
    }
    // Lines by deskewed rows of `cell` pixels, for lookup.
    let cell = th.max(4.0);
    let pad = |l: &TextLine| 0.2 * l.h;
    let lo = lines.iter().map(|l| l.y0 - pad(l)).fold(f32::MAX, f32::min);
    let hi = lines.iter().map(|l| l.y1 + pad(l)).fold(f32::MIN, f32::max);
    let n = ((hi - lo) / cell) as usize + 1;
    let mut grid: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, l) in lines.iter().enumerate() {
        let a = ((l.y0 - pad(l) - lo) / cell) as usize;
        let b = (((l.y1 + pad(l) - lo) / cell) as usize).min(n - 1);
        for cellv in &mut grid[a..=b] {
            cellv.push(i);
        }
    }
    for (si, c) in marks {
        let (cx, cy) = frame.level(c.cx(), c.cy());
        if cy < lo || cy > hi {
            continue;
        }
        let (_, sh) = frame.unrotated_size(c);
        let (y0, y1) = (cy - 0.5 * sh, cy + 0.5 * sh);
        let mut best: Option<(f32, usize)> = None;
        for &i in &grid[(((cy - lo) / cell) as usize).min(n - 1)] {
            let l = &lines[i];
            let reach = reach * l.h;
            if cx < l.x0 - reach || cx > l.x1 + reach {
                continue;
            }
            if y0 < l.y0 - pad(l) || y1 > l.y1 + pad(l) {
                continue;
            }
            let dy = (cy - l.cy).abs();
            if best.is_none_or(|(d, _)| dy < d) {
                best = Some((dy, i));
            }
        }
        if let Some((_, i)) = best {
            joined.push((si, i));
        }
    }
    joined
}
