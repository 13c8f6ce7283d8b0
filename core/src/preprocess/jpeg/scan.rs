//! Decoding one scan into the coefficient buffers: sequential (baseline/extended) and
//! progressive (DC/AC, first pass and successive-approximation refinement) scans,
//! following libjpeg's `jdhuff.c` / `jdphuff.c`.

use super::huffman::{BitReader, Huffman};
use super::{corrupt, truncated, Component, Frame, NATURAL_ORDER};
use crate::preprocess::error::PreprocessError;

/// Per-scan decoding state.
struct ScanState {
    pred: Vec<i32>,
    eobrun: u32,
}

/// Decodes one scan; returns the position to look for the next marker from.
#[allow(clippy::too_many_arguments)]
pub(super) fn decode_scan(
    data: &[u8],
    seg: &[u8],
    seg_end: usize,
    frame: &mut Frame,
    qt: &[Option<[u16; 64]>; 4],
    dc_tables: &[Option<Huffman>; 4],
    ac_tables: &[Option<Huffman>; 4],
    restart_interval: usize,
) -> Result<usize, PreprocessError> {
    let n = usize::from(*seg.first().ok_or_else(|| corrupt("bad scan header"))?);
    if n == 0 || n > 4 || seg.len() < 1 + 2 * n + 3 {
        return Err(corrupt("bad scan header"));
    }
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let (id, tables) = (seg[1 + 2 * i], seg[2 + 2 * i]);
        let ci = frame
            .comps
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| corrupt("scan names an unknown component"))?;
        members.push((ci, usize::from(tables >> 4), usize::from(tables & 15)));
    }
    let (ss, se) = (usize::from(seg[1 + 2 * n]), usize::from(seg[2 + 2 * n]));
    let (ah, al) = (seg[3 + 2 * n] >> 4, seg[3 + 2 * n] & 15);
    if frame.progressive {
        let dc_scan = ss == 0;
        if (dc_scan && se != 0) || (!dc_scan && (se < ss || se > 63 || n != 1)) || al > 13 {
            return Err(corrupt("bad progressive scan parameters"));
        }
    }
    // Sequential scans always cover the whole block (libjpeg ignores Ss, Se, Ah, Al).
    let (ss, se) = if frame.progressive { (ss, se) } else { (0, 63) };

    // Latch quantisation tables and check the Huffman tables the scan needs.
    for &(ci, td, ta) in &members {
        let comp = &mut frame.comps[ci];
        if comp.quant.is_none() {
            comp.quant = Some(qt[comp.tq].ok_or_else(|| corrupt("missing quantisation table"))?);
        }
        if td > 3 || ta > 3 {
            return Err(corrupt("bad Huffman table id"));
        }
        let needs_dc = ss == 0 && ah == 0;
        let needs_ac = se > 0 && (!frame.progressive || ss > 0);
        if (needs_dc && dc_tables[td].is_none()) || (needs_ac && ac_tables[ta].is_none()) {
            return Err(corrupt("missing Huffman table"));
        }
        if frame.progressive {
            for b in &mut comp.coef_bits[ss..=se] {
                *b = al as i8;
            }
        }
    }

    let mut reader = BitReader::new(data, seg_end);
    let mut state = ScanState {
        pred: vec![0; frame.comps.len()],
        eobrun: 0,
    };
    let progressive = frame.progressive;
    let decode_block = |reader: &mut BitReader<'_>,
                        comp: &mut Component,
                        ci: usize,
                        td: usize,
                        ta: usize,
                        bx: usize,
                        by: usize,
                        state: &mut ScanState|
     -> Result<(), PreprocessError> {
        let off = (by * comp.bw + bx) * 64;
        let block = &mut comp.coefs[off..off + 64];
        if !progressive {
            decode_sequential(
                reader,
                block,
                dc_tables[td].as_ref(),
                ac_tables[ta].as_ref(),
                &mut state.pred[ci],
            )
        } else if ss == 0 {
            if ah == 0 {
                let t = reader.decode(dc_tables[td].as_ref().expect("checked above"))?;
                let diff = reader.receive_extend(t)?;
                state.pred[ci] = state.pred[ci].wrapping_add(diff);
                block[0] = (state.pred[ci] << al) as i16;
            } else if reader.bit() {
                block[0] |= (1i16) << al;
            }
            Ok(())
        } else if ah == 0 {
            decode_ac_first(
                reader,
                block,
                ac_tables[ta].as_ref().expect("checked above"),
                ss,
                se,
                al,
                &mut state.eobrun,
            )
        } else {
            decode_ac_refine(
                reader,
                block,
                ac_tables[ta].as_ref().expect("checked above"),
                ss,
                se,
                al,
                &mut state.eobrun,
            )
        }
    };

    let mut mcu = 0usize;
    let restart = |reader: &mut BitReader<'_>, state: &mut ScanState, mcu: usize| {
        if restart_interval > 0 && mcu > 0 && mcu.is_multiple_of(restart_interval) {
            reader.restart();
            state.pred.iter_mut().for_each(|p| *p = 0);
            state.eobrun = 0;
        }
    };
    if n == 1 {
        let (ci, td, ta) = members[0];
        let (wb, hb) = (
            frame.comps[ci].width_in_blocks,
            frame.comps[ci].height_in_blocks,
        );
        for by in 0..hb {
            for bx in 0..wb {
                restart(&mut reader, &mut state, mcu);
                decode_block(
                    &mut reader,
                    &mut frame.comps[ci],
                    ci,
                    td,
                    ta,
                    bx,
                    by,
                    &mut state,
                )?;
                mcu += 1;
            }
        }
    } else {
        for my in 0..frame.mcuy {
            for mx in 0..frame.mcux {
                restart(&mut reader, &mut state, mcu);
                for &(ci, td, ta) in &members {
                    let (h, v) = (frame.comps[ci].h, frame.comps[ci].v);
                    for y in 0..v {
                        for x in 0..h {
                            decode_block(
                                &mut reader,
                                &mut frame.comps[ci],
                                ci,
                                td,
                                ta,
                                mx * h + x,
                                my * v + y,
                                &mut state,
                            )?;
                        }
                    }
                }
                mcu += 1;
            }
        }
    }
    if reader.eof {
        return Err(truncated());
    }
    Ok(reader.pos)
}

