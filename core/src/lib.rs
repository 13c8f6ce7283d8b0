//! `ove-core`: the definitions every OneVision Edge crate shares.
//!
//! There is exactly one copy of each of these in the workspace, so that the trainer,
//! the exporter and the runtime can never disagree about them:
//! - [`config`]: the Hugging Face `config.json` / `preprocessor_config.json` /
//!   `generation_config.json` of a LLaVA-OneVision-1.5 checkpoint and the quantities
//!   derived from them;
//! - [`checkpoint`]: reading a checkpoint directory (single or sharded safetensors);
//! - [`preprocess`]: image decoding and the reference-exact preprocessing;
//! - [`prompt`]: the ChatML template, tokenizer use and image-pad expansion;
//! - [`manifest`]: the bundle manifest written by `ove export` and checked by the runtime;
//! - [`ctc`]: the CTC line reader's alphabet, column pooling and greedy decoding.

pub mod activation;
pub mod checkpoint;
pub mod config;
pub mod ctc;
pub mod ctc_utf8;
pub mod graph_io;
pub mod layout_metrics;
pub mod manifest;
pub mod metrics;
pub mod onnx_proto;
pub mod preprocess;
pub mod prompt;
pub mod rope;
pub mod tensor_file;
pub mod vote;

pub use config::{GenerationConfig, ModelConfig, PreprocessorConfig, TextConfig, VisionConfig};

/// The text of a caught panic's payload (readers that run a library under `catch_unwind`
/// turn its panics into errors that say what it said).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
