//! A picture of a layout over its page, for a person to check it.
//!
//! Each line's box is outlined in its block's colour (a small palette, cycled) and numbered
//! in reading order with a tiny built-in digit font, so a wrong order or a merged line shows
//! at a glance. The page is faded a little so the boxes stand out.

use super::PageLayout;
use image::{Rgb, RgbImage};

const PALETTE: [[u8; 3]; 8] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [0, 170, 170],
    [240, 50, 230],
    [128, 128, 0],
];

/// 3x5 digits, one row per 3 bits (top row in the high bits).
const DIGITS: [u16; 10] = [
    0b111_101_101_101_111,
    0b010_110_010_010_111,
    0b111_001_111_100_111,
    0b111_001_111_001_111,
    0b101_101_111_001_001,
    0b111_100_111_001_111,
    0b111_100_111_101_111,
    0b111_001_010_010_010,
    0b111_101_111_101_111,
    0b111_101_111_001_111,
];

/// `page` with `layout`'s line boxes outlined in block colours and numbered in reading order.
pub fn draw(page: &RgbImage, layout: &PageLayout) -> RgbImage {
    let mut out = page.clone();
    for p in out.pixels_mut() {
        for c in &mut p.0 {
            *c = 96 + (*c as u16 * 5 / 8) as u8;
        }
    }
    let (w, h) = out.dimensions();
    if w == 0 || h == 0 {
        return out;
    }
    for (n, line) in layout.lines.iter().enumerate() {
        let colour = Rgb(PALETTE[line.block % PALETTE.len()]);
        let b = line.bbox;
        let (x0, y0) = (b.x0.min(w - 1), b.y0.min(h - 1));
        let (x1, y1) = (b.x1.clamp(x0 + 1, w) - 1, b.y1.clamp(y0 + 1, h) - 1);
        for t in 0..2u32 {
            for x in x0..=x1 {
                put(&mut out, x, y0.saturating_add(t), colour);
                put(&mut out, x, y1.saturating_sub(t), colour);
            }
            for y in y0..=y1 {
                put(&mut out, x0.saturating_add(t), y, colour);
                put(&mut out, x1.saturating_sub(t), y, colour);
            }
        }
        // The number just left of the box if there is room, else inside it.
        let label = (n + 1).to_string();
        let scale = 2u32;
        let lw = label.len() as u32 * 4 * scale;
        let lx = if x0 >= lw + 2 { x0 - lw - 2 } else { x0 + 3 };
        text(&mut out, lx, y0 + 2, &label, scale, colour);
    }
    out
}

fn put(img: &mut RgbImage, x: u32, y: u32, c: Rgb<u8>) {
    if x < img.width() && y < img.height() {
        img.put_pixel(x, y, c);
    }
}

fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, scale: u32, c: Rgb<u8>) {
    for (i, ch) in s.bytes().enumerate() {
        let glyph = DIGITS[(ch - b'0') as usize % 10];
        let gx = x + i as u32 * 4 * scale;
        for row in 0..5u32 {
            for col in 0..3u32 {
                if glyph >> (14 - (row * 3 + col)) & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(img, gx + col * scale + dx, y + row * scale + dy, c);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Line, LineBox};
    use super::*;

    #[test]
    fn draws_boxes_in_block_colours_and_keeps_size() {
        let page = RgbImage::from_pixel(100, 60, Rgb([255, 255, 255]));
        let layout = PageLayout {
            width: 100,
            height: 60,
            skew_degrees: 0.0,
            lines: vec![
                Line {
                    bbox: LineBox {
                        x0: 30,
                        y0: 10,
                        x1: 90,
                        y1: 20,
                    },
                    block: 0,
                },
                Line {
                    bbox: LineBox {
                        x0: 30,
                        y0: 40,
                        x1: 200,
                        y1: 90,
                    }, // past the edge
                    block: 1,
                },
            ],
        };
        let img = draw(&page, &layout);
        assert_eq!(img.dimensions(), (100, 60));
        assert_eq!(img.get_pixel(50, 10).0, PALETTE[0]);
        assert_eq!(img.get_pixel(50, 40).0, PALETTE[1]);
        assert_eq!(img.get_pixel(99, 50).0, PALETTE[1]);
        // Inside a box the faded page shows.
        assert_eq!(
            img.get_pixel(60, 15).0,
            [255, 255, 255].map(|c: u8| 96 + (c as u16 * 5 / 8) as u8)
        );
        // A 1x1 page and an empty layout are fine.
        let tiny = RgbImage::new(1, 1);
        let l = PageLayout {
            width: 1,
            height: 1,
            skew_degrees: 0.0,
            lines: layout.lines,
        };
        assert_eq!(draw(&tiny, &l).dimensions(), (1, 1));
    }
}
