//! Tests of the whole layout. [`pages`]: pages drawn here, with filled rectangles for words
//! (no fonts needed), so the true line boxes are known exactly; [`rendered`]: the rendered
//! example pages of the repository, whose line counts are known from their transcripts, and
//! a timing run. This module holds the drawing helpers both use.

mod pages;
mod rendered;

use super::*;
use image::{Rgb, RgbImage};
use ove_core::layout_metrics::{iou, match_lines};

const PAPER: u8 = 245;
const INK: u8 = 30;
const WORD_H: u32 = 16;

/// A small deterministic generator (64-bit LCG), enough for word widths and noise.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.next() % (hi - lo)
    }
}

type Rect = (u32, u32, u32, u32);

fn blank(w: u32, h: u32) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb([PAPER; 3]))
}

/// The words of one line from `x0` to at most `x1`, top at `y`; word gaps 8-14 px.
fn line_words(rng: &mut Lcg, x0: u32, x1: u32, y: u32) -> Vec<Rect> {
    let mut out = Vec::new();
    let mut x = x0;
    loop {
        let w = rng.range(20, 90);
        if x + w > x1 {
            break;
        }
        out.push((x, y, x + w, y + WORD_H));
        x += w + rng.range(8, 15);
    }
    out
}

/// `n` lines of words between `x0` and `x1`, first top at `y`, `pitch` apart; the last
/// line of the paragraph is shorter.
fn paragraph(rng: &mut Lcg, x0: u32, x1: u32, y: u32, n: u32, pitch: u32) -> Vec<Vec<Rect>> {
    (0..n)
        .map(|i| {
            let end = if i + 1 == n { x0 + (x1 - x0) / 2 } else { x1 };
            line_words(rng, x0, end, y + i * pitch)
        })
        .collect()
}

fn bbox(rects: &[Rect]) -> LineBox {
    let mut b = LineBox {
        x0: u32::MAX,
        y0: u32::MAX,
        x1: 0,
        y1: 0,
    };
    for &(x0, y0, x1, y1) in rects {
        b.x0 = b.x0.min(x0);
        b.y0 = b.y0.min(y0);
        b.x1 = b.x1.max(x1);
        b.y1 = b.y1.max(y1);
    }
    b
}

fn fill(img: &mut RgbImage, r: Rect, v: u8) {
    for y in r.1..r.3.min(img.height()) {
        for x in r.0..r.2.min(img.width()) {
            img.put_pixel(x, y, Rgb([v; 3]));
        }
    }
}

fn draw_words(img: &mut RgbImage, words: &[Rect]) {
    for r in words {
        fill(img, *r, INK);
    }
}

fn draw_lines(img: &mut RgbImage, lines: &[Vec<Rect>]) {
    for r in lines.iter().flatten() {
        fill(img, *r, INK);
    }
}

fn boxes(layout: &PageLayout) -> Vec<LineBox> {
    layout.lines.iter().map(|l| l.bbox).collect()
}

/// Every truth line found, in order, with IoU >= `min_iou`, and nothing else.
fn assert_lines(layout: &PageLayout, truth: &[LineBox], min_iou: f64) {
    let found = boxes(layout);
    let s = match_lines(&found, truth, min_iou);
    assert!(
        s.matched == truth.len() && s.found == truth.len() && s.reading_order == 1.0,
        "{s:?}\nfound {found:?}\ntruth {truth:?}"
    );
}

/// `rects` rotated by `degrees` about `(cx, cy)`, drawn; returns each rotated rectangle's
/// bounding box per line.
fn draw_rotated(img: &mut RgbImage, lines: &[Vec<Rect>], degrees: f32) -> Vec<LineBox> {
    let (cx, cy) = (img.width() as f32 / 2.0, img.height() as f32 / 2.0);
    let (s, c) = degrees.to_radians().sin_cos();
    let rot = |x: f32, y: f32| {
        (
            cx + (x - cx) * c - (y - cy) * s,
            cy + (x - cx) * s + (y - cy) * c,
        )
    };
    let mut out = Vec::new();
    for line in lines {
        let mut lb = LineBox {
            x0: u32::MAX,
            y0: u32::MAX,
            x1: 0,
            y1: 0,
        };
        for &(x0, y0, x1, y1) in line {
            let corners =
                [(x0, y0), (x1, y0), (x0, y1), (x1, y1)].map(|(x, y)| rot(x as f32, y as f32));
            let bx0 = corners.iter().map(|p| p.0).fold(f32::MAX, f32::min).floor() as u32;
            let bx1 = corners.iter().map(|p| p.0).fold(f32::MIN, f32::max).ceil() as u32;
            let by0 = corners.iter().map(|p| p.1).fold(f32::MAX, f32::min).floor() as u32;
            let by1 = corners.iter().map(|p| p.1).fold(f32::MIN, f32::max).ceil() as u32;
            for y in by0..by1 {
                for x in bx0..bx1 {
                    // Back-rotate the pixel centre and test it against the rectangle.
                    let (px, py) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                    let (ux, uy) = (cx + px * c + py * s, cy - px * s + py * c);
                    if ux >= x0 as f32 && ux < x1 as f32 && uy >= y0 as f32 && uy < y1 as f32 {
                        img.put_pixel(x, y, Rgb([INK; 3]));
                    }
                }
            }
            lb = lb.union(&LineBox {
                x0: bx0,
                y0: by0,
                x1: bx1,
                y1: by1,
            });
        }
        out.push(lb);
    }
    out
}

/// Multiplies `img` by a left-to-right gradient (1 to `dim`) and a horizontal shadow band
/// over rows `band` (factor `shade`, with 12-pixel soft edges).
fn light_unevenly(img: &mut RgbImage, dim: f32, band: (u32, u32), shade: f32) {
    let w = img.width() as f32;
    for (x, y, p) in img.enumerate_pixels_mut() {
        let g = 1.0 - (1.0 - dim) * x as f32 / w;
        let (b0, b1) = (band.0 as f32, band.1 as f32);
        let yf = y as f32;
        let t = ((yf - b0) / 12.0)
            .clamp(0.0, 1.0)
            .min(((b1 - yf) / 12.0).clamp(0.0, 1.0));
        let f = g * (1.0 - (1.0 - shade) * t);
        for c in &mut p.0 {
            *c = (*c as f32 * f) as u8;
        }
    }
}

/// Adds `n` dark specks of 1-3 pixels and mild grey noise.
fn speckle(img: &mut RgbImage, rng: &mut Lcg, n: u32) {
    let (w, h) = img.dimensions();
    for p in img.pixels_mut() {
        let d = rng.range(0, 21) as i32 - 10;
        for c in &mut p.0 {
            *c = (*c as i32 + d).clamp(0, 255) as u8;
        }
    }
    for _ in 0..n {
        let (x, y, s) = (rng.range(0, w - 3), rng.range(0, h - 3), rng.range(1, 4));
        fill(img, (x, y, x + s, y + s), INK);
    }
}
