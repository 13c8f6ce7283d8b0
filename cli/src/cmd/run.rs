//! `ove run`: a prompt (and images) through a bundle, the answer streamed to stdout.
//!
//! Also home of the options every model-running subcommand shares ([`ModelArgs`],
//! [`SamplingArgs`]) and of [`answer`], the prompt -> streamed text loop `ove ocr` reuses.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use ove_core::prompt::{PromptBuilder, DEFAULT_SYSTEM};
use ove_runtime::generate::DEFAULT_PREFILL_CHUNK;
use ove_runtime::{
    BackendChoice, BackendOptions, EncodedImage, GenerateOptions, GenerateOverrides, Generation,
    LoadOptions, Model, OrtDecoderGraph, OrtOptimization, OrtOptions, TextStream, Verify,
    VisionContext,
};

/// Inference engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// ONNX Runtime when its library is found, else tract.
    Auto,
    /// ONNX Runtime (fast; loaded from --ort-library, ORT_DYLIB_PATH or the usual places).
    Ort,
    /// tract (pure Rust, always available, slower).
    Tract,
}

impl From<BackendArg> for BackendChoice {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Ort => BackendChoice::Ort,
            BackendArg::Tract => BackendChoice::Tract,
        }
    }
}

/// ONNX Runtime graph optimization level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptLevelArg {
    Disable,
    Basic,
    Extended,
    All,
}

/// Which of a bundle's decoder graphs ONNX Runtime runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrtDecoderArg {
    Auto,
    Fused,
    Portable,
}

/// Which bundle to run and on what.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Bundle directory written by `ove export`. Default: the default OCR model built into
    /// `ove` (unpacked on first use to $OVE_CACHE_DIR, else ~/.cache/ove).
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,

    /// Inference engine. `auto` uses ONNX Runtime when its library is found (ORT_DYLIB_PATH,
    /// next to `ove`, the project's .venv, /usr/lib, /usr/local/lib, JetPack's places) and
    /// tract otherwise, and logs which.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,

    /// Threads inside each operator (default: the engine's choice, about one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// The ONNX Runtime shared library to load (beats ORT_DYLIB_PATH and the search).
    #[arg(long, value_name = "FILE")]
    pub ort_library: Option<PathBuf>,

    /// ONNX Runtime graph optimization level.
    #[arg(long, value_enum, default_value_t = OptLevelArg::All)]
    pub ort_opt_level: OptLevelArg,

    /// Let ONNX Runtime run the int4 matmuls it fuses from DequantizeLinear + MatMul with
    /// int8-quantized activations (session.qdq_matmulnbits_accuracy_level 4): faster,
    /// slightly less exact. Default: level 0, f32 on exactly dequantized weights.
    /// (MatMulNBits nodes in the bundle keep the accuracy level the exporter gave them.)
    #[arg(long)]
    pub fast_int4: bool,

    /// Which decoder graph ONNX Runtime runs: `auto` (decoder_ort.onnx, its fused kernels
    /// with the KV cache written in place, when the bundle has it and the decoder runs on
    /// the CPU; else decoder.onnx), `fused` or `portable` (decoder.onnx, what tract runs).
    #[arg(long, value_enum, default_value_t = OrtDecoderArg::Auto)]
    pub ort_decoder: OrtDecoderArg,

    /// Check only the sizes of the bundle's files, not their sha256 (a faster start for a
    /// bundle that was verified before).
    #[arg(long)]
    pub skip_checksums: bool,

    /// ONNX Runtime execution providers, in order of preference: `auto` (tensorrt,cuda,cpu)
    /// or a comma-separated list, e.g. `cuda` or `tensorrt,cpu`. One the library lacks, or
    /// that fails to start, is reported and the next is used; the CPU is always the last
    /// resort. Default: the profile's `providers`, else auto.
    #[arg(long, value_name = "LIST")]
    pub ep: Option<String>,

    /// Execution provider profile (TOML; keys in targets/README.md).
    /// Default: BUNDLE/ove-profile.toml when present.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,

    /// Context length, lower than the bundle's max_context: the longest sequence (prompt plus
    /// generated tokens) this run allows, and so the KV cache it holds. A longer prompt is an
    /// error; generation stops (with a note) when the context is full. Also bounds the
    /// TensorRT optimization profiles (sequence and past lengths) and the memory they reserve.
    /// Default: the profile's max_context, else the bundle's.
    #[arg(long, value_name = "N")]
    pub max_context: Option<usize>,

    /// The GPU for CUDA and TensorRT (default: the profile's device_id, else 0).
    #[arg(long, value_name = "N")]
    pub device_id: Option<u32>,
}

