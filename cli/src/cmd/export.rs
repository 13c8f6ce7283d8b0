//! `ove export`: Hugging Face checkpoint directory -> ONNX bundle (docs/BUNDLE.md).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use ove_core::manifest::{LineReader, PageReading, Reading};
use ove_exporter::{export, Dtype, ExportOptions, Int4Options, Int4Target};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory: config.json, model.safetensors (or sharded with an index),
    /// preprocessor_config.json, and tokenizer.json / generation_config.json when present.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Bundle directory to write (created; must be absent or empty unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Float dtype of the stored weights; activations are always f32.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    pub dtype: Dtype,
    /// Longest sequence (prompt + generated tokens) the runtime will accept
    /// [default: text_config.max_position_embeddings].
    #[arg(long)]
    pub max_context: Option<usize>,
    /// Replace an existing non-empty --out.
    #[arg(long)]
    pub force: bool,
    /// Export even when the checkpoint holds tensors the model does not use (they are left
    /// out and listed in a warning). Without it such a checkpoint is refused: its
    /// config.json does not describe its weights.
    #[arg(long)]
    pub allow_unused_tensors: bool,
    /// How the model reads a page, recorded in the manifest for `ove ocr --layout auto`:
    /// `page` (the whole page in one pass, as released checkpoints do) or `lines` (the
    /// runtime finds the text lines and reads each crop: models trained on lines).
    #[arg(long, value_enum, default_value_t = ReadsArg::Page)]
    pub reads: ReadsArg,
    /// With --reads lines: the text height in pixels the model was trained on; line crops
    /// are scaled to it [default: crops keep their size].
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(4..=512))]
    pub line_height: Option<u32>,
    /// Carry the checkpoint's CTC line-reader head (ctc_head.safetensors, written by
    /// `ove-train ctc`) into the bundle, with lines.onnx (the vision encoder over a batch of
    /// line crops, sharing vision.onnx's weights; schema version 3). It is a training-time
    /// module, left out by default.
    #[arg(long)]
    pub ctc_head: bool,
    /// Leave out decoder_ort.onnx, the decoder in ONNX Runtime's fused kernels
    /// (GroupQueryAttention with the KV cache written in place, RotaryEmbedding,
    /// SkipSimplifiedLayerNormalization). It shares decoder.onnx's weights, so it adds only
    /// its graph; ONNX Runtime runs it, tract and TensorRT run decoder.onnx. Not written for
    /// --target tensorrt.
    #[arg(long)]
    pub no_ort_decoder: bool,
    /// Element type of decoder_ort.onnx's KV cache: f16 halves the cache's memory and
    /// traffic (attention then computes in f16; its cost on the golden cases is printed by
    /// `cargo test --workspace --test golden -- --nocapture`). decoder.onnx keeps f32.
    #[arg(long, value_enum, default_value_t = KvCacheArg::F32, conflicts_with = "no_ort_decoder")]
    pub kv_cache: KvCacheArg,
    /// With --reads lines: what reads each line crop: `decoder` (the model's own
    /// generation) or `ctc` (the CTC head on the vision encoder, no decoder step; needs
    /// --ctc-head).
    #[arg(long, value_enum, default_value_t = LineReaderArg::Decoder)]
    pub line_reader: LineReaderArg,
    /// Quantize weights to int4 (weight-only, blockwise round-to-nearest): the decoder's
    /// linear layers (q, k, v, o, gate, up, down) and lm_head, with MatMulNBits accuracy
    /// level 4 (int8 activations, ONNX Runtime's fast CPU kernels) on the ort target; the
    /// rest keeps --dtype. --int4-exact for the closest int4 gets to the float model.
    #[arg(long)]
    pub int4: bool,
    /// The exact int4 path: lm_head keeps --dtype and the matmuls run in f32 on the
    /// dequantized weights (accuracy level 0). Slower: the f32 lm_head is most of what a
    /// decoded token reads.
    #[arg(long, requires = "int4", conflicts_with_all = ["int4_accuracy_level", "quantize_lm_head"])]
    pub int4_exact: bool,
    /// int4 block size (values of K per scale) [default: 32 for ort, 128 for tensorrt].
    #[arg(long, requires = "int4")]
    pub block_size: Option<usize>,
    /// Asymmetric int4 (per-block zero points); ort target only.
    #[arg(long, requires = "int4")]
    pub int4_asym: bool,
    /// Runtime the int4 graph is for: ort (com.microsoft MatMulNBits; also runs on tract)
    /// or tensorrt (INT4 initializers + opset-21 DequantizeLinear; block 64 or 128, and a
    /// K that is not a multiple of the block is zero-padded to one, with a Pad on the
    /// activation: the product is unchanged).
    #[arg(long, default_value = "ort", value_parser = parse_target, requires = "int4")]
    pub target: Int4Target,
    /// Keep lm_head in --dtype (it is int4 by default).
    #[arg(long, requires = "int4", conflicts_with = "quantize_lm_head")]
    pub keep_lm_head: bool,
    /// Quantize lm_head (the default; kept for scripts written before it was).
    #[arg(long, requires = "int4", hide = true)]
    pub quantize_lm_head: bool,
    /// Also quantize the vision encoder and merger linear layers.
    #[arg(long, requires = "int4")]
    pub quantize_vision: bool,
    /// Also quantize the embedding table (embed_tokens.safetensors) to 4 bits in the
    /// GatherBlockQuantized layout, with the int4 block size and symmetry (block 32: about
    /// 1/6 of the f32 table, 1/3 of the f16 one); the runtime dequantizes only the rows it
    /// gathers. A tied lm_head is not
    /// affected (it is quantized only by --quantize-lm-head).
    #[arg(long, requires = "int4")]
    pub quantize_embeddings: bool,
    /// MatMulNBits accuracy_level written into the graph (ort target) [default: 4; 0 with
    /// --int4-exact or --target tensorrt]: 4 lets ONNX Runtime quantize activations to int8
    /// for its fast int4 kernels, 0 computes in f32 (exact); 1-3 for f32/f16/bf16
    /// activations where supported. tract ignores it.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u8).range(0..=4), requires = "int4")]
    pub int4_accuracy_level: Option<u8>,
}

