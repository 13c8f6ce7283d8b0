//! Checkpoint tensors -> graph initializers, one tensor at a time.
//!
//! Each tensor is read from the memory-mapped checkpoint, converted (and transposed for
//! MatMul) straight into the bundle dtype and written out before the next is touched, so
//! the export's memory stays bounded by the largest single tensor.

use std::cell::RefCell;
use std::collections::HashSet;

use anyhow::{bail, Result};
use half::{bf16, f16};
use indicatif::ProgressBar;
use ove_core::checkpoint::Checkpoint;
use ove_core::onnx_proto::data_type;
use safetensors::Dtype as StDtype;

use crate::graph::GraphBuilder;
use crate::Dtype;

/// Reads checkpoint tensors for the graph builders, counts them on the progress bar and
/// remembers which were read, so that a tensor nothing read can be reported
/// ([`Weights::unused`]): a checkpoint with tensors the graphs do not use is not the model
/// config.json describes, and exporting it silently would drop trained weights.
pub struct Weights<'a> {
    pub ck: &'a Checkpoint,
    pub dtype: Dtype,
    pub progress: ProgressBar,
    used: RefCell<HashSet<String>>,
}

/// A checkpoint tensor used as the weight of a Linear layer: `y = x W^T`.
pub struct LinearWeight<'a> {
    /// Tensor name in the checkpoint, e.g. `visual.blocks.0.attn.qkv.weight`.
    pub name: &'a str,
    pub out_dim: usize,
    pub in_dim: usize,
    /// Shape on disk; `[out_dim, in_dim]` except for the patch-embedding convolution,
    /// whose `[D, C, (t,) p, p]` kernel flattens to `[D, patch_dim]`.
    pub stored_shape: Vec<usize>,
}

impl<'a> LinearWeight<'a> {
    pub fn new(name: &'a str, out_dim: usize, in_dim: usize) -> Self {
        Self {
            name,
            out_dim,
            in_dim,
            stored_shape: vec![out_dim, in_dim],
        }
    }
}

impl<'a> Weights<'a> {
    pub fn new(ck: &'a Checkpoint, dtype: Dtype, progress: ProgressBar) -> Self {
        Self {
            ck,
            dtype,
            progress,
            used: RefCell::default(),
        }
    }