impl ModelArgs {
    /// The bundle to run: --bundle, else the built-in default model.
    pub fn bundle_dir(&self) -> Result<PathBuf> {
        match &self.bundle {
            Some(b) => Ok(b.clone()),
            None => crate::default_model::bundle_dir(),
        }
    }

    /// How to load `bundle` (the profile is read from it unless --profile says otherwise).
    fn load_options(&self, bundle: &Path) -> Result<LoadOptions> {
        let providers = ove_runtime::providers::resolve_settings(
            bundle,
            self.profile.as_deref(),
            self.ep.as_deref(),
            self.max_context,
            self.device_id,
        )?;
        Ok(LoadOptions {
            // The flag, else the profile's: the same bound as the TensorRT profiles.
            max_context: providers.max_context,
            verify: if self.skip_checksums {
                Verify::SizesOnly
            } else {
                Verify::Checksums
            },
            backend: BackendOptions {
                choice: self.backend.into(),
                threads: self.threads,
                ort: OrtOptions {
                    library: self.ort_library.clone(),
                    optimization: match self.ort_opt_level {
                        OptLevelArg::Disable => OrtOptimization::Disable,
                        OptLevelArg::Basic => OrtOptimization::Basic,
                        OptLevelArg::Extended => OrtOptimization::Extended,
                        OptLevelArg::All => OrtOptimization::All,
                    },
                    int4_accuracy_level: if self.fast_int4 { 4 } else { 0 },
                    providers,
                    decoder_graph: match self.ort_decoder {
                        OrtDecoderArg::Auto => OrtDecoderGraph::Auto,
                        OrtDecoderArg::Fused => OrtDecoderGraph::Fused,
                        OrtDecoderArg::Portable => OrtDecoderGraph::Portable,
                    },
                },
            },
        })
    }

    /// Verifies and loads the bundle, with a spinner on a terminal.
    pub fn load(&self) -> Result<Model> {
        let bundle = self.bundle_dir()?;
        if self.bundle.is_none() {
            tracing::warn!(
                "no --bundle: using the built-in default OCR model, a small demonstration \
                 model trained from scratch by scripts/recipe-default-ocr (accuracy in \
                 models/default-ocr/README.md); pass --bundle for your own model"
            );
        }
        let options = self.load_options(&bundle)?;
        let spinner = spinner(format!("loading {}", bundle.display()));
        let model = Model::load(&bundle, &options)
            .with_context(|| format!("cannot run bundle {}", bundle.display()));
        spinner.finish_and_clear();
        let model = model?;
        tracing::info!(
            "loaded {} in {:.1} s on {}",
            bundle.display(),
            model.load_time().as_secs_f64(),
            model.describe_backend()
        );
        Ok(model)
    }
}

/// A spinner on stderr (hidden when stderr is not a terminal).
pub fn spinner(msg: String) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// How to generate. Every default is the bundle's generation_config.json (the
/// checkpoint's), as transformers reads it; a flag overrides it.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Stop after this many generated tokens [default: generation_config.json's
    /// max_new_tokens, else 1024].
    #[arg(long, value_name = "N")]
    pub max_new_tokens: Option<usize>,

    /// Sampling temperature; 0 is greedy decoding, best for OCR [default: the checkpoint's
    /// temperature when its generation_config.json sets do_sample, else 0].
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,

    /// Sample only among the K most likely tokens, 0: no limit [default: the checkpoint's
    /// top_k; 50 when it samples without one, as transformers does].
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,

    /// Sample only among the most likely tokens whose probabilities add up to P, 1: no
    /// limit [default: the checkpoint's top_p, else 1].
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,

    /// Penalize tokens already in the sequence (prompt included), greedy decoding too; 1
    /// is off, 1.05 to 1.2 curbs loops on repetitive pages [default: the checkpoint's
    /// repetition_penalty, else 1].
    #[arg(long, value_name = "R")]
    pub repetition_penalty: Option<f32>,

    /// Seed for sampling, for reproducible output (default: random).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Keep generating past the end-of-turn token, up to --max-new-tokens.
    #[arg(long)]
    pub ignore_eos: bool,

    /// Prompt tokens per decoder call while reading the prompt (0: all at once). Smaller
    /// chunks need less memory on long prompts (large images).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PREFILL_CHUNK)]
    pub prefill_chunk: usize,
}

