//! `ove-train`: LLaVA-OneVision-1.5 in libtorch (through `tch`), for training and tracing.
//!
//! The model is written nanoGPT-style, one file per part, and every parameter's name in
//! the `VarStore` is its module path, which is exactly its Hugging Face tensor name:
//! - [`vision`]: RICE-ViT (`visual.patch_embed`, `visual.class_embedding`,
//!   `visual.class_pos_emb`, `visual.pre_layernorm`, `visual.blocks.{i}.*`);
//! - [`merger`]: the 2x2 patch merger (`visual.merger.{ln_q,mlp.0,mlp.2}`);
//! - [`decoder`]: the Qwen3 decoder (`model.*`, `lm_head`), with a KV cache;
//! - [`model`]: the whole, image embeddings scattered into the image pads;
//! - [`ctc`]: the CTC line-reader head over the encoder's patch columns;
//! - [`device`]: `cpu` / `cuda[:N]` (loads libtorch's CUDA backend);
//! - [`layers`]: the shared building blocks (linear, norms, rotary);
//! - [`checkpoint`]: strict loading of Hugging Face checkpoints and saving the same layout;
//! - [`cmd`]: each `ove-train` subcommand's arguments and work (`src/main.rs` only
//!   dispatches to them);
//! - [`plot`]: the metrics curves `ove-train plot` draws as a PNG;
//! - [`recipe`]: `ove-train tokenizer`, `init`, `prepare` (the default-model recipe);
//! - [`trace`]: golden-case intermediates, what `ove-train trace` writes;
//! - [`train`]: loss, packing, AdamW, schedule, stage configs, the optimizer step.

pub mod checkpoint;
pub mod cmd;
pub mod ctc;
pub mod decoder;
pub mod device;
pub mod dist;
pub mod jsonl;
pub mod layers;
pub mod merger;
pub mod model;
pub mod plot;
pub mod recipe;
mod shim;
pub mod trace;
pub mod train;
pub mod vision;

pub use checkpoint::{load_model, save_checkpoint, LoadedModel, SaveDtype, SaveOptions};
pub use decoder::{AttentionMask, KvCache};
pub use model::{Images, LlavaOneVision};
