//! `ove-train plot`: the curves of `metrics.jsonl` (loss, learning rate, gradient norm,
//! tokens/s against the step) as one PNG, one panel each, drawn with the `image` crate
//! and a built-in 3x5 pixel font for the titles and the axis ranges.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use image::{Rgb, RgbImage};

use crate::train::run::StepMetrics;

const W: u32 = 900;
const PANEL_H: u32 = 220;
const LEFT: u32 = 90;
const RIGHT: u32 = 20;
const TOP: u32 = 26;
const BOTTOM: u32 = 26;
const SCALE: u32 = 2;
const BG: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const COLORS: [Rgb<u8>; 4] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
];

/// Reads `metrics.jsonl` (blank lines skipped).
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    crate::jsonl::read_jsonl(path)
}

/// 3x5 glyphs, one row per u8 (3 low bits, left = bit 2).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '/' => [1, 1, 2, 4, 4],
        ':' => [0, 2, 0, 2, 0],
        'a' => [0, 7, 1, 7, 7],
        'd' => [1, 1, 7, 5, 7],
        'e' => [7, 5, 7, 4, 7],
        'g' => [0, 7, 5, 3, 6],
        'k' => [4, 5, 6, 5, 5],
        'l' => [4, 4, 4, 4, 3],
        'm' => [0, 7, 7, 5, 5],
        'n' => [0, 6, 5, 5, 5],
        'o' => [0, 7, 5, 5, 7],
        'p' => [7, 5, 7, 4, 4],
        'r' => [0, 7, 4, 4, 4],
        's' => [0, 3, 6, 1, 6],
        't' => [2, 7, 2, 2, 3],
        'u' => [0, 5, 5, 5, 7],
        'f' => [3, 2, 7, 2, 2],
        'i' => [2, 0, 2, 2, 2],
        'x' => [0, 5, 2, 5, 0],
        _ => [0; 5],
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Text with its top-left corner at `(x, y)`.
fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, c: Rgb<u8>) {
    for (k, ch) in s.chars().enumerate() {
        let g = glyph(ch.to_ascii_lowercase());
        let x0 = x + k as u32 * 4 * SCALE;
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            put(
                                img,
                                (x0 + col * SCALE + dx) as i64,
                                (y + row as u32 * SCALE + dy) as i64,
                                c,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn text_width(s: &str) -> u32 {
    s.chars().count() as u32 * 4 * SCALE
}

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        put(img, x, y, c);
        put(img, x, y + 1, c);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

/// One panel of `series` (step, value) at vertical offset `y0`.
fn panel(img: &mut RgbImage, y0: u32, title: &str, series: &[(f64, f64)], color: Rgb<u8>) {
    let (x_lo, x_hi) = (LEFT, W - RIGHT);
    let (y_lo, y_hi) = (y0 + TOP, y0 + PANEL_H - BOTTOM);
    text(img, LEFT, y0 + 6, title, AXIS);
    for k in 0..=4 {
        let y = y_lo + (y_hi - y_lo) * k / 4;
        line(img, (x_lo as i64, y as i64), (x_hi as i64, y as i64), GRID);
    }
    line(
        img,
        (x_lo as i64, y_lo as i64),
        (x_lo as i64, y_hi as i64),
        AXIS,
    );
    line(
        img,
        (x_lo as i64, y_hi as i64),
        (x_hi as i64, y_hi as i64),
        AXIS,
    );
    let finite: Vec<(f64, f64)> = series
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if finite.is_empty() {
        text(img, LEFT + 10, (y_lo + y_hi) / 2, "no finite values", AXIS);
        return;
    }
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &finite {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    if ymax - ymin < 1e-12 * ymax.abs().max(1.0) {
        ymin -= 0.5 * ymin.abs().max(1e-12);
        ymax += 0.5 * ymax.abs().max(1e-12);
    }
    let xspan = (xmax - xmin).max(1.0);
    let to_px = |(x, y): (f64, f64)| -> (i64, i64) {
        let px = x_lo as f64 + (x - xmin) / xspan * (x_hi - x_lo) as f64;
        let py = y_hi as f64 - (y - ymin) / (ymax - ymin) * (y_hi - y_lo) as f64;
        (px.round() as i64, py.round() as i64)
    };
    let top = label(ymax);
    let bottom = label(ymin);
    text(img, LEFT - 6 - text_width(&top), y_lo, &top, AXIS);
    text(
        img,
        LEFT - 6 - text_width(&bottom),
        y_hi - 10,
        &bottom,
        AXIS,
    );
    let first = format!("{xmin:.0}");
    let last = format!("step {xmax:.0}");
    text(img, x_lo, y_hi + 6, &first, AXIS);
    text(img, x_hi - text_width(&last), y_hi + 6, &last, AXIS);
    if finite.len() == 1 {
        let (x, y) = to_px(finite[0]);
        for d in -2..=2 {
            line(img, (x - 2, y + d), (x + 2, y + d), color);
        }
    }
    for w in finite.windows(2) {
        line(img, to_px(w[0]), to_px(w[1]), color);
    }
}

/// Draws the metrics' curves into an image.
pub fn render(metrics: &[StepMetrics]) -> RgbImage {
    type Get = fn(&StepMetrics) -> f64;
    let panels: [(&str, Get); 4] = [
        ("loss", |m| m.loss),
        ("lr", |m| m.lr),
        ("grad norm", |m| m.grad_norm),
        ("tokens/s", |m| m.tokens_per_s),
    ];
    let mut img = RgbImage::from_pixel(W, PANEL_H * panels.len() as u32, BG);
    for (k, (title, get)) in panels.iter().enumerate() {
        let series: Vec<(f64, f64)> = metrics.iter().map(|m| (m.step as f64, get(m))).collect();
        panel(&mut img, k as u32 * PANEL_H, title, &series, COLORS[k]);
    }
    img
}

/// `ove-train plot`: reads `metrics`, writes the PNG `out`.
pub fn plot(metrics: &Path, out: &Path) -> Result<usize> {
    let m = read_metrics(metrics)?;
    ensure!(!m.is_empty(), "{}: no metrics", metrics.display());
    render(&m)
        .save_with_format(out, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(n: usize) -> Vec<StepMetrics> {
        (0..n)
            .map(|step| StepMetrics {
                step,
                loss: 8.0 / (1.0 + step as f64),
                lr: 1e-4 * (step as f64 + 1.0).min(5.0),
                grad_norm: if step == 3 { f64::NAN } else { 1.0 },
                tokens: 100,
                target_tokens: 50,
                seconds: 0.1,
                tokens_per_s: 1000.0 + step as f64,
                mfu: 0.1,
                times: Default::default(),
                buckets: 0,
                buckets_in_backward: 0,
            })
            .collect()
    }

    fn count(img: &RgbImage, y0: u32, c: Rgb<u8>) -> usize {
        (y0..y0 + PANEL_H)
            .flat_map(|y| (0..W).map(move |x| (x, y)))
            .filter(|&(x, y)| *img.get_pixel(x, y) == c)
            .count()
    }

    #[test]
    fn every_panel_gets_its_curve() {
        let img = render(&metrics(20));
        assert_eq!(img.dimensions(), (W, 4 * PANEL_H));
        for k in 0..4 {
            let n = count(&img, k * PANEL_H, COLORS[k as usize]);
            // A curve across the plot width at least (constant grad norm: a flat line).
            assert!(n as u32 >= W - LEFT - RIGHT, "panel {k}: {n} pixels");
        }
        // The loss falls: its first point is higher (smaller y) than its last.
        let rows: Vec<u32> = [LEFT, W - RIGHT]
            .iter()
            .map(|&x| {
                (0..PANEL_H)
                    .find(|&y| *img.get_pixel(x, y) == COLORS[0])
                    .unwrap()
            })
            .collect();
        assert!(rows[0] < rows[1], "{rows:?}");
    }

    #[test]
    fn one_point_and_no_finite_values_still_render() {
        let img = render(&metrics(1));
        assert!(count(&img, 0, COLORS[0]) > 0);
        let mut m = metrics(2);
        for x in &mut m {
            x.loss = f64::INFINITY;
        }
        let img = render(&m);
        assert_eq!(count(&img, 0, COLORS[0]), 0);
    }
}
