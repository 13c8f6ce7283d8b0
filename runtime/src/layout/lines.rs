//! Characters into text lines, in the deskewed frame.
//!
//! Left-to-right sweeps that extend the group whose running centre line an element sits on
//! ([`fits`]):
//! 1. core components into word segments, across gaps up to `word_gap` text heights;
//! 2. segments into rows, across any gap for segments that look like text (a receipt's item
//!    name and its right-aligned price are one line), across a word gap for anything else
//!    (specks must not stretch a line across the page); rows of text on one centre line are
//!    then joined, and rows that interleave merged;
//! 3. rows cut where a column gutter runs between two segments ([`super::gutter`]).
//!
//! A line needs one segment that looks like text; lower than `min_line_height` it is noise.
//! Small marks, and core components no line took, join their lines last ([`super::marks`]).

use super::components::{Comp, Components};
use super::gutter;
use super::marks;
use super::skew::Frame;
use super::LayoutOptions;

/// A component in the deskewed frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item {
    pub x0: f32,
    pub x1: f32,
    pub y0: f32,
    pub y1: f32,
    pub cy: f32,
    pub h: f32,
    /// Components in it (1 for a component), the tallest one's height and the widest one's
    /// width.
    pub n: f32,
    pub max_h: f32,
    pub max_w: f32,
}

fn item(c: &Comp, frame: &Frame) -> Item {
    let (cx, cy) = frame.level(c.cx(), c.cy());
    let (w, h) = frame.unrotated_size(c);
    Item {
        x0: cx - w * 0.5,
        x1: cx + w * 0.5,
        y0: cy - h * 0.5,
        y1: cy + h * 0.5,
        cy,
        h,
        n: 1.0,
        max_h: h,
        max_w: w,
    }
}

/// A group of elements (items, or segments) with its extent and running centre line.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub members: Vec<usize>,
    pub x0: f32,
    pub x1: f32,
    pub y0: f32,
    pub y1: f32,
    sum_cy: f32,
    sum_h: f32,
    max_h: f32,
    max_w: f32,
    n: f32,
    /// Centre line of the element added last (the rightmost, in a sweep).
    tail_cy: f32,
}

impl Group {
    fn of(i: usize, it: &Item) -> Self {
        Group {
            members: vec![i],
            x0: it.x0,
            x1: it.x1,
            y0: it.y0,
            y1: it.y1,
            sum_cy: it.cy * it.n,
            sum_h: it.h * it.n,
            max_h: it.max_h,
            max_w: it.max_w,
            n: it.n,
            tail_cy: it.cy,
        }
    }

    fn add(&mut self, i: usize, it: &Item) {
        let mut g = Group::of(i, it);
        self.absorb(&mut g);
    }

    /// Takes `other`'s members and extent (as if its elements had been added one by one).
    pub fn absorb(&mut self, other: &mut Group) {
        self.members.append(&mut other.members);
        self.x0 = self.x0.min(other.x0);
        self.x1 = self.x1.max(other.x1);
        self.y0 = self.y0.min(other.y0);
        self.y1 = self.y1.max(other.y1);
        self.sum_cy += other.sum_cy;
        self.sum_h += other.sum_h;
        self.max_h = self.max_h.max(other.max_h);
        self.max_w = self.max_w.max(other.max_w);
        self.n += other.n;
        self.tail_cy = other.tail_cy;
    }

    /// Mean centre line of the group's components.
    pub fn cy(&self) -> f32 {
        self.sum_cy / self.n
    }

    /// Mean height of the group's components.
    pub fn h(&self) -> f32 {
        self.sum_h / self.n
    }

    /// The group as one element of a coarser grouping (its mean centre and height).
    fn as_item(&self) -> Item {
        Item {
            x0: self.x0,
            x1: self.x1,
            y0: self.y0,
            y1: self.y1,
            cy: self.cy(),
            h: self.h(),
            n: self.n,
            max_h: self.max_h,
            max_w: self.max_w,
        }
    }
}

/// Slope (tan 1.5 degrees) by which a centre line may drift over a horizontal gap: what is
/// left of skew after deskewing, and what a page photographed at a slant (a different angle
/// at its top and its bottom) adds.
const DRIFT: f32 = 0.026;

