//! Degradations of a rendered page: small rotation and perspective, uneven lighting, blur,
//! low resolution, noise and JPEG artefacts. `level` 0 leaves the page untouched; 1 is the
//! strongest. The output always has the input's size.

use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use ove_core::layout_metrics::LineBox;
use rand::Rng;

/// A degraded page, and the projective map its rotation/perspective applied (a point
/// `(x, y)` of the clean page is at `map(x, y)` in `image`; `None`: not moved), so that
/// ground-truth boxes can follow the text ([`map_box`]).
pub struct Degraded {
    pub image: RgbImage,
    pub warp: Option<[f64; 9]>,
}

/// Applies the degradations at `level` (0..=1), each with a probability that grows with it.
pub fn degrade(img: &RgbImage, level: f32, paper: [u8; 3], rng: &mut impl Rng) -> RgbImage {
    degrade_page(img, level, paper, rng).image
}

/// [`degrade`], with the geometric map it applied.
pub fn degrade_page(img: &RgbImage, level: f32, paper: [u8; 3], rng: &mut impl Rng) -> Degraded {
    let level = level.clamp(0.0, 1.0);
    if level == 0.0 {
        return Degraded {
            image: img.clone(),
            warp: None,
        };
    }
    let p = (0.35 + 0.5 * level) as f64;
    let mut out = img.clone();
    let mut map = None;
    if rng.gen_bool(p) {
        let angle = rng.gen_range(-1.0..1.0f32) * 2.0 * level;
        let jitter = rng.gen_range(0.0..0.035f32) * level;
        let (warped, forward) = warp_page(&out, angle, jitter, paper, rng);
        out = warped;
        map = forward;
    }
    if rng.gen_bool(p) {
        lighting(&mut out, 0.35 * level * rng.gen_range(0.3..1.0f32), rng);
    }
    if rng.gen_bool(p * 0.8) {
        // Scanned or photographed at a lower resolution, then scaled back.
        let f = 1.0 - rng.gen_range(0.2..0.55f32) * level;
        let (w, h) = out.dimensions();
        let sw = ((w as f32 * f) as u32).max(8);
        let sh = ((h as f32 * f) as u32).max(8);
        let small = imageops::resize(&out, sw, sh, FilterType::Triangle);
        out = imageops::resize(&small, w, h, FilterType::Triangle);
    }
    if rng.gen_bool(p * 0.7) {
        let sigma = rng.gen_range(0.3..1.2f32) * level;
        if sigma > 0.2 {
            out = imageops::blur(&out, sigma);
        }
    }
    if rng.gen_bool(p) {
        noise(&mut out, rng.gen_range(2.0..14.0f32) * level, rng);
    }
    if rng.gen_bool(p) {
        let quality = (90.0 - rng.gen_range(0.0..60.0f32) * level).round() as u8;
        out = jpeg(&out, quality.max(30));
    }
    Degraded {
        image: out,
        warp: map,
    }
}

/// The axis-aligned box, clamped to a `width x height` page, that encloses box `b`'s
/// corners moved by the projective map `h`.
pub fn map_box(h: &[f64; 9], b: LineBox, width: u32, height: u32) -> LineBox {
    let corners = [
        (b.x0 as f64, b.y0 as f64),
        (b.x1 as f64, b.y0 as f64),
        (b.x1 as f64, b.y1 as f64),
        (b.x0 as f64, b.y1 as f64),
    ];
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for (x, y) in corners {
        let z = h[6] * x + h[7] * y + h[8];
        let (u, v) = (
            (h[0] * x + h[1] * y + h[2]) / z,
            (h[3] * x + h[4] * y + h[5]) / z,
        );
        (x0, y0, x1, y1) = (x0.min(u), y0.min(v), x1.max(u), y1.max(v));
    }
    let clamp = |v: f64, hi: u32| v.clamp(0.0, hi as f64) as u32;
    LineBox {
        x0: clamp(x0.floor(), width),
        y0: clamp(y0.floor(), height),
        x1: clamp(x1.ceil(), width),
        y1: clamp(y1.ceil(), height),
    }
}

