//! The inference engines that run a bundle's two graphs.
//!
//! Both implement [`Backend`]: one call of vision.onnx per image, one call of decoder.onnx
//! per prefill chunk or generated token, with the KV cache held in the engine's own tensor
//! type. Which engines exist is decided by cargo features (`ort`, `tract`); which one runs
//! is decided at start-up by [`BackendChoice`].

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Result};
use ove_core::manifest::Manifest;

use crate::bundle::Bundle;
use crate::kv::{KvCache, KvShape};

#[cfg(feature = "ort")]
pub mod ort;
#[cfg(feature = "ort")]
pub(crate) mod ort_kv;
#[cfg(feature = "ort")]
mod ort_mem;
#[cfg(feature = "tract")]
pub mod tract;
#[cfg(feature = "tract")]
mod tract_cache;

/// An engine that is running a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// ONNX Runtime, loaded from a shared library at run time: the fast path.
    Ort,
    /// tract, compiled in: slower, but needs nothing installed.
    Tract,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Ort => "ort",
            BackendKind::Tract => "tract",
        })
    }
}

/// Which engine the user asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// ONNX Runtime when its library is found (and this build has it), else tract.
    #[default]
    Auto,
    Ort,
    Tract,
}

impl FromStr for BackendChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => BackendChoice::Auto,
            "ort" | "onnxruntime" => BackendChoice::Ort,
            "tract" => BackendChoice::Tract,
            other => bail!("unknown backend {other:?} (auto, ort or tract)"),
        })
    }
}

/// ONNX Runtime's graph optimization level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OrtOptimization {
    Disable,
    Basic,
    Extended,
    /// Everything, layout transforms included (ONNX Runtime's own default).
    #[default]
    All,
}

/// Where ONNX Runtime runs the graphs: TensorRT, CUDA or the CPU (see [`crate::providers`]).
pub use crate::providers::Provider as ExecutionProvider;

/// Settings of the ONNX Runtime backend.
#[derive(Debug, Clone)]
pub struct OrtOptions {
    /// The shared library to load; beats `ORT_DYLIB_PATH` and the search order of
    /// [`ort::find_library`].
    pub library: Option<PathBuf>,
    pub optimization: OrtOptimization,
    /// `session.qdq_matmulnbits_accuracy_level`: the accuracy level ONNX Runtime gives the
    /// MatMulNBits nodes it fuses from `DequantizeLinear + MatMul` (int4 graphs exported for
    /// the TensorRT target). 0 (our default; ONNX Runtime's is 4) keeps the matmul in f32
    /// on exactly dequantized weights, so int4 results stay comparable with the reference;
    /// 4 quantizes activations to int8 (faster, less exact). MatMulNBits nodes written by
    /// the exporter carry their own `accuracy_level` attribute, which this does not change.
    pub int4_accuracy_level: u8,
    /// Execution providers in order of preference, and their options (default: the CPU
    /// alone; the CLI's `--ep auto` asks for TensorRT, CUDA, CPU).
    pub providers: crate::providers::ProviderSettings,
    /// Which decoder graph ONNX Runtime runs when the bundle has both.
    pub decoder_graph: OrtDecoderGraph,
}

/// Which of a bundle's decoder graphs ONNX Runtime runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OrtDecoderGraph {
    /// `decoder_ort.onnx` (fused kernels, KV cache in place) when the bundle has it and the
    /// decoder runs on the CPU, else `decoder.onnx`; if the fused graph fails to load (an
    /// ONNX Runtime older than its operators), `decoder.onnx` with a warning.
    #[default]
    Auto,
    /// `decoder.onnx`, the portable graph (what tract runs).
    Portable,
    /// `decoder_ort.onnx`; an error when the bundle has none or it cannot run here.
    Fused,
}

impl FromStr for OrtDecoderGraph {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => OrtDecoderGraph::Auto,
            "portable" => OrtDecoderGraph::Portable,
            "fused" => OrtDecoderGraph::Fused,
            other => bail!("unknown decoder graph {other:?} (auto, portable or fused)"),
        })
    }
}

impl Default for OrtOptions {
    fn default() -> Self {
        Self {
            library: None,
            optimization: OrtOptimization::All,
            int4_accuracy_level: 0,
            providers: Default::default(),
            decoder_graph: OrtDecoderGraph::Auto,
        }
    }
}

