//! From coefficients to pixels: inverse DCT per component, libjpeg-turbo's chroma
//! upsampling (`jdsample.c`) and YCbCr -> RGB conversion (`jdcolor.c`).

use image::{DynamicImage, GrayImage, RgbImage};

use super::idct::idct_islow;
use super::{corrupt, Component, Frame};
use crate::preprocess::error::PreprocessError;

/// The component's sample plane (`width_in_blocks * 8` wide).
fn component_plane(c: &Component) -> Vec<u8> {
    let quant = c.quant.as_ref().expect("checked before output");
    let stride = c.width_in_blocks * 8;
    let mut plane = vec![0u8; stride * c.height_in_blocks * 8];
    for by in 0..c.height_in_blocks {
        for bx in 0..c.width_in_blocks {
            let off = (by * c.bw + bx) * 64;
            let start = by * 8 * stride + bx * 8;
            idct_islow(&c.coefs[off..off + 64], quant, &mut plane[start..], stride);
        }
    }
    plane
}

/// Upsamples a component plane to `out_w x out_h` samples the way libjpeg-turbo's
/// `jdsample.c` does with fancy upsampling on (PIL's default).
fn upsample(
    c: &Component,
    plane: &[u8],
    max_h: usize,
    max_v: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    let stride = c.width_in_blocks * 8;
    let (dw, dh) = (c.dw, c.dh);
    // Rows past the real ones repeat the last real row (jdmainct.c), columns likewise.
    let at = |x: isize, y: isize| -> i32 {
        let x = x.clamp(0, dw as isize - 1) as usize;
        let y = y.clamp(0, dh as isize - 1) as usize;
        i32::from(plane[y * stride + x])
    };
    let (hx, vx) = (max_h / c.h, max_v / c.v);
    let mut out = vec![0u8; out_w * out_h];
    for oy in 0..out_h {
        let row = &mut out[oy * out_w..(oy + 1) * out_w];
        match (hx, vx) {
            (1, 1) => {
                for (ox, o) in row.iter_mut().enumerate() {
                    *o = at(ox as isize, oy as isize) as u8;
                }
            }
            (2, 1) if dw > 2 => {
                let y = oy as isize;
                for (ox, o) in row.iter_mut().enumerate() {
                    let x = (ox / 2) as isize;
                    let here = at(x, y) * 3;
                    *o = if ox % 2 == 0 {
                        ((here + at(x - 1, y) + 1) >> 2) as u8
                    } else {
                        ((here + at(x + 1, y) + 2) >> 2) as u8
                    };
                }
            }
            (1, 2) => {
                let y = (oy / 2) as isize;
                let (near, bias) = if oy % 2 == 0 { (y - 1, 1) } else { (y + 1, 2) };
                for (ox, o) in row.iter_mut().enumerate() {
                    let x = ox as isize;
                    *o = ((at(x, y) * 3 + at(x, near) + bias) >> 2) as u8;
                }
            }
            (2, 2) if dw > 2 => {
                let y = (oy / 2) as isize;
                let near = if oy % 2 == 0 { y - 1 } else { y + 1 };
                let colsum = |x: isize| at(x, y) * 3 + at(x, near);
                for (ox, o) in row.iter_mut().enumerate() {
                    let x = (ox / 2) as isize;
                    let here = colsum(x) * 3;
                    *o = if ox % 2 == 0 {
                        ((here + colsum(x - 1) + 8) >> 4) as u8
                    } else {
                        ((here + colsum(x + 1) + 7) >> 4) as u8
                    };
                }
            }
            // Plain replication (int_upsample, and h2v1/h2v2 on planes 1-2 wide).
            _ => {
                let y = (oy / vx) as isize;
                for (ox, o) in row.iter_mut().enumerate() {
                    *o = at((ox / hx) as isize, y) as u8;
                }
            }
        }
    }
    out
}

/// YCbCr -> RGB tables of `jdcolor.c` (16-bit fixed point).
struct YccTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i64; 256],
    cb_g: [i64; 256],
}

impl YccTables {
    fn new() -> Self {
        const SCALEBITS: u32 = 16;
        const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
        let fix = |x: f64| (x * f64::from(1u32 << SCALEBITS) + 0.5) as i64;
        let mut t = Self {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256usize {
            let x = i as i64 - 128;
            t.cr_r[i] = ((fix(1.40200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cb_b[i] = ((fix(1.77200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + ONE_HALF;
        }
        t
    }
}

#[inline]
fn clamp8(x: i32) -> u8 {
    x.clamp(0, 255) as u8
}

pub(super) fn output(
    frame: &Frame,
    rgb_colorspace: bool,
) -> Result<Option<DynamicImage>, PreprocessError> {
    let (w, h) = (frame.width, frame.height);
    let planes: Vec<Vec<u8>> = frame
        .comps
        .iter()
        .map(|c| upsample(c, &component_plane(c), frame.max_h, frame.max_v, w, h))
        .collect();
    if planes.len() == 1 {
        let img = GrayImage::from_raw(
            w as u32,
            h as u32,
            planes.into_iter().next().unwrap_or_default(),
        )
        .ok_or_else(|| corrupt("internal size mismatch"))?;
        return Ok(Some(DynamicImage::ImageLuma8(img)));
    }
    let mut rgb = vec![0u8; w * h * 3];
    if rgb_colorspace {
        for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
            px.copy_from_slice(&[planes[0][i], planes[1][i], planes[2][i]]);
        }
    } else {
        let t = YccTables::new();
        for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
            let y = i32::from(planes[0][i]);
            let (cb, cr) = (usize::from(planes[1][i]), usize::from(planes[2][i]));
            px[0] = clamp8(y + t.cr_r[cr]);
            px[1] = clamp8(y + ((t.cb_g[cb] + t.cr_g[cr]) >> 16) as i32);
            px[2] = clamp8(y + t.cb_b[cb]);
        }
    }
    let img = RgbImage::from_raw(w as u32, h as u32, rgb)
        .ok_or_else(|| corrupt("internal size mismatch"))?;
    Ok(Some(DynamicImage::ImageRgb8(img)))
}
