//! Synthetic documents with exact ground truth, for training and evaluating OCR models.
//!
//! - [`fonts`]: real fonts from Debian packages, split into training and held-out fonts.
//! - [`generate`]: single lines, paragraphs, receipts (with correct totals), key-value forms
//!   and tables, laid out with measured text.
//! - [`render`]: drawing the layout; [`augment`]: blur, noise, JPEG, rotation, perspective,
//!   low resolution and uneven lighting, by a degradation level.
//! - [`dataset`]: the folder format (`NAME.png` + `NAME.txt`) and JSONL manifests.
//! - [`metrics`]: CER, WER and exact line matches.
//!
//! Everything is deterministic under a seed: the same seed, index, kinds and fonts give the
//! same PNG bytes.

pub mod augment;
pub mod dataset;
pub mod fonts;
pub mod generate;
/// The metrics live in `ove-core` (the runtime scores with them too); re-exported for scoring here.
pub use ove_core::metrics;
pub mod render;
pub mod words;

pub use dataset::{sample, write_set, Degradation, Options, Sample};
pub use generate::{Document, Kind, Receipt};
