//! A JPEG decoder whose output is bit-identical to libjpeg-turbo's, as PIL uses it.
//!
//! JPEG decoding is not exact arithmetic: two conforming decoders may differ by a few
//! levels, and the `image` crate's decoder (zune-jpeg) differs from libjpeg-turbo (which
//! PIL, and so the reference, uses) by up to 4 levels on about a tenth of the pixels of
//! an ordinary photo. Entropy decoding is lossless, so exactness only needs the three
//! lossy steps done as libjpeg-turbo does them with PIL's default settings:
//! - the "islow" integer inverse DCT (`jidctint.c`: 13-bit constants, two passes,
//!   descaling with rounding, the post-IDCT range-limit table);
//! - "fancy" (triangle-filter) chroma upsampling (`jdsample.c`: `h2v1`, `h1v2`, `h2v2`,
//!   with their alternating rounding biases and edge replication), plain replication
//!   for other integral factors;
//! - YCbCr to RGB with 16-bit fixed-point tables (`jdcolor.c`).
//!
//! Covered: baseline, extended and progressive Huffman-coded 8-bit JPEGs with one
//! (gray) or three (YCbCr or RGB) components and any integral sampling factors; restart
//! intervals. Anything else (arithmetic coding, 12-bit, lossless, CMYK/YCCK, a
//! progressive file whose coefficients are never fully refined, which libjpeg would
//! smooth) returns `Ok(None)` and the caller falls back to the `image` crate.
//! A file that ends before its end-of-image marker is an error, as it is in PIL.

mod huffman;
mod idct;
mod output;
mod scan;

use image::DynamicImage;

use super::error::PreprocessError;
use huffman::Huffman;
use output::output;
use scan::decode_scan;

/// Zigzag position -> natural (row-major) position, with 16 extra entries so that a
/// corrupt run length cannot index out of the block (libjpeg's `jpeg_natural_order`).
pub(super) const NATURAL_ORDER: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63,
];

pub(super) fn corrupt(msg: &str) -> PreprocessError {
    PreprocessError::Corrupt(format!("JPEG: {msg}"))
}

pub(super) fn truncated() -> PreprocessError {
    PreprocessError::Corrupt("JPEG: the file ends before its end-of-image marker".into())
}

pub(super) struct Component {
    pub(super) id: u8,
    pub(super) h: usize,
    pub(super) v: usize,
    pub(super) tq: usize,
    /// Quantisation table, latched at the component's first scan (as libjpeg does).
    pub(super) quant: Option<[u16; 64]>,
    /// Blocks per row, padded to whole MCUs (the row stride of `coefs`).
    pub(super) bw: usize,
    /// Blocks holding real samples.
    pub(super) width_in_blocks: usize,
    pub(super) height_in_blocks: usize,
    /// Samples in the (downsampled) component plane.
    pub(super) dw: usize,
    pub(super) dh: usize,
    pub(super) coefs: Vec<i16>,
    /// Progressive: lowest bit received so far per zigzag position, -1 if none.
    pub(super) coef_bits: [i8; 64],
}

pub(super) struct Frame {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) progressive: bool,
    pub(super) max_h: usize,
    pub(super) max_v: usize,
    pub(super) mcux: usize,
    pub(super) mcuy: usize,
    pub(super) comps: Vec<Component>,
}

/// Decodes a JPEG file the way libjpeg-turbo does; `Ok(None)` when it uses a feature
/// this decoder leaves to the `image` crate. `check` vets the frame's dimensions
/// before anything is allocated for them.
pub fn decode(
    data: &[u8],
    check: impl Fn(u32, u32) -> Result<(), PreprocessError>,
) -> Result<Option<DynamicImage>, PreprocessError> {
    if data.len() < 2 || data[0] != 0xFF || data[1] != 0xD8 {
        return Err(corrupt("no start-of-image marker"));
    }
    let mut pos = 2usize;
    let mut qt: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<Huffman>; 4] = [None, None, None, None];
    let mut restart_interval = 0usize;
    let mut frame: Option<Frame> = None;
    let mut saw_jfif = false;
    let mut adobe_transform: Option<u8> = None;

    loop {
        // Find the next marker, skipping any garbage (libjpeg warns and skips too).
        while pos < data.len() && data[pos] != 0xFF {
            pos += 1;
        }
        while pos < data.len() && data[pos] == 0xFF {
            pos += 1;
        }
        if pos >= data.len() {
            return Err(truncated());
        }
        let marker = data[pos];
        pos += 1;
        match marker {
            0xD9 => break,
            // Restart markers outside a scan, TEM and a stray stuffed zero: no segment.
            0xD0..=0xD7 | 0x01 | 0x00 => continue,
            _ => {}
        }
        if pos + 2 > data.len() {
            return Err(truncated());
        }
        let len = usize::from(u16::from_be_bytes([data[pos], data[pos + 1]]));
        if len < 2 {
            return Err(corrupt("bad segment length"));
        }
        if pos + len > data.len() {
            return Err(truncated());
        }
        let seg = &data[pos + 2..pos + len];
        let seg_end = pos + len;
        match marker {
            0xC0..=0xC2 => {
                if frame.is_some() {
                    return Err(corrupt("two frames"));
                }
                match parse_frame(seg, marker == 0xC2, &check)? {
                    Some(f) => frame = Some(f),
                    None => return Ok(None),
                }
            }
            // Lossless, hierarchical and arithmetic-coded frames: left to the fallback.
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Ok(None),
            0xC4 => parse_dht(seg, &mut dc_tables, &mut ac_tables)?,
            0xDB => parse_dqt(seg, &mut qt)?,
            0xDD => {
                if seg.len() < 2 {
                    return Err(corrupt("bad DRI"));
                }
                restart_interval = usize::from(u16::from_be_bytes([seg[0], seg[1]]));
            }
            0xE0 => saw_jfif |= seg.starts_with(b"JFIF\0"),
            0xEE if seg.len() >= 12 && seg.starts_with(b"Adobe") => {
                adobe_transform = Some(seg[11]);
            }
            0xDA => {
                let Some(f) = frame.as_mut() else {
                    return Err(corrupt("scan before frame header"));
                };
                pos = decode_scan(
                    data,
                    seg,
                    seg_end,
                    f,
                    &qt,
                    &dc_tables,
                    &ac_tables,
                    restart_interval,
                )?;
                continue;
            }
            _ => {}
        }
        pos = seg_end;
    }

    let Some(frame) = frame else {
        return Err(corrupt("no frame header"));
    };
    if frame.progressive {
        // libjpeg smooths blocks whose low-frequency coefficients are incomplete.
        let incomplete = frame
            .comps
            .iter()
            .any(|c| c.coef_bits[..10].iter().any(|&b| b != 0));
        if incomplete {
            return Ok(None);
        }
    }
    if frame.comps.iter().any(|c| c.quant.is_none()) {
        return Err(corrupt("a component has no scan"));
    }
    let rgb_colorspace = frame.comps.len() == 3
        && if saw_jfif {
            false
        } else if let Some(t) = adobe_transform {
            t == 0
        } else {
            let ids: Vec<u8> = frame.comps.iter().map(|c| c.id).collect();
            ids == [b'R', b'G', b'B']
        };
    output(&frame, rgb_colorspace)
}

