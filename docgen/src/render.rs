//! Laying text out and drawing it with real fonts.

use ab_glyph::{point, Font, FontVec, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

use ove_core::layout_metrics::LineBox;

use crate::fonts::LoadedFont;

/// Width in pixels of `text` set in `font` at `size` pixels (advances and kerning).
pub fn text_width(font: &FontVec, size: f32, text: &str) -> f32 {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut w = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            w += scaled.kern(p, id);
        }
        w += scaled.h_advance(id);
        prev = Some(id);
    }
    w
}

/// Ascent (positive) and descent (negative) in pixels.
pub fn metrics(font: &FontVec, size: f32) -> (f32, f32) {
    let scaled = font.as_scaled(PxScale::from(size));
    (scaled.ascent(), scaled.descent())
}

/// Whether the font has a glyph for every character of `text`.
pub fn covers(font: &FontVec, text: &str) -> bool {
    text.chars()
        .all(|c| c.is_whitespace() || font.glyph_id(c).0 != 0)
}

/// Draws `text` with its baseline at `baseline`, starting at `x`, blending `ink` over the
/// image by glyph coverage.
pub fn draw_text(
    img: &mut RgbImage,
    font: &FontVec,
    size: f32,
    x: f32,
    baseline: f32,
    ink: [u8; 3],
    text: &str,
) {
    let scale = PxScale::from(size);
    let scaled = font.as_scaled(scale);
    let (w, h) = (img.width() as i32, img.height() as i32);
    let mut caret = x;
    let mut prev = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(scale, point(caret, baseline));
        caret += scaled.h_advance(id);
        prev = Some(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let b = outline.px_bounds();
        outline.draw(|gx, gy, cov| {
            let px = b.min.x as i32 + gx as i32;
            let py = b.min.y as i32 + gy as i32;
            if px < 0 || py < 0 || px >= w || py >= h {
                return;
            }
            let cov = cov.clamp(0.0, 1.0);
            let p = img.get_pixel_mut(px as u32, py as u32);
            for (c, &i) in p.0.iter_mut().zip(&ink) {
                let v = *c as f32 * (1.0 - cov) + i as f32 * cov;
                *c = v.round().clamp(0.0, 255.0) as u8;
            }
        });
    }
}

/// Fills a rectangle (a rule or a box edge).
pub fn fill_rect(img: &mut RgbImage, x0: f32, y0: f32, x1: f32, y1: f32, ink: [u8; 3]) {
    let xa = x0.round().max(0.0) as u32;
    let ya = y0.round().max(0.0) as u32;
    let xb = (x1.round().max(0.0) as u32).min(img.width());
    let yb = (y1.round().max(0.0) as u32).min(img.height());
    for y in ya..yb {
        for x in xa..xb {
            img.put_pixel(x, y, Rgb(ink));
        }
    }
}

/// A run of text on a line, at a horizontal position.
#[derive(Debug, Clone)]
pub struct Segment {
    pub text: String,
    /// Index into the document's fonts.
    pub font: usize,
    pub x: f32,
}

/// What a document is made of, top to bottom.
#[derive(Debug, Clone)]
pub enum Item {
    /// One line of text; `size` in pixels.
    Line { segments: Vec<Segment>, size: f32 },
    /// A horizontal rule from x0 to x1 (not text: no ground truth).
    Rule { x0: f32, x1: f32, thickness: f32 },
    /// Vertical space in pixels.
    Space(f32),
}

/// A laid-out document before rendering.
#[derive(Debug, Clone)]
pub struct Layout {
    pub width: u32,
    pub margin: f32,
    pub paper: [u8; 3],
    pub ink: [u8; 3],
    pub items: Vec<Item>,
}

impl Layout {
    /// The text of the document: lines top to bottom, segments left to right joined by a
    /// single space, lines joined by newlines.
    pub fn text(&self) -> String {
        self.line_texts().join("\n")
    }

    /// The text of each line, top to bottom: segments left to right joined by a space.
    pub fn line_texts(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for item in &self.items {
            if let Item::Line { segments, .. } = item {
                let mut segs: Vec<&Segment> = segments.iter().collect();
                segs.sort_by(|a, b| a.x.total_cmp(&b.x));
                let line: Vec<&str> = segs.iter().map(|s| s.text.as_str()).collect();
                lines.push(line.join(" "));
            }
        }
        lines
    }

    /// Number of text lines.
    pub fn line_count(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i, Item::Line { .. }))
            .count()
    }

    /// Draws the document on a fresh page sized to fit it.
    pub fn render(&self, fonts: &[LoadedFont]) -> RgbImage {
        // First pass: the height.
        let mut y = self.margin;
        for item in &self.items {
            y += item_height(item, fonts);
        }
        let height = (y + self.margin).ceil().max(1.0) as u32;
        let mut img = RgbImage::from_pixel(self.width, height, Rgb(self.paper));
        let mut y = self.margin;
        for item in &self.items {
            match item {
                Item::Line { segments, size } => {
                    let ascent = line_ascent(segments, *size, fonts);
                    for s in segments {
                        draw_text(
                            &mut img,
                            &fonts[s.font].font,
                            *size,
                            s.x,
                            y + ascent,
                            self.ink,
                            &s.text,
                        );
                    }
                }
                Item::Rule { x0, x1, thickness } => {
                    let mid = y + item_height(item, fonts) / 2.0;
                    fill_rect(
                        &mut img,
                        *x0,
                        mid - thickness / 2.0,
                        *x1,
                        mid + thickness / 2.0,
                        self.ink,
                    );
                }
                Item::Space(_) => {}
            }
            y += item_height(item, fonts);
        }
        img
    }
}

impl Layout {
    /// The ink box of every text line of `img` (this layout's clean [`Layout::render`]),
    /// top to bottom as [`Layout::line_texts`] gives the lines: the pixels that differ from
    /// the paper within the line's band; `None` for a line without ink.
    pub fn line_boxes(&self, img: &RgbImage, fonts: &[LoadedFont]) -> Vec<Option<LineBox>> {
        let mut boxes = Vec::new();
        let mut y = self.margin;
        for item in &self.items {
            let h = item_height(item, fonts);
            if matches!(item, Item::Line { .. }) {
                let (top, bottom) = (
                    y.floor().max(0.0) as u32,
                    ((y + h).ceil() as u32).min(img.height()),
                );
                boxes.push(ink_box(img, self.paper, top, bottom));
            }
            y += h;
        }
        boxes
    }
}

/// The box of the pixels of rows `top..bottom` that are not `paper`.
fn ink_box(img: &RgbImage, paper: [u8; 3], top: u32, bottom: u32) -> Option<LineBox> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for y in top..bottom {
        for x in 0..img.width() {
            if img.get_pixel(x, y).0 != paper {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    (x1 > x0).then_some(LineBox { x0, y0, x1, y1 })
}

fn line_ascent(segments: &[Segment], size: f32, fonts: &[LoadedFont]) -> f32 {
    segments
        .iter()
        .map(|s| metrics(&fonts[s.font].font, size).0)
        .fold(0.0, f32::max)
}

fn item_height(item: &Item, fonts: &[LoadedFont]) -> f32 {
    match item {
        Item::Line { segments, size } => {
            let (mut a, mut d) = (0.0f32, 0.0f32);
            for s in segments {
                let (sa, sd) = metrics(&fonts[s.font].font, *size);
                a = a.max(sa);
                d = d.min(sd);
            }
            // A little leading between lines.
            (a - d) * 1.15
        }
        Item::Rule { thickness, .. } => thickness + 8.0,
        Item::Space(h) => *h,
    }
}