    /// The checkpoint's tensors no graph has read so far, sorted.
    pub fn unused(&self) -> Vec<&'a str> {
        let used = self.used.borrow();
        self.ck.unused_tensors(|n| used.contains(n))
    }

    /// Checks a tensor's presence and shape; the error names the tensor, the checkpoint
    /// and both shapes.
    fn check(&self, name: &str, shape: &[usize]) -> Result<StDtype> {
        let info = self.ck.info(name).map_err(|_| {
            anyhow::anyhow!(
                "checkpoint {}: tensor {name} is missing (config.json implies it)",
                self.ck.dir.display()
            )
        })?;
        if info.shape != shape {
            bail!(
                "checkpoint {}: tensor {name} has shape {:?}, expected {:?} from config.json",
                self.ck.dir.display(),
                info.shape,
                shape
            );
        }
        tracing::debug!(tensor = name, shape = ?shape, dtype = ?info.dtype, "reading");
        self.used.borrow_mut().insert(name.to_string());
        match info.dtype {
            StDtype::F32 | StDtype::F16 | StDtype::BF16 => Ok(info.dtype),
            other => bail!(
                "checkpoint {}: tensor {name} has dtype {other:?}; only f32, f16 and bf16 are supported",
                self.ck.dir.display()
            ),
        }
    }

    /// A tensor decoded to f32 values (small tensors: norms, biases, class embeddings).
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.check(name, shape)?;
        let v = self.ck.f32(name, shape)?;
        self.release(name);
        self.progress.inc(1);
        Ok(v)
    }

    /// Tells the kernel this process is done with a tensor's pages of the memory-mapped
    /// checkpoint. Without it every page read stays mapped and resident, so the export's
    /// RSS would grow to the whole checkpoint's size instead of the largest tensor's.
    fn release(&self, name: &str) {
        if let Ok(raw) = self.ck.raw(name) {
            release_pages(raw);
        }
    }

    /// A small tensor kept in f32 whatever the bundle dtype (norm weights, biases: a few
    /// KB that f16 would only make less accurate), stored with the graph shape `dims`.
    pub fn vector(
        &self,
        g: &mut GraphBuilder,
        name: &str,
        shape: &[usize],
        dims: &[usize],
    ) -> Result<String> {
        let v = self.f32(name, shape)?;
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        g.initializer(name, data_type::FLOAT, dims, &bytes)
    }

    /// A Linear weight as the `[in, out]` right-hand side of a MatMul, in the bundle
    /// dtype; f16 weights are Cast to f32 in the graph so activations stay f32.
    pub fn matmul_rhs(&self, g: &mut GraphBuilder, w: &LinearWeight) -> Result<String> {
        if g.reuse_shared(w.name) {
            return Ok(self.to_f32(g, w.name));
        }
        let (bytes, elem) = self.transposed(w)?;
        let init = g.initializer(w.name, elem, &[w.in_dim, w.out_dim], &bytes)?;
        drop(bytes);
        Ok(self.to_f32(g, &init))
    }

    /// The weights `parts` (same `in_dim`) side by side as one `[in, sum of out]` right-hand
    /// side called `name`, in the bundle dtype (cast to f32 like [`Self::matmul_rhs`]).
    pub fn matmul_rhs_fused(
        &self,
        g: &mut GraphBuilder,
        name: &str,
        parts: &[LinearWeight],
    ) -> Result<String> {
        if g.reuse_shared(name) {
            return Ok(self.to_f32(g, name));
        }
        let in_dim = parts.first().map_or(0, |p| p.in_dim);
        if parts.iter().any(|p| p.in_dim != in_dim) {
            bail!("fused weight {name}: its parts take inputs of different widths");
        }
        let es = self.dtype_size();
        let row: usize = parts.iter().map(|p| p.out_dim * es).sum();
        let mut out = vec![0u8; in_dim * row];
        let mut col = 0;
        for p in parts {
            let (bytes, _) = self.transposed(p)?;
            let w = p.out_dim * es;
            for (dst, src) in out.chunks_exact_mut(row).zip(bytes.chunks_exact(w)) {
                dst[col..col + w].copy_from_slice(src);
            }
            col += w;
        }
        let out_dim = row / es;
        let init = g.initializer(name, self.elem_type(), &[in_dim, out_dim], &out)?;
        drop(out);
        Ok(self.to_f32(g, &init))
    }

    /// Casts an initializer in the bundle dtype to f32 (nothing for f32 bundles).
    pub fn to_f32(&self, g: &mut GraphBuilder, value: &str) -> String {
        match self.dtype {
            Dtype::F32 => value.to_string(),
            Dtype::F16 => g.cast(value, data_type::FLOAT),
        }
    }

    /// The `[out, in]` weight transposed to `[in, out]` bytes in the bundle dtype.
    pub fn transposed(&self, w: &LinearWeight) -> Result<(Vec<u8>, i32)> {
        let src = self.check(w.name, &w.stored_shape)?;
        if w.stored_shape.iter().product::<usize>() != w.out_dim * w.in_dim
            || w.stored_shape[0] != w.out_dim
        {
            bail!(
                "tensor {}: shape {:?} does not flatten to [{}, {}]",
                w.name,
                w.stored_shape,
                w.out_dim,
                w.in_dim
            );
        }
        let raw = self.ck.raw(w.name)?;
        let row_bytes = w.in_dim * decode(src).0;
        // Source rows are done with once their tile is written: releasing them as the
        // transpose goes keeps only the output buffer resident (lm_head: 0.8 GB less).
        let out = transpose_convert_with(raw, src, w.out_dim, w.in_dim, self.dtype, |r| {
            release_pages(&raw[r.start * row_bytes..r.end * row_bytes])
        });
        self.progress.inc(1);
        Ok((out, self.elem_type()))
    }

    /// A tensor's bytes in the bundle dtype, untransposed (the embedding table).
    pub fn converted(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>> {
        let src = self.check(name, shape)?;
        let raw = self.ck.raw(name)?;
        let es = decode(src).0;
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n * self.dtype_size());
        // In chunks, each released once converted (the embedding table: 0.8 GB less).
        for chunk in raw.chunks(CONVERT_CHUNK * es) {
            out.extend(transpose_convert(
                chunk,
                src,
                1,
                chunk.len() / es,
                self.dtype,
            ));
            release_pages(chunk);
        }
        self.progress.inc(1);
        Ok(out)
    }

    fn dtype_size(&self) -> usize {
        match self.dtype {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// ONNX element type of weights stored in the bundle dtype.
    pub fn elem_type(&self) -> i32 {
        match self.dtype {
            Dtype::F32 => data_type::FLOAT,
            Dtype::F16 => data_type::FLOAT16,
        }
    }
}

/// `madvise(MADV_DONTNEED)` over the pages spanning `bytes`, a slice of a read-only file
/// mapping: the pages leave this process's resident set and are read again from the file
/// (page cache) if touched later, so the contents seen through the slice never change.
#[cfg(unix)]
fn release_pages(bytes: &[u8]) {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return,
    };
    let start = bytes.as_ptr() as usize;
    let begin = start / page * page;
    let end = (start + bytes.len()).div_ceil(page) * page;
    if bytes.is_empty() {
        return;
    }
    // SAFETY: [begin, end) lies within the mapping that holds `bytes` (mappings are
    // page-granular), and MADV_DONTNEED on a shared read-only file mapping only drops
    // this process's page-table entries; the data stays in the file. Errors are ignored:
    // the advice is an optimisation.
    unsafe {
        libc::madvise(begin as *mut libc::c_void, end - begin, libc::MADV_DONTNEED);
    }
}