/// A standard normal sample (Box-Muller).
fn gaussian(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
    let u2: f32 = rng.gen_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Additive grey noise with standard deviation `sigma` (in 0..255 units).
pub fn noise(img: &mut RgbImage, sigma: f32, rng: &mut impl Rng) {
    for p in img.pixels_mut() {
        let n = gaussian(rng) * sigma;
        for c in &mut p.0 {
            *c = (*c as f32 + n).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Multiplies by a linear gradient and a soft spot: a page lit from one side.
pub fn lighting(img: &mut RgbImage, strength: f32, rng: &mut impl Rng) {
    let (w, h) = img.dimensions();
    let angle = rng.gen_range(0.0..std::f32::consts::TAU);
    let (dx, dy) = (angle.cos(), angle.sin());
    let (cx, cy) = (rng.gen_range(0.0..w as f32), rng.gen_range(0.0..h as f32));
    let radius = (w.max(h) as f32) * rng.gen_range(0.4..1.0f32);
    let diag = ((w * w + h * h) as f32).sqrt().max(1.0);
    for (x, y, p) in img.enumerate_pixels_mut() {
        let (fx, fy) = (x as f32, y as f32);
        let t = ((fx - w as f32 / 2.0) * dx + (fy - h as f32 / 2.0) * dy) / diag + 0.5;
        let d = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt() / radius;
        let shade = 1.0 - strength * (0.6 * t + 0.4 * d.min(1.0));
        for c in &mut p.0 {
            *c = (*c as f32 * shade).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Encodes and decodes as JPEG at `quality`.
pub fn jpeg(img: &RgbImage, quality: u8) -> RgbImage {
    let mut buf = Vec::new();
    let ok = JpegEncoder::new_with_quality(&mut buf, quality)
        .encode_image(img)
        .is_ok();
    if !ok {
        return img.clone();
    }
    match image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg) {
        Ok(d) => d.to_rgb8(),
        Err(_) => img.clone(),
    }
}

/// Rotates by `degrees` about the centre and moves each corner by up to `jitter` of the
/// page size (a perspective view), filling uncovered areas with `fill`.
pub fn warp(
    img: &RgbImage,
    degrees: f32,
    jitter: f32,
    fill: [u8; 3],
    rng: &mut impl Rng,
) -> RgbImage {
    warp_page(img, degrees, jitter, fill, rng).0
}

/// [`warp`], with the forward map (clean page -> warped page) it applied.
fn warp_page(
    img: &RgbImage,
    degrees: f32,
    jitter: f32,
    fill: [u8; 3],
    rng: &mut impl Rng,
) -> (RgbImage, Option<[f64; 9]>) {
    let (w, h) = img.dimensions();
    let (wf, hf) = (w as f64, h as f64);
    let src = [(0.0, 0.0), (wf, 0.0), (wf, hf), (0.0, hf)];
    let (s, c) = (degrees as f64).to_radians().sin_cos();
    let (cx, cy) = (wf / 2.0, hf / 2.0);
    let mut dst = [(0.0, 0.0); 4];
    for (i, &(x, y)) in src.iter().enumerate() {
        let (rx, ry) = (x - cx, y - cy);
        let jx = rng.gen_range(-1.0..1.0f64) * jitter as f64 * wf;
        let jy = rng.gen_range(-1.0..1.0f64) * jitter as f64 * hf;
        dst[i] = (cx + rx * c - ry * s + jx, cy + rx * s + ry * c + jy);
    }
    // Map output pixels back to the source.
    let Some(hm) = homography(&dst, &src) else {
        return (img.clone(), None);
    };
    let mut out = RgbImage::from_pixel(w, h, Rgb(fill));
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
        let z = hm[6] * px + hm[7] * py + hm[8];
        if z.abs() < 1e-9 {
            continue;
        }
        let sx = (hm[0] * px + hm[1] * py + hm[2]) / z - 0.5;
        let sy = (hm[3] * px + hm[4] * py + hm[5]) / z - 0.5;
        if let Some(v) = bilinear(img, sx, sy) {
            *p = v;
        }
    }
    (out, homography(&src, &dst))
}

fn bilinear(img: &RgbImage, x: f64, y: f64) -> Option<Rgb<u8>> {
    let (w, h) = img.dimensions();
    if x < -0.5 || y < -0.5 || x > w as f64 - 0.5 || y > h as f64 - 0.5 {
        return None;
    }
    let x = x.clamp(0.0, (w - 1) as f64);
    let y = y.clamp(0.0, (h - 1) as f64);
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f64, y - y0 as f64);
    let (a, b, c, d) = (
        img.get_pixel(x0, y0),
        img.get_pixel(x1, y0),
        img.get_pixel(x0, y1),
        img.get_pixel(x1, y1),
    );
    let mut v = [0u8; 3];
    for (k, out) in v.iter_mut().enumerate() {
        let top = a.0[k] as f64 * (1.0 - fx) + b.0[k] as f64 * fx;
        let bot = c.0[k] as f64 * (1.0 - fx) + d.0[k] as f64 * fx;
        *out = (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8;
    }
    Some(Rgb(v))
}

/// The projective map taking the four `from` points to the four `to` points, as a row-major
/// 3x3 matrix with h[8] = 1.
pub fn homography(from: &[(f64, f64); 4], to: &[(f64, f64); 4]) -> Option<[f64; 9]> {
    let mut a = [[0.0f64; 9]; 8];
    for i in 0..4 {
        let (x, y) = from[i];
        let (u, v) = to[i];
        a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    // Gaussian elimination with partial pivoting on the 8x8 system.
    for col in 0..8 {
        let piv = (col..8).max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))?;
        if a[piv][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, piv);
        let pivot = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot[col];
                for (x, p) in row.iter_mut().zip(pivot).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    let mut h = [0.0; 9];
    for i in 0..8 {
        h[i] = a[i][8] / a[i][i];
    }
    h[8] = 1.0;
    Some(h)
}