fn parse_frame(
    seg: &[u8],
    progressive: bool,
    check: &impl Fn(u32, u32) -> Result<(), PreprocessError>,
) -> Result<Option<Frame>, PreprocessError> {
    if seg.len() < 6 {
        return Err(corrupt("bad frame header"));
    }
    let precision = seg[0];
    let height = usize::from(u16::from_be_bytes([seg[1], seg[2]]));
    let width = usize::from(u16::from_be_bytes([seg[3], seg[4]]));
    let n = usize::from(seg[5]);
    if seg.len() < 6 + 3 * n {
        return Err(corrupt("bad frame header"));
    }
    if precision != 8 || height == 0 || !(n == 1 || n == 3) {
        // 12-bit, height given later by a DNL marker, CMYK/YCCK: fallback.
        return Ok(None);
    }
    check(width as u32, height as u32)?;
    let mut comps = Vec::with_capacity(n);
    for i in 0..n {
        let c = &seg[6 + 3 * i..9 + 3 * i];
        let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
            return Err(corrupt("bad component"));
        }
        comps.push((c[0], h, v, usize::from(c[2])));
    }
    let max_h = comps.iter().map(|c| c.1).max().unwrap_or(1);
    let max_v = comps.iter().map(|c| c.2).max().unwrap_or(1);
    if comps.iter().any(|c| max_h % c.1 != 0 || max_v % c.2 != 0) {
        return Ok(None);
    }
    let mcux = width.div_ceil(8 * max_h);
    let mcuy = height.div_ceil(8 * max_v);
    let comps = comps
        .into_iter()
        .map(|(id, h, v, tq)| {
            let dw = (width * h).div_ceil(max_h);
            let dh = (height * v).div_ceil(max_v);
            let (bw, bh) = (mcux * h, mcuy * v);
            Component {
                id,
                h,
                v,
                tq,
                quant: None,
                bw,
                width_in_blocks: dw.div_ceil(8),
                height_in_blocks: dh.div_ceil(8),
                dw,
                dh,
                coefs: vec![0i16; bw * bh * 64],
                coef_bits: [-1; 64],
            }
        })
        .collect();
    Ok(Some(Frame {
        width,
        height,
        progressive,
        max_h,
        max_v,
        mcux,
        mcuy,
        comps,
    }))
}

fn parse_dht(
    mut seg: &[u8],
    dc: &mut [Option<Huffman>; 4],
    ac: &mut [Option<Huffman>; 4],
) -> Result<(), PreprocessError> {
    while !seg.is_empty() {
        if seg.len() < 17 {
            return Err(corrupt("bad DHT"));
        }
        let (class, id) = (seg[0] >> 4, usize::from(seg[0] & 15));
        let mut counts = [0u8; 16];
        counts.copy_from_slice(&seg[1..17]);
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if class > 1 || id > 3 || total > 256 || seg.len() < 17 + total {
            return Err(corrupt("bad DHT"));
        }
        let table = Huffman::new(&counts, seg[17..17 + total].to_vec())?;
        if class == 0 {
            dc[id] = Some(table);
        } else {
            ac[id] = Some(table);
        }
        seg = &seg[17 + total..];
    }
    Ok(())
}

fn parse_dqt(mut seg: &[u8], qt: &mut [Option<[u16; 64]>; 4]) -> Result<(), PreprocessError> {
    while !seg.is_empty() {
        let (prec, id) = (seg[0] >> 4, usize::from(seg[0] & 15));
        let size = if prec == 0 { 64 } else { 128 };
        if prec > 1 || id > 3 || seg.len() < 1 + size {
            return Err(corrupt("bad DQT"));
        }
        let mut table = [0u16; 64];
        for (k, &nat) in NATURAL_ORDER[..64].iter().enumerate() {
            table[nat] = if prec == 0 {
                u16::from(seg[1 + k])
            } else {
                u16::from_be_bytes([seg[1 + 2 * k], seg[2 + 2 * k]])
            };
        }
        qt[id] = Some(table);
        seg = &seg[1 + size..];
    }
    Ok(())
}
