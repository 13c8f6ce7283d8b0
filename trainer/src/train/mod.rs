//! Training foundations, nanoGPT-style: one small file per concern.
//! - [`loss`]: sum of token losses over the target tokens / their count;
//! - [`packing`]: samples -> one packed row (block-diagonal causal attention, positions
//!   restarting at 0 per sample, each image attending only to itself);
//! - [`bench`]: `ove-train bench-train`: step throughput and MFU on random tokens;
//! - [`balance`]: `ove-train balance`: top-k concepts, inverse-frequency weights, draws;
//! - [`binpack`]: offline packing over sample lengths (exact fits, then greedy fills);
//! - [`pack_manifest`]: `ove-train pack`: manifest lengths, shards and report;
//! - [`optim`]: AdamW over the trainable parameters only, global-norm gradient clipping;
//! - [`schedule`]: linear warmup then cosine decay;
//! - [`stage`]: the stage TOML files (what trains, optimizer and schedule settings);
//! - [`step`]: one optimizer step over micro-batches;
//! - [`data`]: the JSONL sample format (corrupt images skipped and counted);
//! - [`lines`]: ground-truth text lines cropped as the runtime crops them (the CTC reader);
//! - [`shards`]: WebDataset-style tar shards as a data source;
//! - [`resume`]: resumable atomic checkpoints (model, AdamW state, data cursor);
//! - [`run`]: the loop behind `ove-train train`.

pub mod balance;
pub mod bench;
pub mod binpack;
pub mod data;
pub mod fused;
pub mod lines;
pub mod loss;
pub mod optim;
pub mod pack_manifest;
pub mod packing;
pub mod resume;
pub mod run;
pub mod schedule;
pub mod shards;
pub mod stage;
pub mod step;

pub use loss::{token_loss_sum, IGNORE_INDEX};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig};
pub use packing::{pack, PackedBatch, Sample};
pub use schedule::LrSchedule;
pub use stage::StageConfig;
pub use step::{
    batch_backward, batch_loss_sum, decoder_backward, train_step, train_step_with, StepOptimizer,
    StepStats,
};
