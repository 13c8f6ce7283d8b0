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
use ort::value::{Tensor, TensorRefMut};
use ove_core::graph_io as io;

use super::ort::{ort_err, take, values_f32, view};
use super::{DecoderInputs, Dims};
use crate::kv::KvShape;

/// Smallest capacity allocated (slots per row): short generations never grow.
const MIN_CAPACITY: usize = 256;

/// The cache buffers of one [`crate::kv::KvCache`] and the run options that make ONNX
/// Runtime write the presents into them.
pub(crate) struct InPlaceKv {
    rows: usize,
    capacity: usize,
    shape: KvShape,
    /// Per cache tensor (key 0, value 0, key 1, ...), the start of its `[rows, kvh,
    /// capacity, hd]` f32 buffer. The memory belongs to the tensors `options` holds as
    /// preallocated outputs, which live exactly as long as this struct.
    buffers: Vec<*mut f32>,
    options: RunOptions<HasSelectedOutputs>,
    /// The one-row cache a row-by-row step goes through (made on first use).
    scratch: Option<Box<InPlaceKv>>,
}

// The raw pointers are into memory `options` owns; nothing else aliases it.
unsafe impl Send for InPlaceKv {}

impl InPlaceKv {
    /// Zeroed buffers of `capacity` slots for `rows` rows; `present` names the graph's
    /// present outputs in cache order.
    fn new(shape: KvShape, rows: usize, capacity: usize, present: &[String]) -> Result<Self> {
        let dims = [rows, shape.kv_heads, capacity, shape.head_dim];
        let len: usize = dims.iter().product();
        let mut selector = OutputSelector::default();
        let mut buffers = Vec::with_capacity(present.len());
        for name in present {
            let mut t = ort_err(Tensor::<f32>::new(&Allocator::default(), dims))?;
            let (_, data) = ort_err(t.try_extract_tensor_mut::<f32>())?;
            if data.len() != len {
                bail!(
                    "ONNX Runtime allocated {} values for {name}, expected {len}",
                    data.len()
                );
            }
            data.fill(0.0);
            buffers.push(data.as_mut_ptr());
            selector = selector.preallocate(name.as_str(), t);
        }
        let options = ort_err(RunOptions::new())?.with_outputs(selector);
        Ok(Self {
            rows,
            capacity,
            shape,
            buffers,
            options,
            scratch: None,
        })
    }

    fn tensor_len(&self) -> usize {
        self.rows * self.shape.kv_heads * self.capacity * self.shape.head_dim
    }

    /// Cache tensor `i` as a slice.
    fn buffer(&mut self, i: usize) -> &mut [f32] {
        let len = self.tensor_len();
        // SAFETY: `buffers[i]` starts a live allocation of `len` f32 (see the field), and
        // `&mut self` makes this the only reference to it.
        unsafe { std::slice::from_raw_parts_mut(self.buffers[i], len) }
    }

    /// Copies the first `slots` slots of row `from_row` of `src` into row `to_row` of
    /// `self`, every cache tensor.
    fn copy_row_from(&mut self, to_row: usize, src: &mut InPlaceKv, from_row: usize, slots: usize) {
        let (kvh, hd) = (self.shape.kv_heads, self.shape.head_dim);
        let (dst_cap, src_cap) = (self.capacity, src.capacity);
        let src_len = src.tensor_len();
        for i in 0..self.buffers.len() {
            // SAFETY: as in `buffer`; `src` and `self` are distinct caches (`&mut` both), so
            // their allocations are distinct.
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
    let len = kv.tensor_len();
    for (name, &ptr) in past.iter().zip(&kv.buffers) {
        // SAFETY: as in `InPlaceKv::buffer`; the view lives for this call only, during which
        // ONNX Runtime alone touches the buffer (reading the past, writing the new slots
        // through the preallocated present output, the same memory).
        let data = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let t = ort_err(TensorRefMut::from_array_view_mut((
            cache_dims.clone(),
            data,
        )))?;
        inputs.push((Cow::Borrowed(name.as_str()), t.into()));
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
        kv.scratch = Some(Box::new(InPlaceKv::new(dims.kv, 1, kv.capacity, present)?));
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
            kv.copy_row_from(r, &mut scratch, 0, t);
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