/// Everything that selects and configures the engine.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    pub choice: BackendChoice,
    /// Threads inside one operator; `None` lets the engine decide (ONNX Runtime: one per
    /// physical core; tract: one per available core).
    pub threads: Option<usize>,
    pub ort: OrtOptions,
}

/// Sizes the backends check their inputs and outputs against, from the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Values per patch row (588).
    pub patch_dim: usize,
    /// Width of the ViT (`vision_tokens` columns).
    pub vision_hidden: usize,
    /// Patches per LLM token (4).
    pub merge_unit: usize,
    /// Decoder hidden size (`inputs_embeds` and `image_embeds` columns).
    pub hidden: usize,
    pub vocab: usize,
    pub kv: KvShape,
}

impl Dims {
    pub fn from_manifest(m: &Manifest) -> Self {
        let v = &m.model.vision_config;
        let t = &m.model.text_config;
        Self {
            patch_dim: v.patch_dim(),
            vision_hidden: v.hidden_size,
            merge_unit: v.merge_unit(),
            hidden: t.hidden_size,
            vocab: t.vocab_size,
            kv: KvShape {
                layers: t.num_hidden_layers,
                kv_heads: t.num_key_value_heads,
                head_dim: t.head_dim(),
                batched: m.graphs.decoder_batch,
            },
        }
    }
}

/// The inputs of one vision.onnx call (one image).
#[derive(Debug, Clone, Copy)]
pub struct VisionInputs<'a> {
    /// `[P, 588]`, reference patch order.
    pub pixel_values: &'a [f32],
    /// `[P, 2]`: (row, col) of each patch.
    pub patch_pos: &'a [i64],
    /// `[C, D]`: rows carried over from earlier images' `vision_states` (docs/BUNDLE.md).
    pub carry: &'a [f32],
    /// `[P]`: rows of `carry ++ vision_states` that become `vision_tokens`.
    pub window_index: &'a [i64],
}

/// What vision.onnx returns for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionOutput {
    /// `[P, D]`: the rows handed to the merger, kept for tracing.
    pub vision_tokens: Vec<f32>,
    /// `[P / 4, H]`: the rows that replace the image's pads.
    pub image_embeds: Vec<f32>,
    /// `[P + 1, D]`: the ViT output of this image, class token first (the next image's
    /// `carry` comes from these).
    pub vision_states: Vec<f32>,
}

/// The inputs of one lines.onnx call: `batch` line crops of `patches` patches each (the
/// longest line's count; shorter lines padded, their padding masked by `key_bias`).
#[derive(Debug, Clone, Copy)]
pub struct LineBatchInputs<'a> {
    pub batch: usize,
    pub patches: usize,
    /// `[B, P, 588]`.
    pub pixel_values: &'a [f32],
    /// `[B, P, 2]`.
    pub patch_pos: &'a [i64],
    /// `[B, 1 + P]`: 0 for the class token and a line's own patches, -inf for padding.
    pub key_bias: &'a [f32],
}

impl LineBatchInputs<'_> {
    /// Checks every length against `batch`, `patches` and the bundle's dims.
    pub fn check(&self, dims: &Dims) -> Result<()> {
        let (b, p) = (self.batch, self.patches);
        if b == 0 || p == 0 {
            bail!("a line batch needs at least one line of one patch (got {b} x {p})");
        }
        for (what, len, want) in [
            (
                "pixel_values",
                self.pixel_values.len(),
                b * p * dims.patch_dim,
            ),
            ("patch_pos", self.patch_pos.len(), b * p * 2),
            ("key_bias", self.key_bias.len(), b * (p + 1)),
        ] {
            if len != want {
                bail!("{what} has {len} values, expected {want} for {b} lines of {p} patches");
            }
        }
        Ok(())
    }
}

/// The non-cache inputs of one decoder.onnx call: `S` new slots in each of `batch` rows,
/// after `K` cached ones (row-major: row 0's `S` slots, then row 1's, ...).
#[derive(Debug, Clone, Copy)]
pub struct DecoderInputs<'a> {
    /// Rows (sequences); more than one needs a batched graph (`graphs.decoder_batch`).
    pub batch: usize,
    /// `[B x S, H]`: the rows of all sequences, row-major.
    pub inputs_embeds: &'a [f32],
    /// `[B, S]`: each row's positions (`K..K+S` for a row without padding).
    pub position_ids: &'a [i64],
    /// `[B, S, K+S]`.
    pub attention_bias: &'a [f32],
    /// `[L]`: which of the `B x S` slots (row-major) get logits.
    pub logits_index: &'a [i64],
}