#[cfg(not(unix))]
fn release_pages(_bytes: &[u8]) {}

fn decode(src: StDtype) -> (usize, fn(&[u8]) -> f32) {
    match src {
        StDtype::F32 => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        StDtype::F16 => (2, |b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
        _ => (2, |b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
    }
}

/// Converts a row-major `[rows, cols]` tensor of dtype `src` to `[cols, rows]` little-endian
/// bytes of `out` (with `rows == 1` this is a plain conversion). Works in 64x64 tiles so
/// that both the reads and the writes stay in cache for large matrices.
pub fn transpose_convert(
    raw: &[u8],
    src: StDtype,
    rows: usize,
    cols: usize,
    out: Dtype,
) -> Vec<u8> {
    transpose_convert_with(raw, src, rows, cols, out, |_| {})
}

/// Values converted per chunk by [`Weights::converted`].
const CONVERT_CHUNK: usize = 1 << 22;

/// [`transpose_convert`], calling `done(rows)` for each range of source rows that will not
/// be read again.
fn transpose_convert_with(
    raw: &[u8],
    src: StDtype,
    rows: usize,
    cols: usize,
    out: Dtype,
    mut done: impl FnMut(std::ops::Range<usize>),
) -> Vec<u8> {
    let (es, read) = decode(src);
    let os = match out {
        Dtype::F32 => 4,
        Dtype::F16 => 2,
    };
    let mut buf = vec![0u8; rows * cols * os];
    const TILE: usize = 64;
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in j0..(j0 + TILE).min(cols) {
                    let x = read(&raw[(i * cols + j) * es..]);
                    let at = (j * rows + i) * os;
                    match out {
                        Dtype::F32 => buf[at..at + 4].copy_from_slice(&x.to_le_bytes()),
                        Dtype::F16 => {
                            buf[at..at + 2].copy_from_slice(&f16::from_f32(x).to_le_bytes())
                        }
                    }
                }
            }
        }
        done(i0..(i0 + TILE).min(rows));
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_and_converts() {
        let v: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = transpose_convert(&raw, StDtype::F32, 2, 3, Dtype::F32);
        let back: Vec<f32> = t
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let raw16: Vec<u8> = v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect();
        let t = transpose_convert(&raw16, StDtype::BF16, 2, 3, Dtype::F16);
        let back: Vec<f32> = t
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        assert_eq!(back, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
