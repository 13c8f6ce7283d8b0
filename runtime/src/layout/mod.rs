//! Text lines of a page image, in reading order: the layout stage of document OCR.
//!
//! A vision-language model reads a page best one line (or one block) at a time, so the page
//! is cut into text lines first. This is pure image processing, no model:
//! 1. [`grey`]: luminance, then division by a background estimate (a grey-level closing),
//!    so that uneven lighting and shadows do not become ink;
//! 2. [`binarize`]: local (Sauvola) thresholding from running box sums;
//! 3. [`components`]: 8-connected components; specks, huge blobs and drawn rules dropped,
//!    dots and punctuation kept aside to be attached to lines later;
//! 4. [`skew`]: a small page rotation (up to a few degrees) from the projection profile of
//!    component centres; grouping works in the deskewed frame;
//! 5. [`lines`] and [`gutter`]: characters into word segments, segments into rows, rows cut
//!    at column gutters into lines (a receipt's item and its far-right price stay one line);
//!    [`marks`]: dots, accents and punctuation join their lines;
//! 6. [`order`]: lines into blocks, blocks into reading order (columns left to right, blocks
//!    of a column top to bottom, lines top to bottom).
//!
//! Boxes are reported in the original image's coordinates: each is the axis-aligned box of
//! its line's components. [`draw`] renders a layout over the page for a person to check.

mod binarize;
mod components;
mod draw;
mod grey;
mod gutter;
mod lines;
mod marks;
mod order;
mod skew;
#[cfg(test)]
mod tests;

pub use draw::draw;
pub use ove_core::layout_metrics::LineBox;

/// One text line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Line {
    /// Half-open box in the original image's coordinates.
    pub bbox: LineBox,
    /// Index of the line's block in reading order (0 first).
    pub block: usize,
}

/// The text lines of a page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PageLayout {
    /// Page width in pixels.
    pub width: u32,
    /// Page height in pixels.
    pub height: u32,
    /// Estimated skew: the angle of the text lines in degrees, positive when they descend
    /// to the right (image y grows downwards); 0 when not estimated.
    pub skew_degrees: f32,
    /// Lines in reading order.
    pub lines: Vec<Line>,
}

/// Tuning of [`find_lines`]. Lengths "in text heights" are multiples of the page's typical
/// character height (a width-weighted median of component heights, about the x-height to
/// cap height), so the defaults hold from small print to headings.
#[derive(Debug, Clone)]
pub struct LayoutOptions {
    /// Radius in pixels of the background estimate's closing: dark things narrower than
    /// about twice this (strokes, letters, lines of text) are not background, larger areas
    /// (shadows) are. 0 turns background normalisation off.
    pub background_radius: u32,
    /// Half-width of the Sauvola window in pixels (the window is `2r + 1` square; it should
    /// span a few text heights).
    pub sauvola_radius: u32,
    /// Sauvola's `k`: larger needs darker ink (0.2-0.34 is usual).
    pub sauvola_k: f32,
    /// Components with fewer ink pixels are noise and dropped outright.
    pub min_speck_area: u32,
    /// Components smaller than this many text heights (in both width and height) are dots,
    /// accents and punctuation: they join the line they sit in, or are dropped.
    pub small_component: f32,
    /// Components taller than this many text heights are pictures or frames, not text.
    pub max_component_height: f32,
    /// Horizontal ink runs at least this many text heights long, in a stack only a few pixels
    /// thick, are drawn rules; they are removed before the components are labelled, so text
    /// touching a rule survives.
    pub rule_run_length: f32,
    /// The largest skew searched for, in degrees (0: no estimate, the page is taken as level).
    pub max_skew_degrees: f32,
    /// The largest horizontal gap inside a word segment, in text heights; wider gaps are
    /// where a column gutter may run (a row still joins across them unless one does).
    pub word_gap: f32,
    /// A gutter must separate segments on at least this many rows.
    pub gutter_min_rows: usize,
    /// A gutter separates columns only if the text on each side of it is at least this many
    /// text heights wide (median over its rows): prose columns are, a receipt's prices and a
    /// form's labels are not (their rows stay whole lines).
    pub column_min_width: f32,
    /// The largest vertical gap between two lines of one block, in text heights.
    pub block_gap: f32,
    /// Lines whose tallest component is lower than this many pixels are noise.
    pub min_line_height: u32,
    /// A line needs one segment that looks like text: a word (three components or more), a
    /// blob as wide as a word melted by blur, or a character at least this many pixels (and
    /// 0.8 text heights) tall to stand alone: a lone mark lower than that is more likely dirt.
    pub min_lone_height: u32,
}

impl Default for LayoutOptions {
    fn default() -> Self {
        LayoutOptions {
            background_radius: 14,
            sauvola_radius: 20,
            sauvola_k: 0.25,
            min_speck_area: 3,
            small_component: 0.45,
            max_component_height: 8.0,
            rule_run_length: 8.0,
            max_skew_degrees: 3.0,
            word_gap: 1.5,
            gutter_min_rows: 3,
            column_min_width: 20.0,
            block_gap: 1.5,
            min_line_height: 5,
            min_lone_height: 10,
        }
    }
}

/// Finds the text lines of `page`, in reading order. Never panics on odd sizes: a page
/// smaller than 3x3 pixels has no lines.
pub fn find_lines(page: &image::RgbImage, opts: &LayoutOptions) -> PageLayout {
    let (width, height) = page.dimensions();
    let mut layout = PageLayout {
        width,
        height,
        skew_degrees: 0.0,
        lines: Vec::new(),
    };
    if width < 3 || height < 3 {
        return layout;
    }
    let (w, h) = (width as usize, height as usize);
    let grey = grey::luma(page);
    let (radius, bg_radius) = (
        opts.sauvola_radius as usize,
        opts.background_radius as usize,
    );
    let ink = binarize::sauvola(&grey, w, h, radius, opts.sauvola_k, bg_radius);
    drop(grey);
    let comps = components::find(&ink, w, h, opts);
    drop(ink);
    if comps.core.is_empty() {
        return layout;
    }
    let angle = skew::estimate(&comps.core, opts.max_skew_degrees);
    let frame = skew::Frame::new(angle, width as f32, height as f32);
    let text_lines = lines::build(&comps, &frame, opts);
    layout.skew_degrees = angle;
    for (li, block) in order::reading_order(&text_lines, opts) {
        let tl = &text_lines[li];
        let boxes = tl.core.iter().map(|&i| &comps.core[i]);
        let boxes = boxes.chain(tl.small.iter().map(|&i| &comps.small[i]));
        let mut bbox = LineBox {
            x0: u32::MAX,
            y0: u32::MAX,
            x1: 0,
            y1: 0,
        };
        for c in boxes {
            bbox.x0 = bbox.x0.min(c.x0);
            bbox.y0 = bbox.y0.min(c.y0);
            bbox.x1 = bbox.x1.max(c.x1);
            bbox.y1 = bbox.y1.max(c.y1);
        }
        if bbox.x0 < bbox.x1 && bbox.y0 < bbox.y1 {
            layout.lines.push(Line { bbox, block });
        }
    }
    layout
}
