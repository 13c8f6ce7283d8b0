//! `ove-runtime`: runs OneVision Edge ONNX bundles (docs/BUNDLE.md) on ONNX Runtime (the
//! fast path, loaded at run time) or tract (pure Rust, always available).
//!
//! - [`bundle`]: opening a bundle: manifest, file checks, ONNX graphs parsed and their
//!   external data confined to the bundle;
//! - [`backend`]: the engines behind one [`backend::Backend`] trait, chosen by
//!   [`backend::BackendChoice`];
//! - [`embed`]: the memory-mapped embedding table and image-pad splicing;
//! - [`mask`]: positions and the causal attention bias fed to the decoder, for one
//!   sequence or a padded batch;
//! - [`providers`]: ONNX Runtime execution providers (TensorRT -> CUDA -> CPU), their
//!   options and the profile file (`ove-profile.toml`);
//! - [`kv`]: the KV cache carried between decoder steps;
//! - [`sampling`]: repetition penalty, greedy and temperature / top-k / top-p sampling;
//! - [`gen_config`]: generation_config.json as the defaults, and the caller's overrides;
//! - [`generate`]: [`Model`]: images, prefill, generation with streaming, and several
//!   prompts decoded together ([`Model::generate_batch`]);
//! - [`layout`]: text lines of a page image, in reading order (no model);
//! - [`line_batch`]: a page's line crops encoded in batches (`lines.onnx`);
//! - [`read`]: reading a page: whole, or line by line after the layout;
//! - [`trace`]: golden cases through a bundle (`ove trace`);
//! - [`compare`]: logits metrics between two runs (max |diff|, top-1 agreement, KL);
//! - [`bench`](mod@bench): timing and memory (`ove bench`).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use ove_runtime::{LoadOptions, Model};
//! let mut model = Model::load("bundle".as_ref(), &LoadOptions::default())?;
//! let image = model.encode_image_file("page.png".as_ref())?;
//! # let prompt_ids: Vec<i64> = vec![];
//! let out = model.generate(&prompt_ids, &[&image], &model.default_options(), |_| {
//!     std::ops::ControlFlow::Continue(())
//! })?;
//! # Ok(()) }
//! ```

#[cfg(not(any(feature = "tract", feature = "ort")))]
compile_error!("ove-runtime needs at least one backend: enable the `tract` or `ort` feature");

pub mod backend;
pub mod bench;
pub mod bundle;
pub mod compare;
pub mod embed;
pub mod gen_config;
pub mod generate;
pub mod kv;
pub mod layout;
pub mod line_batch;
pub mod mask;
pub mod pages;
pub mod providers;
pub mod read;
pub mod sampling;
pub mod trace;

pub use backend::{
    BackendChoice, BackendKind, BackendOptions, ExecutionProvider, OrtDecoderGraph,
    OrtOptimization, OrtOptions,
};
pub use bundle::{Bundle, Verify};
pub use gen_config::GenerateOverrides;
pub use generate::{
    BatchPrompt, BatchRequest, EncodedImage, FinishReason, GenerateOptions, Generation,
    LoadOptions, LogitRows, Model, Sequence, TextStream, VisionContext,
};
pub use providers::{Provider, ProviderSettings};
pub use sampling::{Sampler, SamplingOptions};
