//! Training foundations, nanoGPT-style: one small file per concern.
//! - [`loss`]: sum of token losses over the target tokens / their count;
//! - [`packing`]: samples -> one packed row (block-diagonal causal attention, positions
//!   restarting at 0 per sample, each image attending only to itself);
//! - [`optim`]: AdamW over the trainable parameters only, global-norm gradient clipping;
//! - [`schedule`]: linear warmup then cosine decay;
//! - [`stage`]: the stage TOML files (what trains, optimizer and schedule settings);
//! - [`step`]: one optimizer step over micro-batches;
//! - [`data`]: the JSONL sample format;
//! - [`run`]: the loop behind `ove-train train`.

pub mod data;
pub mod loss;
pub mod optim;
pub mod packing;
pub mod run;
pub mod schedule;
pub mod stage;
pub mod step;

pub use loss::{token_loss_sum, IGNORE_INDEX};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig};
pub use packing::{pack, PackedBatch, Sample};
pub use schedule::LrSchedule;
pub use stage::StageConfig;
pub use step::{batch_loss_sum, train_step, StepStats};
