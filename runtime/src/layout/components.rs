//! Connected components of the ink mask, and which of them are text.
//!
//! Characters are the unit of grouping, so the mask is cut into 8-connected components:
//! horizontal runs of ink per row, joined with a union-find where runs of consecutive rows
//! touch (diagonals included). That is O(pixels) to find the runs and about O(runs) after.
//!
//! Not every component is a character. Drawn rules are removed first as long horizontal runs
//! (so text touching a rule is kept); then, relative to the page's typical text height:
//! specks (a few pixels) are noise; components taller than several text heights are
//! pictures or frames; long thin ones are leftover rules and vertical lines. What remains is
//! split into core components (letters, digits: they form lines) and small ones (dots,
//! accents, punctuation, dashes: attached to the line they sit in later, dropped when they
//! sit in none, which is also where noise that survived the speck filter goes).

use super::LayoutOptions;

/// Half-open pixel box of a component and its ink pixel count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Comp {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
    pub area: u32,
}

impl Comp {
    pub fn w(&self) -> u32 {
        self.x1 - self.x0
    }
    pub fn h(&self) -> u32 {
        self.y1 - self.y0
    }
    pub fn cx(&self) -> f32 {
        (self.x0 + self.x1) as f32 * 0.5
    }
    pub fn cy(&self) -> f32 {
        (self.y0 + self.y1) as f32 * 0.5
    }
}

/// The components of a page, sorted out.
#[derive(Debug, Clone)]
pub(crate) struct Components {
    /// Letters and digits: what lines are made of.
    pub core: Vec<Comp>,
    /// Dots, accents and punctuation: attached to lines, never lines on their own.
    pub small: Vec<Comp>,
    /// The page's typical character height in pixels (at least 1).
    pub text_height: f32,
}

/// The text height assumed on a page with no character-like component.
const FALLBACK_HEIGHT: f32 = 8.0;

/// The smallest typical character height believed: below it a page's "characters" are
/// noise (text 10 px high has an x-height of about 5-6 px).
const MIN_TEXT_HEIGHT: f32 = 6.0;

/// Components no larger than this in both directions are small (dots) whatever the text
/// height: at the smallest text sizes letters are taller.
const MAX_DOT: f32 = 4.5;

/// A horizontal run of ink `[x0, x1)` on row `y`.
#[derive(Debug, Clone, Copy)]
struct Run {
    y: u32,
    x0: u32,
    x1: u32,
}

/// Labels `ink` (`w x h`, 1 = ink) and sorts the components out.
pub(crate) fn find(ink: &[u8], w: usize, h: usize, opts: &LayoutOptions) -> Components {
    let (runs, row_start) = runs(ink, w, h);
    let mut removed = vec![false; runs.len()];
    let first = label(&runs, &row_start, &removed);
    let th = text_height(&first, opts.min_speck_area, w as u32, h as u32);
    let long = (opts.rule_run_length * th).max(24.0) as u32;
    let thick = (0.5 * th).max(4.0) as u32;
    let comps = if mark_rules(&runs, &row_start, long, thick, &mut removed) {
        label(&runs, &row_start, &removed)
    } else {
        first
    };
    let th = text_height(&comps, opts.min_speck_area, w as u32, h as u32);
    classify(comps, th, w as u32, h as u32, opts)
}

/// Marks in `removed` the runs at least `long` pixels long that belong to a stack of such
/// runs at most `thick` rows high: drawn rules, not filled areas. Whether any was marked.
fn mark_rules(
    runs: &[Run],
    row_start: &[usize],
    long: u32,
    thick: u32,
    removed: &mut [bool],
) -> bool {
    let rows = row_start.len().saturating_sub(1);
    let long_of = |y: usize| {
        (row_start[y]..row_start[y + 1]).filter(move |&i| runs[i].x1 - runs[i].x0 >= long)
    };
    let overlaps = |a: &Run, b: &Run| a.x0 < b.x1 && b.x0 < a.x1;
    // Rows of overlapping long runs above (`up`) and below (`down`) each long run, itself
    // included; only long runs are visited, and rules are few.
    let mut up = vec![0u32; runs.len()];
    let mut down = vec![0u32; runs.len()];
    let mut any = false;
    for y in 0..rows {
        for i in long_of(y) {
            any = true;
            let above = if y > 0 {
                long_of(y - 1)
                    .filter(|&j| overlaps(&runs[i], &runs[j]))
                    .map(|j| up[j])
                    .max()
            } else {
                None
            };
            up[i] = 1 + above.unwrap_or(0);
        }
    }
    if !any {
        return false;
    }
    let mut marked = false;
    for y in (0..rows).rev() {
        for i in long_of(y) {
            let below = if y + 1 < rows {
                long_of(y + 1)
                    .filter(|&j| overlaps(&runs[i], &runs[j]))
                    .map(|j| down[j])
                    .max()
            } else {
                None
            };
            down[i] = 1 + below.unwrap_or(0);
            if up[i] + down[i] - 1 <= thick {
                removed[i] = true;
                marked = true;
            }
        }
    }
    marked
}

