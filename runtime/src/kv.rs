//! The decoder's key/value cache, carried from one step to the next.
//!
//! Each step's `present_key.{l}` / `present_value.{l}` (`[B, kvh, K+S, hd]`; `[kvh, K+S,
//! hd]` in the unbatched graphs of schema <= 3) become the next step's `past_key.{l}` /
//! `past_value.{l}`, so a prompt is run once and every generated token costs one step. The
//! tensors stay in the backend's own type (an ONNX Runtime value, a tract tensor) so that
//! nothing is copied between steps.
//!
//! A cache holds `rows` sequences with the same number of slots each; which slots a row
//! may attend to is the business of the attention bias ([`crate::mask::BatchMask`]).

use ove_core::graph_io as io;

/// The most sequences one decoder call takes (a page's line crops read by the decoder, a
/// batch of requests); more are decoded in groups of this many.
pub const MAX_DECODER_ROWS: usize = 16;

/// Geometry of the cache, from the manifest's text config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Whether the decoder graph has the leading batch axis (`graphs.decoder_batch`).
    pub batched: bool,
}

impl KvShape {
    /// Shape of one layer's key (or value) tensor holding `len` tokens of one sequence.
    pub fn dims(&self, len: usize) -> [usize; 3] {
        [self.kv_heads, len, self.head_dim]
    }
    /// Shape of one layer's key (or value) tensor as the graph takes it: `rows` sequences
    /// of `len` slots (`[rows, kvh, len, hd]`), or `[kvh, len, hd]` for an unbatched graph
    /// (one row).
    pub fn tensor_dims(&self, rows: usize, len: usize) -> Vec<usize> {
        if self.batched {
            vec![rows, self.kv_heads, len, self.head_dim]
        } else {
            self.dims(len).to_vec()
        }
    }
    /// Bytes of the whole cache at `len` tokens (keys and values, all layers, f32).
    pub fn bytes(&self, len: usize) -> usize {
        2 * self.layers * self.kv_heads * self.head_dim * len * 4
    }
}

/// Input names `past_key.{l}`, `past_value.{l}` and output names `present_*`, in the order
/// the cache stores them: key 0, value 0, key 1, value 1, ...
pub fn tensor_names(layers: usize) -> (Vec<String>, Vec<String>) {
    let mut past = Vec::with_capacity(2 * layers);
    let mut present = Vec::with_capacity(2 * layers);
    for l in 0..layers {
        past.push(io::past_key(l));
        past.push(io::past_value(l));
        present.push(io::present_key(l));
        present.push(io::present_value(l));
    }
    (past, present)
}

/// The tensors of a cache, in the representation of the backend that made them.
pub(crate) enum KvStore {
    /// Nothing cached yet: the backend feeds zero-length tensors.
    Empty,
    #[cfg(feature = "tract")]
    Tract(Vec<tract_onnx::prelude::TValue>),
    #[cfg(feature = "ort")]
    Ort(Vec<::ort::value::DynValue>),
    /// `decoder_ort.onnx`'s buffers, written in place ([`crate::backend::ort_kv`]).
    #[cfg(feature = "ort")]
    OrtInPlace(Box<crate::backend::ort_kv::InPlaceKv>),
}

/// The cache of one sequence, or of a batch of `rows` sequences with `len` slots each.
/// Made empty by [`KvCache::new`] / [`KvCache::with_rows`], filled by the backend.
pub struct KvCache {
    pub(crate) shape: KvShape,
    pub(crate) rows: usize,
    pub(crate) len: usize,
    pub(crate) store: KvStore,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("shape", &self.shape)
            .field("rows", &self.rows)
            .field("len", &self.len)
            .finish()
    }
}

impl KvCache {
    /// The cache of one sequence.
    pub fn new(shape: KvShape) -> Self {
        Self::with_rows(shape, 1)
    }

    /// The cache of `rows` sequences decoded together (more than one needs a batched graph).
    pub fn with_rows(shape: KvShape, rows: usize) -> Self {
        Self {
            shape,
            rows,
            len: 0,
            store: KvStore::Empty,
        }
    }

    /// Sequences in this cache.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Slots cached so far per row (the `K` of the next step).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn shape(&self) -> KvShape {
        self.shape
    }

    /// Forgets everything (the next step starts a new sequence).
    pub fn clear(&mut self) {
        self.len = 0;
        self.store = KvStore::Empty;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_interleave_keys_and_values() {
        let (past, present) = tensor_names(2);
        assert_eq!(
            past,
            ["past_key.0", "past_value.0", "past_key.1", "past_value.1"]
        );
        assert_eq!(present[3], "present_value.1");
    }

    #[test]
    fn geometry() {
        let s = KvShape {
            layers: 36,
            kv_heads: 8,
            head_dim: 128,
            batched: true,
        };
        assert_eq!(s.dims(7), [8, 7, 128]);
        assert_eq!(s.tensor_dims(3, 7), [3, 8, 7, 128]);
        let old = KvShape {
            batched: false,
            ..s
        };
        assert_eq!(old.tensor_dims(1, 7), [8, 7, 128]);
        // 4B model: 288 KiB per token.
        assert_eq!(s.bytes(1), 294_912);
        let mut c = KvCache::new(s);
        assert!(c.is_empty());
        c.len = 3;
        c.clear();
        assert_eq!(c.len(), 0);
    }
}