fn decode_sequential(
    reader: &mut BitReader<'_>,
    block: &mut [i16],
    dc: Option<&Huffman>,
    ac: Option<&Huffman>,
    pred: &mut i32,
) -> Result<(), PreprocessError> {
    let t = reader.decode(dc.ok_or_else(|| corrupt("missing DC table"))?)?;
    let diff = reader.receive_extend(t)?;
    *pred = pred.wrapping_add(diff);
    block[0] = *pred as i16;
    let ac = ac.ok_or_else(|| corrupt("missing AC table"))?;
    let mut k = 1usize;
    while k < 64 {
        let rs = reader.decode(ac)?;
        let (r, s) = (usize::from(rs >> 4), rs & 15);
        if s != 0 {
            k += r;
            block[NATURAL_ORDER[k]] = reader.receive_extend(s)? as i16;
        } else {
            if r != 15 {
                break;
            }
            k += 15;
        }
        k += 1;
    }
    Ok(())
}

fn decode_ac_first(
    reader: &mut BitReader<'_>,
    block: &mut [i16],
    ac: &Huffman,
    ss: usize,
    se: usize,
    al: u8,
    eobrun: &mut u32,
) -> Result<(), PreprocessError> {
    if *eobrun > 0 {
        *eobrun -= 1;
        return Ok(());
    }
    let mut k = ss;
    while k <= se {
        let rs = reader.decode(ac)?;
        let (r, s) = (u32::from(rs >> 4), rs & 15);
        if s != 0 {
            k += r as usize;
            let v = reader.receive_extend(s)?;
            block[NATURAL_ORDER[k]] = (v << al) as i16;
        } else if r == 15 {
            k += 15;
        } else {
            *eobrun = 1 << r;
            if r != 0 {
                *eobrun += reader.bits(r);
            }
            *eobrun -= 1;
            break;
        }
        k += 1;
    }
    Ok(())
}

fn decode_ac_refine(
    reader: &mut BitReader<'_>,
    block: &mut [i16],
    ac: &Huffman,
    ss: usize,
    se: usize,
    al: u8,
    eobrun: &mut u32,
) -> Result<(), PreprocessError> {
    let p1: i16 = 1 << al;
    let m1: i16 = (-1i16) << al;
    let refine = |reader: &mut BitReader<'_>, coef: &mut i16| {
        if reader.bit() && (*coef & p1) == 0 {
            *coef = coef.wrapping_add(if *coef >= 0 { p1 } else { m1 });
        }
    };
    let mut k = ss;
    if *eobrun == 0 {
        while k <= se {
            let rs = reader.decode(ac)?;
            let (mut r, s) = (i32::from(rs >> 4), rs & 15);
            let mut value = 0i16;
            if s != 0 {
                // s must be 1 here; libjpeg only warns otherwise.
                value = if reader.bit() { p1 } else { m1 };
            } else if r != 15 {
                *eobrun = 1 << r;
                if r != 0 {
                    *eobrun += reader.bits(r as u32);
                }
                break;
            }
            while k <= se {
                let coef = &mut block[NATURAL_ORDER[k]];
                if *coef != 0 {
                    refine(reader, coef);
                } else {
                    r -= 1;
                    if r < 0 {
                        break;
                    }
                }
                k += 1;
            }
            if value != 0 {
                block[NATURAL_ORDER[k]] = value;
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        while k <= se {
            let coef = &mut block[NATURAL_ORDER[k]];
            if *coef != 0 {
                refine(reader, coef);
            }
            k += 1;
        }
        *eobrun -= 1;
    }
    Ok(())
}