/// All runs, row by row; `row_start[y]..row_start[y + 1]` are row `y`'s.
fn runs(ink: &[u8], w: usize, h: usize) -> (Vec<Run>, Vec<usize>) {
    let mut runs = Vec::new();
    let mut row_start = Vec::with_capacity(h + 1);
    for y in 0..h {
        row_start.push(runs.len());
        let row = &ink[y * w..(y + 1) * w];
        let mut x = 0;
        while x < w {
            if row[x] == 0 {
                match row[x..].iter().position(|&v| v != 0) {
                    Some(p) => x += p,
                    None => break,
                }
            }
            let start = x;
            while x < w && row[x] != 0 {
                x += 1;
            }
            runs.push(Run {
                y: y as u32,
                x0: start as u32,
                x1: x as u32,
            });
        }
    }
    row_start.push(runs.len());
    (runs, row_start)
}

fn find_root(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let p = parent[i as usize];
        parent[i as usize] = parent[p as usize];
        i = p;
    }
    i
}

/// 8-connected components of the runs not marked in `removed`.
fn label(runs: &[Run], row_start: &[usize], removed: &[bool]) -> Vec<Comp> {
    let mut parent: Vec<u32> = (0..runs.len() as u32).collect();
    for y in 1..row_start.len().saturating_sub(1) {
        let prev = &runs[row_start[y - 1]..row_start[y]];
        let mut j = 0;
        for (i, cur) in runs[row_start[y]..row_start[y + 1]].iter().enumerate() {
            if removed[row_start[y] + i] {
                continue;
            }
            // Runs of the previous row ending before this one starts (diagonal included)
            // cannot touch this run or any later one.
            while j < prev.len() && prev[j].x1 < cur.x0 {
                j += 1;
            }
            let mut k = j;
            while k < prev.len() && prev[k].x0 <= cur.x1 {
                if !removed[row_start[y - 1] + k] {
                    let a = find_root(&mut parent, (row_start[y] + i) as u32);
                    let b = find_root(&mut parent, (row_start[y - 1] + k) as u32);
                    if a != b {
                        parent[a.max(b) as usize] = a.min(b);
                    }
                }
                k += 1;
            }
        }
    }
    let mut slot = vec![u32::MAX; runs.len()];
    let mut comps: Vec<Comp> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        if removed[i] {
            continue;
        }
        let root = find_root(&mut parent, i as u32) as usize;
        if slot[root] == u32::MAX {
            slot[root] = comps.len() as u32;
            comps.push(Comp {
                x0: r.x0,
                y0: r.y,
                x1: r.x1,
                y1: r.y + 1,
                area: 0,
            });
        }
        let c = &mut comps[slot[root] as usize];
        c.x0 = c.x0.min(r.x0);
        c.x1 = c.x1.max(r.x1);
        c.y1 = c.y1.max(r.y + 1);
        c.area += r.x1 - r.x0;
    }
    comps
}

/// Width-weighted median height of the components that could be characters (at least 4
/// pixels tall, not specks, not long thin strokes, not page-sized blobs): many characters
/// outweigh a few pictures, and noise specks are small and narrow. [`FALLBACK_HEIGHT`]
/// when there are none, and never below [`MIN_TEXT_HEIGHT`].
fn text_height(comps: &[Comp], min_area: u32, pw: u32, ph: u32) -> f32 {
    let mut hs: Vec<(u32, u32)> = comps
        .iter()
        .filter(|c| {
            c.area >= min_area.max(4)
                && c.h() >= 4
                && c.w() <= 6 * c.h()
                && !(2 * c.w() > pw && 2 * c.h() > ph)
        })
        .map(|c| (c.h(), c.w()))
        .collect();
    if hs.is_empty() {
        return FALLBACK_HEIGHT;
    }
    hs.sort_unstable();
    let total: u64 = hs.iter().map(|&(_, w)| w as u64).sum();
    let mut acc = 0u64;
    for &(h, w) in &hs {
        acc += w as u64;
        if 2 * acc >= total {
            return (h as f32).max(MIN_TEXT_HEIGHT);
        }
    }
    FALLBACK_HEIGHT
}

