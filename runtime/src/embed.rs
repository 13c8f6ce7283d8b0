//! The token embedding table (`embed_tokens.safetensors`), gathered in Rust.
//!
//! The table stays out of the decoder graph so that image embeddings can be spliced in
//! between the gather and the first layer without a second graph, and so that only the rows
//! of the tokens actually seen are ever read (the released table is 151936 x 2560, 1.5 GB in
//! f32).
//!
//! Rows are read with positioned reads, not through a memory map: a mapped row faults in
//! the whole page-cache folio it sits in, and a file read sequentially before (the bundle's
//! checksum, an export) is cached in large folios, so at the Qwen3-1.7B shape (a 1.24 GB f32
//! table) 280 gathered tokens held 148 MiB of the table resident, 10% of the process's peak
//! RSS. A read copies the row and maps nothing: the page cache is shared and reclaimable,
//! not this process's memory.
//!
//! `ove export --int4 --quantize-embeddings` stores the table in the
//! `com.microsoft::GatherBlockQuantized` layout instead (see [`QDATA_TENSOR`]): 4-bit codes,
//! one f32 scale per block of H and optional packed zero points. Only the gathered rows are
//! dequantized, with the quant crate's formula `(code - zero_point) * scale` (bit-exact with
//! `ove_quant::GatherBlockQuantizedWeight::gather`).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::Dtype;

/// The tensor name docs/BUNDLE.md gives the table.
pub const EMBED_TENSOR: &str = "embed_tokens";
/// Quantized table: uint8 `[V, H / 2]`, two 4-bit codes per byte, element `(v, h)` at flat
/// nibble `v * H + h`, low nibble first.
pub const QDATA_TENSOR: &str = "embed_tokens.qdata";
/// Quantized table: f32 `[V, ceil(H / block_size)]`.
pub const SCALES_TENSOR: &str = "embed_tokens.scales";
/// Quantized table, asymmetric only: uint8 `[V, ceil(blocks / 2)]`, two per byte, low
/// nibble first, each row padded to whole bytes. Absent: zero point 8.
pub const ZERO_POINTS_TENSOR: &str = "embed_tokens.zero_points";
/// safetensors metadata key naming the layout of a quantized table.
pub const META_FORMAT: &str = "format";
/// The value of [`META_FORMAT`] for the `GatherBlockQuantized` layout.
pub const FORMAT_GBQ: &str = "gatherblockquantized";
/// safetensors metadata keys of a quantized table.
pub const META_BITS: &str = "bits";
pub const META_BLOCK_SIZE: &str = "block_size";
pub const META_SYMMETRIC: &str = "symmetric";
/// Implicit zero point of a symmetric quantized table (the `MatMulNBits` convention).
const SYM_ZERO_POINT: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowType {
    F32,
    F16,
    /// 4-bit `GatherBlockQuantized` codes.
    Int4,
}

/// Byte offsets (in the file) of a quantized table's tensors and its block geometry.
#[derive(Debug, Clone, Copy)]
struct QuantLayout {
    scales: usize,
    zero_points: Option<usize>,
    block_size: usize,
    blocks: usize,
}

/// A `[V, H]` embedding table stored as f32, f16 or 4-bit blocks, its rows read from the
/// file as they are gathered.
pub struct Embeddings {
    path: PathBuf,
    file: File,
    /// Byte offset of row 0 in the file (of the codes, for a quantized table).
    start: usize,
    vocab: usize,
    hidden: usize,
    row_type: RowType,
    quant: Option<QuantLayout>,
}

impl std::fmt::Debug for Embeddings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embeddings")
            .field("path", &self.path)
            .field("vocab", &self.vocab)
            .field("hidden", &self.hidden)
            .field("row_type", &self.row_type)
            .field("block_size", &self.quant.map(|q| q.block_size))
            .finish()
    }
}

/// Start of a tensor's data in the file, its extent checked against the file and `bytes`.
fn data_range(
    path: &Path,
    header_len: usize,
    info: &safetensors::tensor::TensorInfo,
    name: &str,
    bytes: usize,
    file_len: usize,
) -> Result<usize> {
    let (begin, end) = info.data_offsets;
    if end - begin != bytes || 8 + header_len + end > file_len {
        bail!("{}: {name} data is truncated", path.display());
    }
    Ok(8 + header_len + begin)
}