impl DecoderInputs<'_> {
    /// New slots per row (`S`).
    pub fn new_tokens(&self) -> usize {
        self.position_ids.len() / self.batch.max(1)
    }

    /// Shape checks shared by the backends, so that a wrong call fails here and not inside
    /// the engine with an opaque broadcast error.
    pub fn check(&self, dims: &Dims, cached: usize) -> Result<()> {
        let b = self.batch;
        if b == 0 {
            bail!("decoder called with no rows");
        }
        if b > 1 && !dims.kv.batched {
            bail!(
                "this bundle's decoder.onnx takes one sequence a call (schema <= 3);                  re-export it to decode {b} together"
            );
        }
        if !self.position_ids.len().is_multiple_of(b) {
            bail!(
                "position_ids has {} values, not a multiple of the {b} rows",
                self.position_ids.len()
            );
        }
        let s = self.new_tokens();
        if s == 0 {
            bail!("decoder called with no new tokens");
        }
        if self.inputs_embeds.len() != b * s * dims.hidden {
            bail!(
                "inputs_embeds has {} values, expected {b} x {s} x {}",
                self.inputs_embeds.len(),
                dims.hidden
            );
        }
        if self.attention_bias.len() != b * s * (cached + s) {
            bail!(
                "attention_bias has {} values, expected {b} x {s} x {}",
                self.attention_bias.len(),
                cached + s
            );
        }
        if self.logits_index.is_empty() {
            bail!("decoder called with no logits rows");
        }
        if let Some(bad) = self
            .logits_index
            .iter()
            .find(|&&i| i < 0 || i as usize >= b * s)
        {
            bail!("logits_index {bad} is outside 0..{}", b * s);
        }
        Ok(())
    }

    /// Shapes of `inputs_embeds`, `position_ids` and `attention_bias` as the graph takes
    /// them (without the batch axis for an unbatched graph).
    pub fn shapes(&self, dims: &Dims, cached: usize) -> [Vec<usize>; 3] {
        let (b, s) = (self.batch, self.new_tokens());
        if dims.kv.batched {
            [vec![b * s, dims.hidden], vec![b, s], vec![b, s, cached + s]]
        } else {
            [vec![s, dims.hidden], vec![s], vec![s, cached + s]]
        }
    }
}

/// One engine running one bundle's graphs.
pub trait Backend: Send {
    fn kind(&self) -> BackendKind;

    /// A one-line description for logs and `ove bench`: engine, version, device, library.
    fn describe(&self) -> String;