/// How far (as a share of the tolerance, 0..=1) `it` sits from the centre line `cy` of `g`,
/// `dx` to its right, or `None` when it is off the line. The tolerance is half the larger
/// height, floored at `floor` (so a line begun by a dash still takes letters), but an
/// element more than twice as tall as the line (spanning two lines) must sit within half
/// the line's height; across a gap it grows by [`DRIFT`], up to half the line height more.
fn fits(g: &Group, cy: f32, dx: f32, it: &Item, floor: f32) -> Option<f32> {
    let gh = g.h().max(floor);
    let tol = if it.h > 2.0 * gh {
        0.5 * gh
    } else {
        0.5 * gh.max(it.h)
    };
    let tol = tol + (dx.max(0.0) * DRIFT).min(0.5 * gh);
    let d = (it.cy - cy).abs() / tol;
    (d <= 1.0).then_some(d)
}

/// Left-to-right grouping of `items` (sorted by `x0` in `order`): each joins the group it
/// fits best whose right end is at most `gap(group, item)` line heights to its left (`None`:
/// any gap). With `reach` (the largest gap in pixels any pair may have), groups out of
/// reach are set aside as the sweep goes. With `local`, an item is compared with the centre
/// line of the group's last element rather than the group's mean (for rows of segments,
/// whose centres are already means).
fn sweep(
    items: &[Item],
    order: &[usize],
    floor: f32,
    local: bool,
    reach: Option<f32>,
    gap: &dyn Fn(&Group, &Item) -> Option<f32>,
) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut active: Vec<usize> = Vec::new();
    for &i in order {
        let it = &items[i];
        if let Some(r) = reach {
            active.retain(|&a| it.x0 - groups[a].x1 <= r);
        }
        let mut best: Option<(f32, usize)> = None;
        for &a in &active {
            let grp = &groups[a];
            let lh = grp.h().max(it.h).max(floor);
            let dx = it.x0 - grp.x1;
            if gap(grp, it).is_some_and(|g| dx > g * lh) {
                continue;
            }
            let cy = if local { grp.tail_cy } else { grp.cy() };
            if let Some(d) = fits(grp, cy, dx, it, floor) {
                // Prefer the line it sits on best; among equals, the nearest.
                let score = d + dx.max(0.0) / (lh * 1000.0);
                if best.is_none_or(|(s, _)| score < s) {
                    best = Some((score, a));
                }
            }
        }
        match best {
            Some((_, a)) => groups[a].add(i, it),
            None => {
                active.push(groups.len());
                groups.push(Group::of(i, it));
            }
        }
    }
    groups
}

/// Merges rows (sorted by centre line) that sit on one centre line and overlap
/// horizontally: the greedy sweep can start a second row among a first one's segments
/// (one that a short segment, held to a word gap, could not join) and then share the
/// remaining segments between the two.
fn merge_interleaved(rows: &mut Vec<Group>, floor: f32) {
    let mut i = 0;
    while i < rows.len() {
        let mut j = i + 1;
        while j < rows.len() {
            let (a, b) = (&rows[i], &rows[j]);
            let reach = 0.5 * a.h().max(b.h()).max(floor);
            if b.cy() - a.cy() > reach {
                break;
            }
            let overlap = a.x1.min(b.x1) - a.x0.max(b.x0);
            if overlap > 0.0 && fits(a, a.cy(), 0.0, &b.as_item(), floor).is_some() {
                let mut b = rows.remove(j);
                rows[i].absorb(&mut b);
            } else {
                j += 1;
            }
        }
        i += 1;
    }
}

/// A text line: its core and small components (indices into [`Components`]) and its
/// extent, centre line and mean height in the deskewed frame.
#[derive(Debug, Clone)]
pub(crate) struct TextLine {
    pub core: Vec<usize>,
    pub small: Vec<usize>,
    pub x0: f32,
    pub x1: f32,
    pub y0: f32,
    pub y1: f32,
    pub cy: f32,
    pub h: f32,
    /// Height of the line's tallest core component.
    pub max_h: f32,
}

