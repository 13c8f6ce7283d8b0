//! Fuzz targets for every reader of bytes `ove` did not make: scanned images and PDFs from
//! users, bundles and checkpoints copied over the network, training data, HTTP requests.
//!
//! Each [`Target`] is one reader driven by arbitrary bytes. What a target checks, for every
//! input:
//! - no panic and no abort ([`panics`]: a panic in the project's code, or in a library it
//!   calls unguarded, is a finding);
//! - no hang: AFL++ runs each input under a time bound (`bench/fuzz.sh`), the replay tests
//!   under [`HANG_BOUND`];
//! - bounded memory: the process aborts past [`alloc::MAX_LIVE_BYTES`] ([`alloc`]), so a
//!   header believed before it is checked is a finding;
//! - for the formats the project also writes (manifest, configs, ONNX), that what was read
//!   writes back and reads again as the same value.
//!
//! The same function runs under AFL++ (`ove-fuzz run TARGET`, built by `cargo afl build`)
//! and as an ordinary `cargo test` over the saved corpus and every crash ever found
//! (`fuzz/corpus/TARGET`, `fuzz/regressions/TARGET`; see `tests/replay.rs`).

pub mod alloc;
pub mod fixtures;
pub mod panics;
pub mod seeds;
mod targets;

use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: alloc::Bounded = alloc::Bounded;

/// The pixel limit the image readers run under here (width x height a header may announce):
/// small enough that an accepted input decodes in a millisecond or two, so coverage, not
/// pixel pushing, fills the time. The refusal path is the same code as at 100 MP.
pub const MAX_PIXELS: u64 = 1 << 18;

/// Inputs longer than this are cut (AFL++'s own default bound on a test case).
pub const MAX_INPUT_BYTES: usize = 1 << 20;

/// The replay tests' hang bound per input (a debug build): generous, since it is there to
/// catch loops that do not end, not to time anything.
pub const HANG_BOUND: Duration = Duration::from_secs(20);

/// One reader of untrusted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Target {
    /// The project's own JPEG decoder (`ove_core::preprocess::jpeg`, libjpeg-turbo-exact).
    Jpeg,
    /// The whole image path: decode (PNG, JPEG, WebP, BMP, TIFF, GIF), preprocess, line crop.
    Preprocess,
    /// `ove ocr`'s input path: a PDF (or image) to pages, each page through the layout.
    Pdf,
    /// `config.json`, `preprocessor_config.json`, `generation_config.json`.
    Configs,
    /// safetensors headers (checkpoint shards, tensor files, the embedding table) and
    /// `model.safetensors.index.json`.
    Safetensors,
    /// A bundle's `manifest.json` and its file checks (paths that leave the bundle).
    Manifest,
    /// An ONNX model file: the protobuf reader and the bundle's external-data checks.
    Onnx,
    /// `tokenizer.json` loading, then a prompt encoded and decoded with it.
    Tokenizer,
    /// The trainer's data: WebDataset tar shards and JSONL manifests.
    TrainData,
    /// `ove serve`: raw HTTP/1.1 bytes through the real router (chat JSON, data URIs,
    /// multipart uploads, PDFs), with a model that is never reached.
    Serve,
}

impl Target {
    pub const ALL: [Target; 10] = [
        Target::Jpeg,
        Target::Preprocess,
        Target::Pdf,
        Target::Configs,
        Target::Safetensors,
        Target::Manifest,
        Target::Onnx,
        Target::Tokenizer,
        Target::TrainData,
        Target::Serve,
    ];

    /// The name on the command line and of the corpus folders.
    pub fn name(self) -> &'static str {
        match self {
            Target::Jpeg => "jpeg",
            Target::Preprocess => "preprocess",
            Target::Pdf => "pdf",
            Target::Configs => "configs",
            Target::Safetensors => "safetensors",
            Target::Manifest => "manifest",
            Target::Onnx => "onnx",
            Target::Tokenizer => "tokenizer",
            Target::TrainData => "train-data",
            Target::Serve => "serve",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs one input. Returns normally for every input, accepted or refused; a finding
    /// panics (an assertion), aborts (memory) or does not return (a hang).
    pub fn check(self, data: &[u8]) {
        let data = &data[..data.len().min(MAX_INPUT_BYTES)];
        match self {
            Target::Jpeg => targets::images::jpeg(data),
            Target::Preprocess => targets::images::preprocess(data),
            Target::Pdf => targets::pages::pdf(data),
            Target::Configs => targets::configs::configs(data),
            Target::Safetensors => targets::tensors::safetensors(data),
            Target::Manifest => targets::bundle::manifest(data),
            Target::Onnx => targets::bundle::onnx(data),
            Target::Tokenizer => targets::tokenizer::tokenizer(data),
            Target::TrainData => targets::train_data::train_data(data),
            Target::Serve => targets::serve::serve(data),
        }
    }

    /// The AFL++ dictionary for this target (`fuzz/dict/NAME.dict`), if it has one.
    pub fn dictionary(self) -> Option<&'static str> {
        match self {
            Target::Jpeg | Target::Preprocess => Some("images"),
            Target::Pdf => Some("pdf"),
            Target::Configs
            | Target::Manifest
            | Target::Tokenizer
            | Target::TrainData
            | Target::Safetensors => Some("json"),
            Target::Serve => Some("http"),
            Target::Onnx => None,
        }
    }
}

/// One input run outside AFL++ (`ove-fuzz replay`, the replay tests).
pub struct Replayed {
    /// The target panicked (a panic escaped to here).
    pub panicked: bool,
    pub took: Duration,
    /// Bytes held at the peak above what was live before the input.
    pub peak_bytes: usize,
}

/// Runs `data` through `target` with its memory and time measured; `name` is what the
/// memory bound's abort message calls it.
pub fn replay_one(target: Target, name: &str, data: &[u8]) -> Replayed {
    let base = alloc::live();
    alloc::begin(name);
    let t0 = Instant::now();
    let panicked = std::panic::catch_unwind(|| target.check(data)).is_err();
    Replayed {
        panicked,
        took: t0.elapsed(),
        peak_bytes: alloc::peak_since(base),
    }
}