fn classify(comps: Vec<Comp>, th: f32, pw: u32, ph: u32, opts: &LayoutOptions) -> Components {
    let thin = (0.4 * th).max(3.0);
    let mut out = Components {
        core: Vec::new(),
        small: Vec::new(),
        text_height: th.max(1.0),
    };
    for c in comps {
        let (w, h) = (c.w() as f32, c.h() as f32);
        let speck = c.area < opts.min_speck_area;
        let huge = h > opts.max_component_height * th || (2 * c.w() > pw && 2 * c.h() > ph);
        let hrule = h <= thin && w >= (4.0 * th).max(10.0 * h);
        let vrule = w <= thin && h >= 3.0 * th;
        if speck || huge || hrule || vrule {
            continue;
        }
        // Flat marks (hyphens, dashes, bits of a broken rule) never make a line either.
        let flat = h <= (0.25 * th).max(2.0);
        if flat || w.max(h) < (opts.small_component * th).max(MAX_DOT) {
            out.small.push(c);
        } else {
            out.core.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(w: usize, h: usize, rects: &[(usize, usize, usize, usize)]) -> Vec<u8> {
        let mut m = vec![0u8; w * h];
        for &(x0, y0, x1, y1) in rects {
            for y in y0..y1 {
                m[y * w + x0..y * w + x1].fill(1);
            }
        }
        m
    }

    #[test]
    fn eight_connected_labelling() {
        // Two squares touching at a corner are one component; a third apart is another.
        let (w, h) = (30, 20);
        let m = mask(w, h, &[(0, 0, 4, 4), (4, 4, 8, 8), (20, 2, 25, 10)]);
        let (runs, rows) = runs(&m, w, h);
        let mut c = label(&runs, &rows, &vec![false; runs.len()]);
        c.sort_by_key(|c| c.x0);
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].x0, c[0].y0, c[0].x1, c[0].y1, c[0].area),
            (0, 0, 8, 8, 32)
        );
        assert_eq!(
            (c[1].x0, c[1].y0, c[1].x1, c[1].y1, c[1].area),
            (20, 2, 25, 10, 40)
        );
    }

    #[test]
    fn u_shape_merges_late() {
        // The two arms of a U meet only at the bottom row.
        let (w, h) = (12, 10);
        let m = mask(w, h, &[(0, 0, 2, 10), (8, 0, 10, 10), (0, 8, 10, 10)]);
        let (runs, rows) = runs(&m, w, h);
        assert_eq!(label(&runs, &rows, &vec![false; runs.len()]).len(), 1);
    }

    #[test]
    fn rule_touching_text_is_cut_off() {
        // "Letters" standing on a long rule: the rule's runs are left out, letters survive.
        let (w, h) = (300, 40);
        let mut rects = vec![(10, 30, 290, 32)];
        for i in 0..10 {
            rects.push((12 + 25 * i, 14, 24 + 25 * i, 31));
        }
        let m = mask(w, h, &rects);
        let c = find(&m, w, h, &LayoutOptions::default());
        assert_eq!(c.core.len(), 10, "{:?}", c.core);
        assert!(c.core.iter().all(|c| c.w() == 12 && c.h() >= 16));
    }

    #[test]
    fn filled_area_is_not_a_rule() {
        // A thick dark bar keeps its long runs: it stays one (huge, dropped) blob.
        let (w, h) = (300, 200);
        let mut rects = vec![(10, 20, 290, 180)];
        rects.extend((0..10).map(|i| (12 + 25 * i, 185, 24 + 25 * i, 199)));
        let m = mask(w, h, &rects);
        let c = find(&m, w, h, &LayoutOptions::default());
        assert_eq!(c.core.len(), 10);
    }

    #[test]
    fn specks_small_and_huge() {
        let (w, h) = (400, 400);
        let mut rects: Vec<(usize, usize, usize, usize)> =
            (0..8).map(|i| (10 + 20 * i, 10, 22 + 20 * i, 26)).collect();
        rects.push((200, 10, 201, 11)); // a 1-pixel speck
        rects.push((210, 20, 213, 23)); // a dot
        rects.push((10, 100, 60, 390)); // a picture, far taller than text
        rects.push((300, 100, 302, 300)); // a vertical line
        let c = find(&mask(w, h, &rects), w, h, &LayoutOptions::default());
        assert_eq!(c.text_height, 16.0);
        assert_eq!(c.core.len(), 8);
        assert_eq!(c.small.len(), 1);
    }
}
