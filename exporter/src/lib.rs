//! Hugging Face LLaVA-OneVision-1.5 checkpoint -> ONNX bundle (docs/BUNDLE.md is the
//! contract with the runtime).
//!
//! [`export`] opens the checkpoint, builds `vision.onnx` (RICE-ViT + merger, one image per
//! run) and `decoder.onnx` (Qwen3 with KV cache) tensor by tensor, writes the embedding
//! table, copies the tokenizer and configs and finally `manifest.json`, all inside a
//! temporary directory next to the output that is renamed into place only when complete.
//!
//! The graph code is one module per model part ([`vision`], [`merger`], [`decoder`]) on
//! top of a small graph builder ([`graph`]) and the layers in [`nn`]; weights are read
//! by [`weights`], and [`bundle`] writes the files around the graphs.

use std::path::PathBuf;

pub mod bundle;
pub mod data_file;
pub mod decoder;
pub mod graph;
pub mod int4;
pub mod merger;
pub mod nn;
pub mod ort_ops;
pub mod vision;
pub mod weights;

pub use bundle::export;
pub use int4::{Int4Options, Int4Target};

/// Float dtype of the exported weights (activations are always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dtype {
    #[default]
    F32,
    F16,
}

impl Dtype {
    /// The name the manifest records: "f32" or "f16".
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "f32" | "float32" => Ok(Dtype::F32),
            "f16" | "float16" => Ok(Dtype::F16),
            _ => anyhow::bail!("unsupported dtype {s:?} (want f32 or f16)"),
        }
    }
}

/// What `ove export` was asked to do.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Hugging Face checkpoint directory (config.json, safetensors, preprocessor config).
    pub checkpoint: PathBuf,
    /// Bundle directory to create.
    pub out: PathBuf,
    /// Float dtype of the weights that are not quantized.
    pub dtype: Dtype,
    /// int4 weight-only quantization (`--int4`); `None`: float weights only.
    pub int4: Option<Int4Options>,
    /// Longest sequence the runtime may run; default `text_config.max_position_embeddings`.
    pub max_context: Option<usize>,
    /// Replace an existing non-empty `out`.
    pub force: bool,
    /// Show a progress bar over the tensors (off for tests and non-terminals).
    pub progress: bool,
    /// Export even when the checkpoint holds tensors the graphs do not use (they are
    /// left out, with a warning); by default that is an error naming them.
    pub allow_unused_tensors: bool,
    /// How the model reads pages, recorded in the manifest (default: whole pages).
    pub reading: ove_core::manifest::Reading,
    /// Carry the checkpoint's CTC line-reader head (`ctc_head.safetensors`, written by
    /// `ove-train ctc`) into the bundle (`--ctc-head`). Off by default: the head is a
    /// training-time module; a bundle that reads lines with it (`reading.reader = ctc`)
    /// needs it. With it comes `lines.onnx`, the batched line encoder (docs/BUNDLE.md).
    pub ctc_head: bool,
    /// Also write `decoder_ort.onnx`, the decoder in ONNX Runtime's fused kernels over the
    /// same weights (on by default; `--no-ort-decoder` leaves it out). ONNX Runtime on the
    /// CPU or CUDA runs it, tract and TensorRT run `decoder.onnx`. Not written for the
    /// TensorRT int4 target.
    pub ort_decoder: bool,
    /// decoder_ort.onnx keeps its KV cache in f16 (`--kv-cache f16`): half the cache's memory
    /// and traffic, attention computed in f16; decoder.onnx keeps f32.
    pub ort_kv_f16: bool,
}

impl ExportOptions {
    /// f32, default context, no overwrite, no progress bar, every tensor used.
    pub fn new(checkpoint: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            checkpoint: checkpoint.into(),
            out: out.into(),
            dtype: Dtype::F32,
            int4: None,
            max_context: None,
            force: false,
            progress: false,
            allow_unused_tensors: false,
            reading: Default::default(),
            ctc_head: false,
            ort_decoder: true,
            ort_kv_f16: false,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The bundle directory (= `ExportOptions::out`).
    pub out: PathBuf,
    /// The manifest as written to `out/manifest.json`.
    pub manifest: ove_core::manifest::Manifest,
    /// Checkpoint tensors read.
    pub tensors: u64,
    /// Total size of the bundle's files.
    pub bytes: u64,
}
