//! The KV cache of `decoder_ort.onnx`, written in place.
//!
//! `decoder.onnx` returns each step's cache as new tensors (`present = concat(past, new)`),
//! so every decoded token copies the whole cache and allocates it again. The fused graph's
//! GroupQueryAttention writes the new keys and values into its past buffer instead when
//! the past and present cache of a layer are the same memory: this module holds one
//! buffer per cache tensor, `[rows, kvh, capacity, hd]`, passes it as `past_*` and has ONNX
//! Runtime write `present_*` into it (a preallocated output), so a step moves only the new
//! slots. The capacity doubles when a step would pass it (one copy; amortised, rare), up
//! to the context bound.
//!
//! GroupQueryAttention takes several new slots per row only at batch 1 once a cache exists
//! (ONNX Runtime 1.32: "batch_size must be 1 when sequence_length > 1 and past context is
//! given"), which a batch's chunked prefill needs: such a step runs row by row through a
//! one-row scratch cache (its rows copied in and out; prefill only, decode steps never).

use std::borrow::Cow;

use anyhow::{bail, Result};
use ort::memory::Allocator;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{DynTensor, TensorElementType, TensorRefMut};
use ove_core::graph_io as io;

use super::ort::{ort_err, take, values_f32, view};
use super::{DecoderInputs, Dims};
use crate::kv::KvShape;

/// Smallest capacity allocated (slots per row): short generations never grow.
const MIN_CAPACITY: usize = 256;

/// The element type of a fused graph's cache (`ove export --kv-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KvElem {
    F32,
    F16,
}

impl KvElem {
    fn size(self) -> usize {
        match self {
            KvElem::F32 => 4,
            KvElem::F16 => 2,
        }
    }
    fn ort(self) -> TensorElementType {
        match self {
            KvElem::F32 => TensorElementType::Float32,
            KvElem::F16 => TensorElementType::Float16,
        }
    }
}

/// The cache buffers of one [`crate::kv::KvCache`] and the run options that make ONNX
/// Runtime write the presents into them.
pub(crate) struct InPlaceKv {
    rows: usize,
    capacity: usize,
    shape: KvShape,
    elem: KvElem,
    /// Per cache tensor (key 0, value 0, key 1, ...), the start of its `[rows, kvh,
    /// capacity, hd]` buffer of `elem`s. The memory belongs to the tensors `options` holds
    /// as preallocated outputs, which live exactly as long as this struct.
    buffers: Vec<*mut u8>,
    options: RunOptions<HasSelectedOutputs>,
    /// The one-row cache a row-by-row step goes through (made on first use).
    scratch: Option<Box<InPlaceKv>>,
}

// The raw pointers are into memory `options` owns; nothing else aliases it.
unsafe impl Send for InPlaceKv {}

impl InPlaceKv {
    /// Zeroed buffers of `capacity` slots for `rows` rows; `present` names the graph's
    /// present outputs in cache order.
    fn new(
        shape: KvShape,
        elem: KvElem,
        rows: usize,
        capacity: usize,
        present: &[String],
    ) -> Result<Self> {
        let dims = [rows, shape.kv_heads, capacity, shape.head_dim];
        let bytes = dims.iter().product::<usize>() * elem.size();
        let mut selector = OutputSelector::default();
        let mut buffers = Vec::with_capacity(present.len());
        for name in present {
            let mut t = ort_err(DynTensor::new(&Allocator::default(), elem.ort(), dims))?;
            let ptr = t.data_ptr_mut().cast::<u8>();
            if ptr.is_null() {
                bail!("ONNX Runtime allocated no memory for {name}");
            }
            // SAFETY: a fresh tensor of `dims` elements of `elem` (0.0 is all-zero bytes in
            // f32 and f16 alike).
            unsafe { std::ptr::write_bytes(ptr, 0, bytes) };
            buffers.push(ptr);
            selector = selector.preallocate(name.as_str(), t);
        }
        let options = ort_err(RunOptions::new())?.with_outputs(selector);
        Ok(Self {
            rows,
            capacity,
            shape,
            elem,
            buffers,
            options,
            scratch: None,
        })
    }

    /// Bytes of one cache tensor.
    fn tensor_bytes(&self) -> usize {
        self.rows * self.shape.kv_heads * self.capacity * self.shape.head_dim * self.elem.size()
    }

