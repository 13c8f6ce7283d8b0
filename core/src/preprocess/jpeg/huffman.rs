//! Huffman tables and the entropy-coded bit stream (stuffed bytes, markers, restarts).

use super::corrupt;
use crate::preprocess::error::PreprocessError;

/// Bits of lookahead in the fast Huffman table.
pub(super) const LOOKAHEAD: u32 = 9;

/// One Huffman table, decoded the canonical way (JPEG Annex C / F.2.2.3).
#[derive(Clone)]
pub(super) struct Huffman {
    /// `(length << 8) | symbol` for codes of at most `LOOKAHEAD` bits, 0 otherwise.
    fast: Vec<u16>,
    /// Largest code of each length (1..=16), -1 if none.
    maxcode: [i32; 17],
    /// Offset from a code of each length to its index in `values`.
    valoffset: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    pub(super) fn new(counts: &[u8; 16], values: Vec<u8>) -> Result<Self, PreprocessError> {
        let mut maxcode = [-1i32; 17];
        let mut valoffset = [0i32; 17];
        let mut fast = vec![0u16; 1 << LOOKAHEAD];
        let mut code = 0u32;
        let mut k = 0usize;
        for len in 1..=16usize {
            let n = counts[len - 1] as usize;
            if n > 0 {
                valoffset[len] = k as i32 - code as i32;
                for _ in 0..n {
                    if code >= (1 << len) {
                        return Err(corrupt("bad Huffman table"));
                    }
                    if len as u32 <= LOOKAHEAD {
                        let shift = LOOKAHEAD - len as u32;
                        let entry = ((len as u16) << 8) | u16::from(values[k]);
                        for low in 0..(1u32 << shift) {
                            fast[((code << shift) | low) as usize] = entry;
                        }
                    }
                    code += 1;
                    k += 1;
                }
                maxcode[len] = code as i32 - 1;
            }
            code <<= 1;
        }
        Ok(Self {
            fast,
            maxcode,
            valoffset,
            values,
        })
    }
}

/// Reads entropy-coded bits: removes stuffed zero bytes, stops at markers (feeding zero
/// bits past them, as libjpeg does) and notes a premature end of the file.
pub(super) struct BitReader<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
    pub(super) acc: u64,
    pub(super) nbits: u32,
    pub(super) at_marker: bool,
    pub(super) eof: bool,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8], pos: usize) -> Self {
        Self {
            data,
            pos,
            acc: 0,
            nbits: 0,
            at_marker: false,
            eof: false,
        }
    }

    fn fill(&mut self) {
        while self.nbits <= 56 {
            let byte = if self.at_marker {
                0
            } else if self.pos >= self.data.len() {
                self.eof = true;
                self.at_marker = true;
                0
            } else if self.data[self.pos] != 0xFF {
                self.pos += 1;
                self.data[self.pos - 1]
            } else {
                // 0xFF: fill bytes may repeat it; 0x00 after it means a data byte 0xFF,
                // anything else is a marker, left in place.
                let mut p = self.pos + 1;
                while p < self.data.len() && self.data[p] == 0xFF {
                    p += 1;
                }
                if p >= self.data.len() {
                    self.eof = true;
                    self.at_marker = true;
                    0
                } else if self.data[p] == 0 {
                    self.pos = p + 1;
                    0xFF
                } else {
                    self.at_marker = true;
                    0
                }
            };
            self.acc |= u64::from(byte) << (56 - self.nbits);
            self.nbits += 8;
        }
    }

    #[inline]
    pub(super) fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        if self.nbits < n {
            self.fill();
        }
        let v = (self.acc >> (64 - n)) as u32;
        self.acc <<= n;
        self.nbits -= n;
        v
    }

    #[inline]
    pub(super) fn bit(&mut self) -> bool {
        self.bits(1) != 0
    }

    pub(super) fn decode(&mut self, table: &Huffman) -> Result<u8, PreprocessError> {
        if self.nbits < 16 {
            self.fill();
        }
        let entry = table.fast[(self.acc >> (64 - LOOKAHEAD)) as usize];
        if entry != 0 {
            let len = u32::from(entry >> 8);
            self.acc <<= len;
            self.nbits -= len;
            return Ok(entry as u8);
        }
        let mut code = 0i32;
        for len in 1..=16 {
            code = (code << 1) | self.bits(1) as i32;
            if code <= table.maxcode[len] {
                let idx = code + table.valoffset[len];
                return table
                    .values
                    .get(idx as usize)
                    .copied()
                    .ok_or_else(|| corrupt("bad Huffman code"));
            }
        }
        Err(corrupt("bad Huffman code"))
    }

    /// `s` bits as a signed value (JPEG's EXTEND).
    #[inline]
    pub(super) fn receive_extend(&mut self, s: u8) -> Result<i32, PreprocessError> {
        if s == 0 {
            return Ok(0);
        }
        if s > 16 {
            return Err(corrupt("bad coefficient size"));
        }
        let s = u32::from(s);
        let v = self.bits(s) as i32;
        Ok(if v < (1 << (s - 1)) {
            v - (1 << s) + 1
        } else {
            v
        })
    }

    /// Drops the bit buffer and skips the restart marker that should follow.
    pub(super) fn restart(&mut self) {
        self.acc = 0;
        self.nbits = 0;
        // Skip anything up to the next marker; consume it if it is RSTn.
        let mut p = self.pos;
        while p + 1 < self.data.len()
            && !(self.data[p] == 0xFF && self.data[p + 1] != 0 && self.data[p + 1] != 0xFF)
        {
            p += 1;
        }
        if p + 1 < self.data.len() && (0xD0..=0xD7).contains(&self.data[p + 1]) {
            self.pos = p + 2;
            self.at_marker = false;
        } else {
            self.pos = p;
            self.at_marker = p + 1 < self.data.len();
            if !self.at_marker {
                self.eof = true;
                self.at_marker = true;
            }
        }
    }
}
