//! The token embedding table (`embed_tokens.safetensors`), gathered in Rust.
//!
//! The table stays out of the decoder graph so that image embeddings can be spliced in
//! between the gather and the first layer without a second graph, and so that it can be
//! memory-mapped: only the rows of the tokens actually seen are ever paged in (the released
//! table is 151936 x 2560, 1.5 GB in f32).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::Dtype;

/// The tensor name docs/BUNDLE.md gives the table.
pub const EMBED_TENSOR: &str = "embed_tokens";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowType {
    F32,
    F16,
}

/// A memory-mapped `[V, H]` embedding table stored as f32 or f16.
pub struct Embeddings {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Byte offset of row 0 in the map.
    start: usize,
    vocab: usize,
    hidden: usize,
    row_type: RowType,
}

impl std::fmt::Debug for Embeddings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embeddings")
            .field("path", &self.path)
            .field("vocab", &self.vocab)
            .field("hidden", &self.hidden)
            .field("row_type", &self.row_type)
            .finish()
    }
}

impl Embeddings {
    /// Maps the file and checks that the table has `hidden` columns.
    pub fn open(path: &Path, hidden: usize) -> Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: read-only map of a file whose checksum was just verified; a file changed
        // under a running process is outside what any reader can defend against.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mapping {}", path.display()))?;
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| anyhow!("{}: not a valid safetensors file: {e:?}", path.display()))?;
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
        let (begin, end) = info.data_offsets;
        let start = 8 + header_len + begin;
        let elem = if row_type == RowType::F32 { 4 } else { 2 };
        if end - begin != vocab * hidden * elem || 8 + header_len + end > map.len() {
            bail!("{}: {EMBED_TENSOR} data is truncated", path.display());
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
            start,
            vocab,
            hidden,
            row_type,
        })
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Appends the rows of `ids` to `out` as f32, `[ids.len(), H]`.
    pub fn gather_into(&self, ids: &[i64], out: &mut Vec<f32>) -> Result<()> {
        out.reserve(ids.len() * self.hidden);
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
                    let b = &self.map[self.start + row * self.hidden * 4..][..self.hidden * 4];
                    out.extend(
                        b.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    );
                }
                RowType::F16 => {
                    let b = &self.map[self.start + row * self.hidden * 2..][..self.hidden * 2];
                    out.extend(
                        b.chunks_exact(2)
                            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
                    );
                }
            }
        }
        Ok(())
    }

    /// The rows of `ids` as a new `[ids.len(), H]` buffer.
    pub fn gather(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.gather_into(ids, &mut out)?;
        Ok(out)
    }
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