/// The text lines of the page, in no particular order.
pub(crate) fn build(comps: &Components, frame: &Frame, opts: &LayoutOptions) -> Vec<TextLine> {
    let th = comps.text_height;
    let floor = 0.6 * th;
    let items: Vec<Item> = comps.core.iter().map(|c| item(c, frame)).collect();
    let by_x = |v: &[Item]| {
        let mut o: Vec<usize> = (0..v.len()).collect();
        o.sort_by(|&a, &b| v[a].x0.total_cmp(&v[b].x0));
        o
    };
    let max_h = items.iter().map(|it| it.h).fold(floor, f32::max);
    let reach = Some(opts.word_gap * max_h);
    let word_gap = |_: &Group, _: &Item| Some(opts.word_gap);
    let mut segs = sweep(&items, &by_x(&items), floor, false, reach, &word_gap);
    let seg_items: Vec<Item> = segs.iter().map(Group::as_item).collect();
    // A segment that looks like text: a word (three components or more, together wider
    // than a character), a word melted by blur into one wide blob, or a character tall
    // enough to stand alone.
    let lone_h = (opts.min_lone_height as f32).max(0.8 * th);
    let wordlike = |it: &Item| {
        let word = it.n >= 3.0 && it.x1 - it.x0 >= 1.5 * th;
        // Melted letters make a blob wider than tall; a clot of specks is about square.
        let melted = it.max_w >= (1.5 * th).max(1.2 * it.max_h) && it.max_h >= 0.6 * th;
        word || melted || it.max_h >= lone_h
    };
    // Rows join across any gap only what looks like text, or a character as tall as a row
    // of text it joins (a lone digit in a table); anything else (a speck, a stray mark)
    // only across a word gap: across the page it would stretch a line to a speck, and
    // specks chained across a blank page would make lines of their own.
    let row_gap = |row: &Group, it: &Item| {
        let tall = it.max_h >= 0.9 * row.h().max(th);
        let joins = wordlike(it) || (tall && wordlike(&row.as_item()));
        (!joins).then_some(opts.word_gap)
    };
    let rows = sweep(&seg_items, &by_x(&seg_items), floor, true, None, &row_gap);
    // A short segment that could not join (digits in a table) may have started a row of
    // its own, which then took the rest of the line: rows of text on one line join.
    let row_items: Vec<Item> = rows.iter().map(Group::as_item).collect();
    let both_text = |row: &Group, it: &Item| {
        (!(wordlike(it) && wordlike(&row.as_item()))).then_some(opts.word_gap)
    };
    let joined = sweep(&row_items, &by_x(&row_items), floor, true, None, &both_text);
    let mut rows: Vec<Group> = joined
        .into_iter()
        .map(|j| {
            let mut parts = j.members.iter().map(|&r| rows[r].clone());
            let mut row = parts.next().expect("a group has a member");
            for mut p in parts {
                row.absorb(&mut p);
            }
            row
        })
        .collect();
    rows.sort_by(|a, b| a.cy().total_cmp(&b.cy()));
    merge_interleaved(&mut rows, floor);
    for r in &mut rows {
        r.members
            .sort_by(|&a, &b| seg_items[a].x0.total_cmp(&seg_items[b].x0));
    }
    let mut pieces = gutter::split_rows(&rows, &seg_items, th, opts);
    // A line needs a segment that looks like text; rows of scattered specks have none.
    pieces.retain(|p| p.iter().any(|&s| wordlike(&seg_items[s])));
    let mut lines: Vec<TextLine> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let mut g = segs[piece[0]].clone();
        for &s in &piece[1..] {
            g.absorb(&mut segs[s]);
        }
        lines.push(TextLine {
            core: std::mem::take(&mut g.members),
            small: Vec::new(),
            x0: g.x0,
            x1: g.x1,
            y0: g.y0,
            y1: g.y1,
            cy: g.cy(),
            h: g.h(),
            max_h: g.max_h,
        });
    }
    marks::merge_small_lines(&mut lines, opts);
    // Noise: a line lower than any text.
    lines.retain(|l| l.max_h >= opts.min_line_height as f32);
    // Marks reach a word gap beyond a line's ends: a monospaced space and dash end 1.3
    // heights past the last letter.
    let reach = opts.word_gap;
    for (m, l) in marks::attach(&lines, comps.small.iter().enumerate(), frame, th, reach) {
        lines[l].small.push(m);
    }
    // Core components in no line (a comma hanging below the centre line, too low to join
    // its word's segment, and too large to be a small mark) are offered as marks too.
    let mut used = vec![false; comps.core.len()];
    for &c in lines.iter().flat_map(|l| &l.core) {
        used[c] = true;
    }
    let stray = comps.core.iter().enumerate().filter(|&(c, _)| !used[c]);
    for (c, l) in marks::attach(&lines, stray, frame, th, reach) {
        lines[l].core.push(c);
    }
    lines
}