    /// Runs vision.onnx on one image.
    fn vision(&mut self, inputs: &VisionInputs<'_>) -> Result<VisionOutput>;

    /// Runs lines.onnx on a batch of line crops: `[B, P, D]`, every line's encoder rows
    /// (padding rows included; the caller keeps each line's own). Only for bundles that
    /// have the graph ([`Bundle::lines`]).
    fn lines(&mut self, inputs: &LineBatchInputs<'_>) -> Result<Vec<f32>>;

    /// Runs decoder.onnx on the new tokens, reading and extending `cache` (which holds
    /// `inputs.batch` rows); returns the logits `[L, V]` of the slots named by
    /// `logits_index`. On error the cache is unchanged.
    fn decoder(&mut self, inputs: &DecoderInputs<'_>, cache: &mut KvCache) -> Result<Vec<f32>>;

    /// The most rows one decoder call may take: 1 for an unbatched graph; for a batched
    /// one, the engine's limit (a TensorRT profile's batch bound).
    fn max_decoder_rows(&self) -> usize;
}

/// Starts the engine `opts` asks for on `bundle`.
pub fn create(bundle: &Bundle, opts: &BackendOptions) -> Result<Box<dyn Backend>> {
    match opts.choice {
        BackendChoice::Ort => create_ort(bundle, opts),
        BackendChoice::Tract => create_tract(bundle, opts),
        BackendChoice::Auto => auto(bundle, opts),
    }
}

#[cfg(feature = "ort")]
fn auto(bundle: &Bundle, opts: &BackendOptions) -> Result<Box<dyn Backend>> {
    match ort::find_library(opts.ort.library.as_deref()) {
        Ok(lib) => match ort::OrtBackend::load(bundle, opts, &lib) {
            Ok(b) => {
                tracing::info!("backend: ONNX Runtime ({})", lib.display());
                Ok(Box::new(b))
            }
            Err(e) if cfg!(feature = "tract") => {
                tracing::warn!("ONNX Runtime failed to start ({e:#}); falling back to tract");
                create_tract(bundle, opts)
            }
            Err(e) => Err(e),
        },
        Err(e) if cfg!(feature = "tract") => {
            // Not finding a library nobody configured is normal; a configured one missing
            // is worth a warning.
            let configured = opts.ort.library.is_some()
                || std::env::var_os(ort::DYLIB_ENV).is_some_and(|v| !v.is_empty());
            if configured {
                tracing::warn!("backend: tract (ONNX Runtime not used: {e:#})");
            } else {
                tracing::info!("backend: tract (ONNX Runtime library not found)");
                tracing::debug!("{e:#}");
            }
            create_tract(bundle, opts)
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(feature = "ort"))]
fn auto(bundle: &Bundle, opts: &BackendOptions) -> Result<Box<dyn Backend>> {
    tracing::info!("backend: tract (this build has no ONNX Runtime support)");
    create_tract(bundle, opts)
}

#[cfg(feature = "ort")]
fn create_ort(bundle: &Bundle, opts: &BackendOptions) -> Result<Box<dyn Backend>> {
    let lib = ort::find_library(opts.ort.library.as_deref())?;
    Ok(Box::new(ort::OrtBackend::load(bundle, opts, &lib)?))
}

#[cfg(not(feature = "ort"))]
fn create_ort(_: &Bundle, _: &BackendOptions) -> Result<Box<dyn Backend>> {
    bail!(
        "this build of ove has no ONNX Runtime support (cargo feature `ort`); use --backend tract"
    )
}

#[cfg(feature = "tract")]
fn create_tract(bundle: &Bundle, opts: &BackendOptions) -> Result<Box<dyn Backend>> {
    Ok(Box::new(tract::TractBackend::load(bundle, opts)?))
}

#[cfg(not(feature = "tract"))]
fn create_tract(_: &Bundle, _: &BackendOptions) -> Result<Box<dyn Backend>> {
    bail!("this build of ove has no tract support (cargo feature `tract`); use --backend ort")
}

/// Checks that a step's rows are the cache's.
pub(crate) fn check_rows(x: &DecoderInputs<'_>, cache: &KvCache) -> Result<()> {
    if x.batch != cache.rows() {
        bail!(
            "a decoder step of {} rows on a KV cache of {} rows",
            x.batch,
            cache.rows()
        );
    }
    Ok(())
}

/// Checks a `[B, kvh, T, hd]` (unbatched: `[kvh, T, hd]`) present tensor shape against
/// what the step should have produced.
pub(crate) fn check_present(
    name: &str,
    shape: &[usize],
    kv: &KvShape,
    rows: usize,
    total: usize,
) -> Result<()> {
    let want = kv.tensor_dims(rows, total);
    if shape != want.as_slice() {
        bail!("decoder output {name} has shape {shape:?}, expected {want:?}");
    }
    Ok(())
}

/// Checks the vision outputs of an image with `patches` patches.
pub(crate) fn check_vision(out: &VisionOutput, dims: &Dims, patches: usize) -> Result<()> {
    if out.vision_tokens.len() != patches * dims.vision_hidden {
        bail!(
            "vision_tokens has {} values, expected {patches} x {}",
            out.vision_tokens.len(),
            dims.vision_hidden
        );
    }
    let tokens = patches / dims.merge_unit;
    if out.image_embeds.len() != tokens * dims.hidden {
        bail!(
            "image_embeds has {} values, expected {tokens} x {}",
            out.image_embeds.len(),
            dims.hidden
        );
    }
    if out.vision_states.len() != (patches + 1) * dims.vision_hidden {
        bail!(
            "vision_states has {} values, expected {} x {}",
            out.vision_states.len(),
            patches + 1,
            dims.vision_hidden
        );
    }
    Ok(())
}

/// Checks vision inputs before they reach an engine; returns `(P, C)`.
pub(crate) fn check_vision_inputs(x: &VisionInputs<'_>, dims: &Dims) -> Result<(usize, usize)> {
    let (pixel_values, patch_pos) = (x.pixel_values, x.patch_pos);
    if pixel_values.is_empty() || !pixel_values.len().is_multiple_of(dims.patch_dim) {
        bail!(
            "pixel_values has {} values, not a positive multiple of {}",
            pixel_values.len(),
            dims.patch_dim
        );
    }
    let patches = pixel_values.len() / dims.patch_dim;
    if patch_pos.len() != 2 * patches {
        bail!(
            "patch_pos has {} values, expected {patches} x 2",
            patch_pos.len()
        );
    }
    if !patches.is_multiple_of(dims.merge_unit) {
        bail!(
            "{patches} patches is not a multiple of the merge unit {}",
            dims.merge_unit
        );
    }
    if !x.carry.len().is_multiple_of(dims.vision_hidden) {
        bail!(
            "carry has {} values, not a multiple of {}",
            x.carry.len(),
            dims.vision_hidden
        );
    }
    let carry = x.carry.len() / dims.vision_hidden;
    if x.window_index.len() != patches {
        bail!(
            "window_index has {} values, expected {patches}",
            x.window_index.len()
        );
    }
    let rows = (carry + patches + 1) as i64;
    if let Some(bad) = x.window_index.iter().find(|&&i| i < 0 || i >= rows) {
        bail!("window_index {bad} is outside 0..{rows}");
    }
    Ok((patches, carry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_parse() {
        assert_eq!(
            "auto".parse::<BackendChoice>().unwrap(),
            BackendChoice::Auto
        );
        assert_eq!("ort".parse::<BackendChoice>().unwrap(), BackendChoice::Ort);
        assert_eq!(
            "tract".parse::<BackendChoice>().unwrap(),
            BackendChoice::Tract
        );
        assert!("cuda".parse::<BackendChoice>().is_err());
    }

    #[test]
    fn decoder_inputs_are_checked() {
        let dims = Dims {
            patch_dim: 588,
            vision_hidden: 8,
            merge_unit: 4,
            hidden: 2,
            vocab: 10,
            kv: KvShape {
                layers: 1,
                kv_heads: 1,
                head_dim: 2,
                batched: true,
            },
        };
        let e = [0.0; 4];
        let bias = [0.0; 2 * 5];
        let ok = DecoderInputs {
            batch: 1,
            inputs_embeds: &e,
            position_ids: &[3, 4],
            attention_bias: &bias,
            logits_index: &[1],
        };
        ok.check(&dims, 3).unwrap();
        assert!(ok.check(&dims, 2).is_err());
        let bad = DecoderInputs {
            logits_index: &[2],
            ..ok
        };
        assert!(bad.check(&dims, 3).is_err());
        // Two rows of one new token after three cached: the bias is [2, 1, 4].
        let two = DecoderInputs {
            batch: 2,
            position_ids: &[3, 3],
            attention_bias: &[0.0; 8],
            logits_index: &[0, 1],
            ..ok
        };
        two.check(&dims, 3).unwrap();
        assert_eq!(
            two.shapes(&dims, 3),
            [vec![2, 2], vec![2, 1], vec![2, 1, 4]]
        );
        assert!(DecoderInputs {
            logits_index: &[2],
            ..two
        }
        .check(&dims, 3)
        .is_err());
        let unbatched = Dims {
            kv: KvShape {
                batched: false,
                ..dims.kv
            },
            ..dims
        };
        let err = two.check(&unbatched, 3).unwrap_err();
        assert!(format!("{err}").contains("re-export"), "{err}");
        assert_eq!(ok.shapes(&unbatched, 3), [vec![2, 2], vec![2], vec![2, 5]]);
        let px = [0.0; 588 * 4];
        let v = VisionInputs {
            pixel_values: &px,
            patch_pos: &[0; 8],
            carry: &[],
            window_index: &[1, 2, 3, 4],
        };
        assert_eq!(check_vision_inputs(&v, &dims).unwrap(), (4, 0));
        let three = VisionInputs {
            pixel_values: &px[..588 * 3],
            patch_pos: &[0; 6],
            window_index: &[1, 2, 3],
            ..v
        };
        assert!(check_vision_inputs(&three, &dims).is_err());
        let out_of_range = VisionInputs {
            window_index: &[1, 2, 3, 5],
            ..v
        };
        assert!(check_vision_inputs(&out_of_range, &dims).is_err());
        let carried = VisionInputs {
            carry: &[0.0; 8],
            window_index: &[0, 1, 2, 5],
            ..v
        };
        assert_eq!(check_vision_inputs(&carried, &dims).unwrap(), (4, 1));
    }
}