    /// Cache tensor `i` as bytes.
    fn buffer(&mut self, i: usize) -> &mut [u8] {
        let len = self.tensor_bytes();
        // SAFETY: `buffers[i]` starts a live allocation of `len` bytes (see the field), and
        // `&mut self` makes this the only reference to it.
        unsafe { std::slice::from_raw_parts_mut(self.buffers[i], len) }
    }

    /// Copies the first `slots` slots of row `from_row` of `src` into row `to_row` of
    /// `self`, every cache tensor.
    fn copy_row_from(&mut self, to_row: usize, src: &InPlaceKv, from_row: usize, slots: usize) {
        // `hd` in bytes: slots are copied as bytes.
        let (kvh, hd) = (self.shape.kv_heads, self.shape.head_dim * self.elem.size());
        let (dst_cap, src_cap) = (self.capacity, src.capacity);
        let src_len = src.tensor_bytes();
        for i in 0..self.buffers.len() {
            // SAFETY: as in `buffer`; `src` and `self` are distinct caches (`self` is
            // borrowed mutably), so their allocations are distinct and `src` is only read.
            let s = unsafe { std::slice::from_raw_parts(src.buffers[i], src_len) };
            let d = self.buffer(i);
            for h in 0..kvh {
                let so = ((from_row * kvh + h) * src_cap) * hd;
                let dst = ((to_row * kvh + h) * dst_cap) * hd;
                d[dst..dst + slots * hd].copy_from_slice(&s[so..so + slots * hd]);
            }
        }
    }
}

/// The capacity to allocate for `needed` slots: a power of two, at least
/// [`MIN_CAPACITY`], and at most `max_context` while that suffices. (Slots are not
/// positions: in a batch, the rows that finished early pad a slot every step, so a batch
/// can pass the context in slots while every row stays within it in positions.)
fn capacity_for(needed: usize, max_context: usize) -> usize {
    let c = needed.next_power_of_two().max(MIN_CAPACITY);
    if needed <= max_context {
        c.min(max_context)
    } else {
        c
    }
}

/// One step of `decoder_ort.onnx` on `cache` (made or grown as needed; `k` slots cached
/// per row), returning the logits. The cache's slot count is the caller's to advance.
#[allow(clippy::too_many_arguments)]
pub(super) fn step(
    session: &mut Session,
    dims: &Dims,
    elem: KvElem,
    present: &[String],
    past: &[String],
    max_context: usize,
    cache: &mut Option<Box<InPlaceKv>>,
    x: &DecoderInputs<'_>,
    k: usize,
) -> Result<Vec<f32>> {
    let (rows, s) = (x.batch, x.new_tokens());
    let needed = k + s;
    let grow = match cache.as_ref() {
        None => true,
        Some(c) => c.capacity < needed || c.rows != rows,
    };
    if grow {
        let mut fresh = Box::new(InPlaceKv::new(
            dims.kv,
            elem,
            rows,
            capacity_for(needed, max_context),
            present,
        )?);
        if let Some(old) = cache.as_mut() {
            if k > 0 {
                for r in 0..rows {
                    fresh.copy_row_from(r, old, r, k);
                }
            }
        }
        *cache = Some(fresh);
    }
    let kv = cache.as_mut().expect("made above");
    if rows > 1 && s > 1 && k > 0 {
        return row_by_row(session, dims, present, past, kv, x, k);
    }
    run(session, dims, past, kv, x)
}