/// `--line-reader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineReaderArg {
    Decoder,
    Ctc,
}

/// `--kv-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvCacheArg {
    F32,
    F16,
}

/// `--reads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadsArg {
    Page,
    Lines,
}

fn parse_target(s: &str) -> Result<Int4Target, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

fn parse_dtype(s: &str) -> Result<Dtype, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let base = if args.int4_exact || args.target != Int4Target::Ort {
        Int4Options::exact()
    } else {
        Int4Options::default()
    };
    let int4 = args.int4.then_some(Int4Options {
        target: args.target,
        block_size: args.block_size,
        symmetric: !args.int4_asym,
        lm_head: !args.int4_exact && !args.keep_lm_head,
        vision: args.quantize_vision,
        embeddings: args.quantize_embeddings,
        accuracy_level: args.int4_accuracy_level.unwrap_or(base.accuracy_level),
    });
    let opts = ExportOptions {
        checkpoint: args.checkpoint,
        out: args.out,
        dtype: args.dtype,
        int4,
        max_context: args.max_context,
        force: args.force,
        progress: std::io::stderr().is_terminal(),
        allow_unused_tensors: args.allow_unused_tensors,
        reading: Reading {
            layout: match args.reads {
                ReadsArg::Page => PageReading::Page,
                ReadsArg::Lines => PageReading::Lines,
            },
            line_height: args.line_height,
            reader: match args.line_reader {
                LineReaderArg::Decoder => LineReader::Decoder,
                LineReaderArg::Ctc => LineReader::Ctc,
            },
        },
        ctc_head: args.ctc_head,
        ort_decoder: !args.no_ort_decoder,
        ort_kv_f16: args.kv_cache == KvCacheArg::F16,
    };
    let report = export(&opts)?;
    let m = &report.manifest;
    println!(
        "wrote {} ({} files, {:.1} MB, weights {}{}, {} tensors, max context {})",
        report.out.display(),
        m.files.len(),
        report.bytes as f64 / 1e6,
        m.dtype,
        quant_summary(&m.quantization),
        report.tensors,
        m.max_context
    );
    Ok(ExitCode::SUCCESS)
}

/// ", int4 ort block 32 sym accuracy level 4 (decoder_linear, lm_head; 197 tensors, worst
/// rel error 0.091)" or "".
fn quant_summary(q: &ove_core::manifest::Quantization) -> String {
    if q.scheme == "none" {
        return String::new();
    }
    let worst = q
        .tensors
        .iter()
        .map(|t| t.rel_frobenius_error)
        .fold(0.0, f64::max);
    format!(
        ", {} {} block {} {}{} ({}; {} tensors, worst rel error {:.3})",
        q.scheme,
        q.target.as_deref().unwrap_or("?"),
        q.block_size.unwrap_or(0),
        if q.symmetric == Some(false) {
            "asym"
        } else {
            "sym"
        },
        q.accuracy_level
            .map(|l| format!(" accuracy level {l}"))
            .unwrap_or_default(),
        q.parts.join(", "),
        q.tensors.len(),
        worst
    )
}