impl Embeddings {
    /// Opens the file, reads its header and checks that the table has `hidden` columns.
    pub fn open(path: &Path, hidden: usize) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // The header only: the map is dropped when `open` returns (see the module docs).
        // SAFETY: read-only map of a file whose checksum was just verified; a file changed
        // under a running process is outside what any reader can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mapping {}", path.display()))?;
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| anyhow!("{}: not a valid safetensors file: {e:?}", path.display()))?;
        let file_len = map.len();
        drop(map);
        if meta.info(EMBED_TENSOR).is_none() && meta.info(QDATA_TENSOR).is_some() {
            return Self::open_quantized(path, file, file_len, header_len, &meta, hidden);
        }
        let info = meta
            .info(EMBED_TENSOR)
            .ok_or_else(|| anyhow!("{}: no tensor {EMBED_TENSOR:?}", path.display()))?;
        let row_type = match info.dtype {
            Dtype::F32 => RowType::F32,
            Dtype::F16 => RowType::F16,
            other => bail!(
                "{}: {EMBED_TENSOR} is {other:?}; this runtime reads f32 or f16",
                path.display()
            ),
        };
        let [vocab, h] = info.shape[..] else {
            bail!(
                "{}: {EMBED_TENSOR} has shape {:?}, expected [vocab, {hidden}]",
                path.display(),
                info.shape
            );
        };
        if h != hidden {
            bail!(
                "{}: {EMBED_TENSOR} has {h} columns, the model's hidden size is {hidden}",
                path.display()
            );
        }
        let elem = if row_type == RowType::F32 { 4 } else { 2 };
        let start = data_range(
            path,
            header_len,
            info,
            EMBED_TENSOR,
            vocab * hidden * elem,
            file_len,
        )?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            start,
            vocab,
            hidden,
            row_type,
            quant: None,
        })
    }

    /// The `GatherBlockQuantized` layout: codes, scales, optional zero points, with the
    /// block size (and the format) in the file's metadata.
    fn open_quantized(
        path: &Path,
        file: File,
        file_len: usize,
        header_len: usize,
        meta: &safetensors::tensor::Metadata,
        hidden: usize,
    ) -> Result<Self> {
        let p = path.display();
        let md = meta.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            md.get(k)
                .map(String::as_str)
                .ok_or_else(|| anyhow!("{p}: quantized embedding table without {k:?} metadata"))
        };
        let format = get(META_FORMAT)?;
        if format != FORMAT_GBQ {
            bail!("{p}: embedding table format {format:?}; this runtime reads {FORMAT_GBQ:?}");
        }
        if let Some(bits) = md.get(META_BITS) {
            if bits != "4" {
                bail!("{p}: {bits}-bit embedding table; this runtime reads 4-bit");
            }
        }
        let block_size: usize = get(META_BLOCK_SIZE)?
            .parse()
            .map_err(|e| anyhow!("{p}: block_size metadata: {e}"))?;
        if block_size == 0 {
            bail!("{p}: block_size metadata is 0");
        }
        let tensor = |name: &str, dtype: Dtype| {
            let info = meta
                .info(name)
                .ok_or_else(|| anyhow!("{p}: no tensor {name:?}"))?;
            if info.dtype != dtype {
                bail!("{p}: {name} is {:?}, expected {dtype:?}", info.dtype);
            }
            let [rows, cols] = info.shape[..] else {
                bail!("{p}: {name} has shape {:?}, expected 2-D", info.shape);
            };
            Ok((info, rows, cols))
        };
        let (qinfo, vocab, half) = tensor(QDATA_TENSOR, Dtype::U8)?;
        if half * 2 != hidden {
            bail!(
                "{p}: {QDATA_TENSOR} holds {} columns, the model's hidden size is {hidden}",
                half * 2
            );
        }
        let blocks = hidden.div_ceil(block_size);
        let (sinfo, srows, scols) = tensor(SCALES_TENSOR, Dtype::F32)?;
        if (srows, scols) != (vocab, blocks) {
            bail!("{p}: {SCALES_TENSOR} has shape [{srows}, {scols}], expected [{vocab}, {blocks}] for block size {block_size}");
        }
        let start = data_range(
            path,
            header_len,
            qinfo,
            QDATA_TENSOR,
            vocab * half,
            file_len,
        )?;
        let scales = data_range(
            path,
            header_len,
            sinfo,
            SCALES_TENSOR,
            vocab * blocks * 4,
            file_len,
        )?;
        let zero_points = match meta.info(ZERO_POINTS_TENSOR) {
            None => None,
            Some(_) => {
                let (zinfo, zrows, zcols) = tensor(ZERO_POINTS_TENSOR, Dtype::U8)?;
                let want = blocks.div_ceil(2);
                if (zrows, zcols) != (vocab, want) {
                    bail!("{p}: {ZERO_POINTS_TENSOR} has shape [{zrows}, {zcols}], expected [{vocab}, {want}]");
                }
                Some(data_range(
                    path,
                    header_len,
                    zinfo,
                    ZERO_POINTS_TENSOR,
                    vocab * want,
                    file_len,
                )?)
            }
        };
        if let Some(sym) = md.get(META_SYMMETRIC) {
            if (sym == "true") != zero_points.is_none() {
                bail!(
                    "{p}: symmetric = {sym} but zero points are {}",
                    if zero_points.is_some() {
                        "present"
                    } else {
                        "absent"
                    }
                );
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            start,
            vocab,
            hidden,
            row_type: RowType::Int4,
            quant: Some(QuantLayout {
                scales,
                zero_points,
                block_size,
                blocks,
            }),
        })
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }
    pub fn hidden(&self) -> usize {
        self.hidden
    }
    /// The block size of a quantized (`GatherBlockQuantized`) table; `None` for a float one.
    pub fn quantized_block_size(&self) -> Option<usize> {
        self.quant.map(|q| q.block_size)
    }

    /// Appends the rows of `ids` to `out` as f32, `[ids.len(), H]`.
    pub fn gather_into(&self, ids: &[i64], out: &mut Vec<f32>) -> Result<()> {
        out.reserve(ids.len() * self.hidden);
        let mut buf = Vec::new();
        for &id in ids {
            if id < 0 || id as usize >= self.vocab {
                bail!(
                    "token id {id} is outside the embedding table (0..{})",
                    self.vocab
                );
            }
            let row = id as usize;
            match self.row_type {
                RowType::F32 => {
                    let b = self.read(
                        self.start + row * self.hidden * 4,
                        self.hidden * 4,
                        &mut buf,
                    )?;
                    out.extend(
                        b.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    );
                }
                RowType::F16 => {
                    let b = self.read(
                        self.start + row * self.hidden * 2,
                        self.hidden * 2,
                        &mut buf,
                    )?;
                    out.extend(
                        b.chunks_exact(2)
                            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
                    );
                }
                RowType::Int4 => self.dequantize_row(row, out, &mut buf)?,
            }
        }
        Ok(())
    }

    /// Appends row `row` of a quantized table: `(code - zero_point) * scale` per element,
    /// the subtraction exact in integers, as `GatherBlockQuantized` (and `ove-quant`) do.
    fn dequantize_row(&self, row: usize, out: &mut Vec<f32>, buf: &mut Vec<u8>) -> Result<()> {
        let q = self.quant.expect("quantized layout");
        let h = self.hidden;
        let zp_stride = q.blocks.div_ceil(2);
        // One buffer: the row's codes, then its scales, then its zero points.
        let (nc, ns) = (h / 2, q.blocks * 4);
        let nz = if q.zero_points.is_some() {
            zp_stride
        } else {
            0
        };
        buf.resize(nc + ns + nz, 0);
        let (codes, rest) = buf.split_at_mut(nc);
        let (scales, zps) = rest.split_at_mut(ns);
        self.read_exact(self.start + row * h / 2, codes)?;
        self.read_exact(q.scales + row * q.blocks * 4, scales)?;
        let zps = match q.zero_points {
            Some(z) => {
                self.read_exact(z + row * zp_stride, zps)?;
                Some(&*zps)
            }
            None => None,
        };
        let (codes, scales) = (&*codes, &*scales);
        for blk in 0..q.blocks {
            let s = &scales[blk * 4..blk * 4 + 4];
            let scale = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            let zp = match zps {
                Some(z) => (z[blk / 2] >> (4 * (blk % 2))) & 0x0F,
                None => SYM_ZERO_POINT,
            };
            let zp = i32::from(zp);
            let end = ((blk + 1) * q.block_size).min(h);
            out.extend((blk * q.block_size..end).map(|c| {
                // H is even, so a row starts on a byte: column c is nibble c of the row.
                let code = (codes[c / 2] >> (4 * (c % 2))) & 0x0F;
                (i32::from(code) - zp) as f32 * scale
            }));
        }
        Ok(())
    }

    /// `len` bytes of the file at `offset`, read into `buf`.
    fn read<'b>(&self, offset: usize, len: usize, buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
        buf.resize(len, 0);
        self.read_exact(offset, buf)?;
        Ok(buf)
    }

    /// Fills `buf` from the file at `offset` (a positioned read: no shared cursor, no map).
    fn read_exact(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        read_at(&self.file, buf, offset as u64)
            .with_context(|| format!("reading {} at byte {offset}", self.path.display()))
    }

    /// The rows of `ids` as a new `[ids.len(), H]` buffer.
    pub fn gather(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.gather_into(ids, &mut out)?;
        Ok(out)
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Replaces the rows of `embeds` (`[ids.len(), H]`) at the image-pad positions by the image
/// embeddings, image after image in prompt order.
///
/// Each image must fill exactly one run of consecutive pads: a prompt with a different
/// number of runs, or a run of another length, is refused rather than silently truncated.
pub fn splice_images(
    ids: &[i64],
    embeds: &mut [f32],
    hidden: usize,
    image_pad: i64,
    images: &[&[f32]],
) -> Result<()> {
    let runs = pad_runs(ids, image_pad);
    if runs.len() != images.len() {
        bail!(
            "the prompt has {} image placeholder(s) ({} image-pad tokens) but {} image(s) were given",
            runs.len(),
            runs.iter().map(|r| r.1).sum::<usize>(),
            images.len()
        );
    }
    for (i, ((start, len), img)) in runs.iter().zip(images).enumerate() {
        if img.len() != len * hidden {
            bail!(
                "image {} has {} embedding rows but its placeholder in the prompt has {len} image-pad tokens",
                i + 1,
                img.len() / hidden.max(1)
            );
        }
        embeds[start * hidden..(start + len) * hidden].copy_from_slice(img);
    }
    Ok(())
}

/// `(start, length)` of each run of consecutive `image_pad` ids.
pub fn pad_runs(ids: &[i64], image_pad: i64) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, &t) in ids.iter().enumerate() {
        if t != image_pad {
            continue;
        }
        match runs.last_mut() {
            Some((s, n)) if *s + *n == i => *n += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn write_table(dir: &Path, f16: bool) -> PathBuf {
        use ove_core::tensor_file::{write_safetensors, Tensor};
        let data: Vec<f32> = (0..12).map(|x| x as f32 * 0.5).collect();
        let t = if f16 {
            Tensor::F16 {
                shape: vec![4, 3],
                data: data.iter().map(|&x| half::f16::from_f32(x)).collect(),
            }
        } else {
            Tensor::f32(vec![4, 3], data)
        };
        let p = dir.join(if f16 {
            "e16.safetensors"
        } else {
            "e32.safetensors"
        });
        write_safetensors(&p, &BTreeMap::from([(EMBED_TENSOR.to_string(), t)])).unwrap();
        p
    }

    #[test]
    fn gathers_f32_and_f16_rows() {
        let dir = tempfile::tempdir().unwrap();
        for f16 in [false, true] {
            let e = Embeddings::open(&write_table(dir.path(), f16), 3).unwrap();
            assert_eq!(e.vocab(), 4);
            assert_eq!(
                e.gather(&[2, 0]).unwrap(),
                vec![3.0, 3.5, 4.0, 0.0, 0.5, 1.0]
            );
            assert!(e.gather(&[4]).unwrap_err().to_string().contains("outside"));
            assert!(e.gather(&[-1]).is_err());
        }
        let p = write_table(dir.path(), false);
        assert!(Embeddings::open(&p, 5)
            .unwrap_err()
            .to_string()
            .contains("hidden size"));
    }

    /// Gathering reads rows; it keeps no mapping of the table (whose pages would count in
    /// this process's memory, whole folios at a time).
    #[cfg(target_os = "linux")]
    #[test]
    fn gathered_rows_leave_the_table_unmapped() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_table(dir.path(), false).canonicalize().unwrap();
        let e = Embeddings::open(&p, 3).unwrap();
        assert_eq!(e.gather(&[3]).unwrap(), vec![4.5, 5.0, 5.5]);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let name = p.to_str().unwrap();
        assert!(!maps.lines().any(|l| l.ends_with(name)), "{name} is mapped");
        drop(e);
    }

    #[test]
    fn images_replace_pads_in_order() {
        let ids = [1, 9, 9, 2, 9, 9, 3];
        let mut e: Vec<f32> = vec![0.0; ids.len()];
        let a = [10.0, 11.0];
        let b = [20.0, 21.0];
        splice_images(&ids, &mut e, 1, 9, &[&a, &b]).unwrap();
        assert_eq!(e, vec![0.0, 10.0, 11.0, 0.0, 20.0, 21.0, 0.0]);
    }

    #[test]
    fn image_count_mismatch_is_an_error() {
        let ids = [1, 9, 9, 2];
        let mut e = vec![0.0; 4];
        let err = splice_images(&ids, &mut e, 1, 9, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 image placeholder(s)") && err.contains("0 image(s)"),
            "{err}"
        );
        let err = splice_images(&ids, &mut e, 1, 9, &[&[1.0, 2.0, 3.0]])
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 embedding rows"), "{err}");
        assert_eq!(pad_runs(&[9, 9, 1, 9], 9), vec![(0, 2), (3, 1)]);
    }
}