/// One call with the cache buffers as both past and present.
fn run(
    session: &mut Session,
    dims: &Dims,
    past: &[String],
    kv: &mut InPlaceKv,
    x: &DecoderInputs<'_>,
) -> Result<Vec<f32>> {
    let (rows, s) = (x.batch, x.new_tokens());
    let k_total = x.attention_bias.len() / (rows * s);
    let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(4 + past.len());
    inputs.push((
        io::INPUTS_EMBEDS.into(),
        view(vec![rows * s, dims.hidden], x.inputs_embeds)?,
    ));
    inputs.push((
        io::POSITION_IDS.into(),
        view(vec![rows, s], x.position_ids)?,
    ));
    inputs.push((
        io::ATTENTION_BIAS.into(),
        view(vec![rows, s, k_total], x.attention_bias)?,
    ));
    inputs.push((
        io::LOGITS_INDEX.into(),
        view(vec![x.logits_index.len()], x.logits_index)?,
    ));
    let cache_dims = vec![rows, dims.kv.kv_heads, kv.capacity, dims.kv.head_dim];
    let len = cache_dims.iter().product::<usize>();
    for (name, &ptr) in past.iter().zip(&kv.buffers) {
        // SAFETY: as in `InPlaceKv::buffer` (`len` elements of `kv.elem`, aligned by ONNX
        // Runtime's allocator); the view lives for this call only, during which ONNX
        // Runtime alone touches the buffer (reading the past, writing the new slots through
        // the preallocated present output, the same memory).
        let value: SessionInputValue<'_> = match kv.elem {
            KvElem::F32 => {
                let data = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<f32>(), len) };
                ort_err(TensorRefMut::from_array_view_mut((
                    cache_dims.clone(),
                    data,
                )))?
                .into()
            }
            KvElem::F16 => {
                let data = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<half::f16>(), len) };
                ort_err(TensorRefMut::from_array_view_mut((
                    cache_dims.clone(),
                    data,
                )))?
                .into()
            }
        };
        inputs.push((Cow::Borrowed(name.as_str()), value));
    }
    let mut out = ort_err(session.run_with_options(inputs, &kv.options))
        .map_err(|e| e.context("ONNX Runtime failed running decoder_ort.onnx"))?;
    let (shape, logits) = values_f32(&take(&mut out, io::LOGITS)?, io::LOGITS)?;
    let want = [x.logits_index.len(), dims.vocab];
    if shape != want {
        bail!("decoder output logits has shape {shape:?}, expected {want:?}");
    }
    Ok(logits)
}

/// A step of several new slots in each of several rows over an existing cache: each row
/// alone through the one-row scratch cache.
fn row_by_row(
    session: &mut Session,
    dims: &Dims,
    present: &[String],
    past: &[String],
    kv: &mut InPlaceKv,
    x: &DecoderInputs<'_>,
    k: usize,
) -> Result<Vec<f32>> {
    let (rows, s) = (x.batch, x.new_tokens());
    let (h, v) = (dims.hidden, dims.vocab);
    let t = k + s;
    if kv
        .scratch
        .as_ref()
        .is_none_or(|c| c.capacity != kv.capacity)
    {
        kv.scratch = Some(Box::new(InPlaceKv::new(
            dims.kv,
            kv.elem,
            1,
            kv.capacity,
            present,
        )?));
    }
    let mut scratch = kv.scratch.take().expect("made above");
    let mut logits = vec![0.0f32; x.logits_index.len() * v];
    let result = (|| {
        for r in 0..rows {
            // This row's requested slots, as indices into its own S.
            let mine: Vec<(usize, i64)> = x
                .logits_index
                .iter()
                .enumerate()
                .filter(|&(_, &i)| (i as usize) / s == r)
                .map(|(j, &i)| (j, i - (r * s) as i64))
                .collect();
            let index: Vec<i64> = if mine.is_empty() {
                vec![0]
            } else {
                mine.iter().map(|&(_, i)| i).collect()
            };
            scratch.copy_row_from(0, kv, r, k);
            let one = DecoderInputs {
                batch: 1,
                inputs_embeds: &x.inputs_embeds[r * s * h..(r + 1) * s * h],
                position_ids: &x.position_ids[r * s..(r + 1) * s],
                attention_bias: &x.attention_bias[r * s * t..(r + 1) * s * t],
                logits_index: &index,
            };
            let out = run(session, dims, past, &mut scratch, &one)?;
            kv.copy_row_from(r, &scratch, 0, t);
            for (n, &(j, _)) in mine.iter().enumerate() {
                logits[j * v..(j + 1) * v].copy_from_slice(&out[n * v..(n + 1) * v]);
            }
        }
        Ok(logits)
    })();
    kv.scratch = Some(scratch);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_doubles_from_a_floor_and_stops_at_the_context() {
        assert_eq!(capacity_for(1, 4096), MIN_CAPACITY);
        assert_eq!(capacity_for(300, 4096), 512);
        assert_eq!(capacity_for(3000, 4096), 4096);
        assert_eq!(capacity_for(100, 128), 128);
        assert_eq!(capacity_for(512, 512), 512);
        // Padding slots of a batch may pass the context.
        assert_eq!(capacity_for(25, 24), MIN_CAPACITY);
        assert_eq!(capacity_for(600, 512), 1024);
    }
}