impl SamplingArgs {
    /// The flags given, over whatever the bundle says.
    pub fn overrides(&self) -> GenerateOverrides {
        GenerateOverrides {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            ignore_eos: self.ignore_eos,
            prefill_chunk: Some(self.prefill_chunk),
        }
    }

    /// The options in force for `model`: the flags over its generation_config.json.
    pub fn options(&self, model: &Model) -> GenerateOptions {
        self.overrides().resolve(&model.manifest().generation)
    }

    /// Refuses meaningless flag values before anything is loaded.
    pub fn validate(&self) -> Result<()> {
        self.overrides().validate()
    }
}

/// Run a prompt, with images, through a bundle and print the answer as it is generated.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  ove run --bundle bundle/ --image page.png --prompt \"What is the invoice total?\""
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// An image to show the model (repeat for several; they come before the prompt text,
    /// in the order given).
    #[arg(long = "image", value_name = "FILE")]
    pub images: Vec<PathBuf>,

    /// The user's message.
    #[arg(long)]
    pub prompt: String,

    /// The system message of the chat template.
    #[arg(long, default_value = DEFAULT_SYSTEM)]
    pub system: String,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Print token counts and speeds to stderr at the end.
    #[arg(long)]
    pub stats: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    args.sampling.validate()?;
    let mut model = args.model.load()?;
    let opts = args.sampling.options(&model);
    let prompt = model.prompt_builder(&args.system)?;
    let mut stdout = std::io::stdout().lock();
    let g = answer(
        &mut model,
        &prompt,
        &args.images,
        &args.prompt,
        &opts,
        &mut stdout,
    )?;
    writeln!(stdout)?;
    if args.stats {
        print_stats(&g);
    }
    Ok(ExitCode::SUCCESS)
}

/// Encodes the images, builds the chat prompt and streams the generated text to `out`.
pub fn answer(
    model: &mut Model,
    prompt: &PromptBuilder,
    images: &[PathBuf],
    text: &str,
    opts: &GenerateOptions,
    out: &mut dyn Write,
) -> Result<Generation> {
    let encoded = encode_images(model, images)?;
    stream_answer(model, prompt, &encoded, text, opts, out)
}

/// Builds the chat prompt around encoded images and streams the generated text to `out`.
pub fn stream_answer(
    model: &mut Model,
    prompt: &PromptBuilder,
    encoded: &[EncodedImage],
    text: &str,
    opts: &GenerateOptions,
    out: &mut dyn Write,
) -> Result<Generation> {
    let counts: Vec<usize> = encoded.iter().map(|e| e.tokens).collect();
    let ids = prompt.encode(text, &counts)?;
    let refs: Vec<&EncodedImage> = encoded.iter().collect();
    let mut stream = TextStream::new(prompt);
    let mut failure = None;
    let g = model.generate(&ids, &refs, opts, |token| {
        let piece = stream.push(token).and_then(|p| {
            out.write_all(p.as_bytes())?;
            out.flush()?;
            Ok(())
        });
        match piece {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e.context("writing the answer"));
    }
    // Text held back for a character the last tokens left incomplete.
    let rest = stream.finish()?;
    out.write_all(rest.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the answer")?;
    Ok(g)
}

fn encode_images(model: &mut Model, images: &[PathBuf]) -> Result<Vec<EncodedImage>> {
    let mut encoded = Vec::with_capacity(images.len());
    // One context for the prompt's images: they are encoded in order (see VisionContext).
    let mut ctx = VisionContext::new();
    for path in images {
        let spinner = spinner(format!("encoding {}", path.display()));
        let e = model.encode_image_file_in(&mut ctx, Path::new(path));
        spinner.finish_and_clear();
        let e = e?;
        tracing::debug!(
            "{}: {} patches -> {} tokens in {:.0} ms",
            path.display(),
            e.grid_thw.iter().product::<usize>(),
            e.tokens,
            e.elapsed.as_secs_f64() * 1e3
        );
        encoded.push(e);
    }
    Ok(encoded)
}

pub fn print_stats(g: &Generation) {
    let rate = |n: usize, d: Duration| {
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    eprintln!(
        "[{} prompt tokens at {:.1} tokens/s; {} generated at {:.1} tokens/s; stop: {:?}]",
        g.prompt_tokens,
        rate(g.prompt_tokens, g.prefill_time),
        g.tokens.len(),
        rate(g.decode_steps, g.decode_time),
        g.finish
    );
}
