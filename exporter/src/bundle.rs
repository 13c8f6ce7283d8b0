//! Writing a bundle directory: graphs, embedding table, copied configs, manifest; all in
//! a temporary directory beside the output, renamed into place only once complete, so a
//! failed or interrupted export never leaves a half bundle where a runtime would look.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ove_core::checkpoint::{Checkpoint, GENERATION_FILE, PREPROCESSOR_FILE, TOKENIZER_FILE};
use ove_core::ctc::{CtcHead, CTC_HEAD_FILE};
use ove_core::manifest::{
    file_entry, Graphs, LineReader, Manifest, Quantization, QuantizedTensor, TokenIds,
};
use ove_core::onnx_proto::TensorProto;
use ove_core::ModelConfig;
use ove_quant::{
    quantize_gather_block_quantized, GatherBlockQuantizedConfig, GatherBlockQuantizedWeight,
};
use tracing::{info, warn};

use crate::data_file::DataFile;
use crate::decoder::DecoderOps;
use crate::graph::{GraphBuilder, OPSET};
use crate::int4::{Int4Linear, Int4Options, Int4Target};
use crate::nn::{Ctx, DenseLinear, LinearEmitter};
use crate::weights::Weights;
use crate::{Dtype, ExportOptions, ExportReport};

pub const VISION_FILE: &str = "vision.onnx";
pub const DECODER_FILE: &str = "decoder.onnx";
/// The decoder in ONNX Runtime's fused kernels, over decoder.onnx's weights (see
/// [`crate::decoder::DecoderOps`]).
pub const DECODER_ORT_FILE: &str = "decoder_ort.onnx";
/// The batched line encoder, written with the CTC head (`--ctc-head`).
pub const LINES_FILE: &str = "lines.onnx";
/// Default-domain opset of graphs holding INT4 `DequantizeLinear` (`--target tensorrt`).
pub const TRT_OPSET: i64 = 21;
pub const EMBEDDINGS_FILE: &str = "embed_tokens.safetensors";
/// Tensor name inside [`EMBEDDINGS_FILE`].
pub const EMBEDDINGS_TENSOR: &str = "embed_tokens";
/// The tensors of a quantized (`--quantize-embeddings`) [`EMBEDDINGS_FILE`], in the
/// `com.microsoft::GatherBlockQuantized` layout of `ove_quant::GatherBlockQuantizedWeight`:
/// uint8 codes `[V, H / 2]`, f32 scales `[V, ceil(H / block)]`, and for an asymmetric table
/// uint8 zero points `[V, ceil(blocks / 2)]` (absent: zero point 8).
pub const EMBEDDINGS_QDATA: &str = "embed_tokens.qdata";
pub const EMBEDDINGS_SCALES: &str = "embed_tokens.scales";
pub const EMBEDDINGS_ZERO_POINTS: &str = "embed_tokens.zero_points";
/// Manifest / safetensors-metadata format name of a quantized embedding table.
pub const EMBEDDINGS_QUANT_FORMAT: &str = "gatherblockquantized";
/// The checkpoint tensor of the embedding table.
const EMBED_WEIGHT: &str = "model.embed_tokens.weight";

/// Exports a checkpoint directory to a bundle directory (see the crate docs).
pub fn export(opts: &ExportOptions) -> Result<ExportReport> {
    if let Some(q) = &opts.int4 {
        q.validate()?;
    }
    check_out(&opts.out, &opts.checkpoint, opts.force)?;
    let ck = Checkpoint::open(&opts.checkpoint)
        .with_context(|| format!("opening checkpoint {}", opts.checkpoint.display()))?;
    let cfg = ck.config.clone();
    let preprocessor = ck.preprocessor.clone().with_context(|| {
        format!(
            "checkpoint {} has no {PREPROCESSOR_FILE}; the bundle needs it for image preprocessing",
            opts.checkpoint.display()
        )
    })?;
    cfg.check_preprocessor(&preprocessor)
        .map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", opts.checkpoint.display()))?;
    let max_context = opts
        .max_context
        .unwrap_or(cfg.text_config.max_position_embeddings);
    if max_context == 0 {
        bail!("--max-context must be positive");
    }
    if max_context > cfg.text_config.max_position_embeddings {
        warn!(
            max_context,
            trained = cfg.text_config.max_position_embeddings,
            "max context exceeds the model's max_position_embeddings"
        );
    }

    let tmp = temp_dir_for(&opts.out)?;
    let result = write_bundle(opts, &ck, &cfg, preprocessor, max_context, &tmp);
    match result {
        Ok((manifest, tensors)) => {
            replace_dir(&tmp, &opts.out)?;
            let bytes = manifest.files.iter().map(|f| f.bytes).sum();
            info!(out = %opts.out.display(), bytes, "bundle written");
            Ok(ExportReport {
                out: opts.out.clone(),
                manifest,
                tensors,
                bytes,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Refuses an existing non-empty output unless forced. Even forced, a non-empty directory
/// is only replaced when it holds a `manifest.json` (an earlier bundle): `--force` with a
/// mistyped `--out` must not delete an unrelated directory.
fn check_out(out: &Path, checkpoint: &Path, force: bool) -> Result<()> {
    if out.is_file() && !force {
        bail!(
            "{} exists and is a file (use --force to replace it)",
            out.display()
        );
    }
    if !out.is_dir() || std::fs::read_dir(out)?.next().is_none() {
        return Ok(());
    }
    if !force {
        bail!(
            "{} exists and is not empty (use --force to replace it)",
            out.display()
        );
    }
    if !out.join(ove_core::manifest::MANIFEST_FILE).is_file() {
        bail!(
            "{} is not empty and is not a bundle (no manifest.json); refusing to replace it even with --force",
            out.display()
        );
    }
    if let (Ok(o), Ok(c)) = (out.canonicalize(), checkpoint.canonicalize()) {
        if c.starts_with(&o) {
            bail!("--out {} contains the checkpoint", out.display());
        }
    }
    Ok(())
}

/// A fresh directory beside `out` (same filesystem, so the final rename is atomic).
fn temp_dir_for(out: &Path) -> Result<PathBuf> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a directory name", out.display()))?
        .to_string_lossy();
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    Ok(tmp)
}

/// Moves the finished bundle into place, replacing what `check_out` allowed to replace.
fn replace_dir(tmp: &Path, out: &Path) -> Result<()> {
    if out.is_dir() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    } else if out.exists() {
        std::fs::remove_file(out).with_context(|| format!("removing {}", out.display()))?;
    }
    std::fs::rename(tmp, out)
        .with_context(|| format!("moving {} to {}", tmp.display(), out.display()))
}

fn write_bundle(
    opts: &ExportOptions,
    ck: &Checkpoint,
    cfg: &ModelConfig,
    preprocessor: ove_core::PreprocessorConfig,
    max_context: usize,
    dir: &Path,
) -> Result<(Manifest, u64)> {
    let progress = if opts.progress {
        let pb = ProgressBar::new(ck.names().count() as u64);
        pb.set_style(
            ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} tensors ({elapsed})")
                .expect("static template")
                .progress_chars("=> "),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let weights = Weights::new(ck, opts.dtype, progress);
    // Whether lines.onnx was written (with the CTC head; see below for when it is not).
    let mut lines_written = false;
    // Whether decoder_ort.onnx was written (`ExportOptions::ort_decoder`, not for TensorRT).
    let mut ort_decoder_written = false;
    let ort_ops = DecoderOps::OrtFused {
        kv_f16: opts.ort_kv_f16,
    };
    let (quantization, vision_opset, decoder_opset) = match &opts.int4 {
        None => {
            let dense = DenseLinear;
            weights.progress.set_message("vision");
            info!("building {VISION_FILE}");
            let vision = build_graph(dir, VISION_FILE, OPSET, &weights, &dense, vec![], |cx| {
                crate::vision::build(cx, cfg)
            })?;
            if opts.ctc_head {
                build_lines(dir, OPSET, &weights, &dense, vision, cfg)?;
                lines_written = true;
            }
            weights.progress.set_message("decoder");
            info!("building {DECODER_FILE}");
            let decoder = build_graph(dir, DECODER_FILE, OPSET, &weights, &dense, vec![], |cx| {
                crate::decoder::build(cx, cfg, DecoderOps::Portable, max_context)
            })?;
            if opts.ort_decoder {
                build_ort_decoder(
                    dir,
                    OPSET,
                    &weights,
                    &dense,
                    decoder,
                    cfg,
                    max_context,
                    ort_ops,
                )?;
                ort_decoder_written = true;
            }
            let q = Quantization {
                scheme: "none".into(),
                ..Default::default()
            };
            (q, OPSET, OPSET)
        }
        Some(q) => {
            // INT4 DequantizeLinear with block_size needs opset 21 in the graphs that use it.
            let trt_opset = |quantized: bool| {
                if quantized && q.target == Int4Target::TensorRt {
                    TRT_OPSET
                } else {
                    OPSET
                }
            };
            let (vo, dop) = (trt_opset(q.vision), trt_opset(true));
            let head = if cfg.text_config.tie_word_embeddings {
                "model.embed_tokens.weight"
            } else {
                "lm_head.weight"
            };
            let vision_linear = Int4Linear::new(q, |_| q.vision);
            weights.progress.set_message("vision");
            info!("building {VISION_FILE} (int4 {})", q.target.as_str());
            let vision = build_graph(
                dir,
                VISION_FILE,
                vo,
                &weights,
                &vision_linear,
                vec![],
                |cx| crate::vision::build(cx, cfg),
            )?;
            if opts.ctc_head && q.vision && q.target == Int4Target::TensorRt {
                // Its int4 Linears pad K assuming [rows, K] inputs; lines.onnx's are
                // [B, P, K]. The runtime reads lines one by one without it.
                warn!(
                    "{LINES_FILE} is not written for --target tensorrt with an int4 vision                      tower: lines will be read one by one"
                );
            } else if opts.ctc_head {
                // The same weights as vision.onnx's (their quantization records are
                // vision_linear's already).
                let lines_linear = Int4Linear::new(q, |_| q.vision);
                build_lines(dir, vo, &weights, &lines_linear, vision, cfg)?;
                lines_written = true;
            }
            let decoder_linear = Int4Linear::new(q, |name: &str| {
                name.starts_with("model.layers.") || (q.lm_head && name == head)
            });
            weights.progress.set_message("decoder");
            info!("building {DECODER_FILE} (int4 {})", q.target.as_str());
            let decoder = build_graph(
                dir,
                DECODER_FILE,
                dop,
                &weights,
                &decoder_linear,
                vec![],
                |cx| crate::decoder::build(cx, cfg, DecoderOps::Portable, max_context),
            )?;
            if opts.ort_decoder && q.target == Int4Target::Ort {
                // The same emitter: every quantized weight is decoder.onnx's, reused as it
                // is (nothing is read, quantized or recorded twice).
                build_ort_decoder(
                    dir,
                    dop,
                    &weights,
                    &decoder_linear,
                    decoder,
                    cfg,
                    max_context,
                    ort_ops,
                )?;
                ort_decoder_written = true;
            } else if opts.ort_decoder {
                info!("no {DECODER_ORT_FILE} for --target tensorrt (TensorRT runs decoder.onnx)");
            }
            let mut tensors = vision_linear.into_records();
            tensors.extend(decoder_linear.into_records());
            let worst = tensors
                .iter()
                .map(|t| t.rel_frobenius_error)
                .fold(0.0, f64::max);
            info!(
                tensors = tensors.len(),
                worst_rel_frobenius = worst,
                "int4 quantized"
            );
            let q = Quantization {
                scheme: "int4".into(),
                target: Some(q.target.as_str().to_string()),
                block_size: Some(q.block_size()),
                symmetric: Some(q.symmetric),
                parts: q.parts(),
                accuracy_level: (q.target == Int4Target::Ort).then_some(q.accuracy_level),
                tensors,
            };
            (q, vo, dop)
        }
    };
    tracing::debug!(vision_opset, decoder_opset, "graph opsets");
    weights.progress.set_message("embed");
    let mut quantization = quantization;
    match &opts.int4 {
        Some(q) if q.embeddings => {
            let record = write_quantized_embeddings(dir, &weights, cfg, q)?;
            info!(
                rel_frobenius = record.rel_frobenius_error,
                max_abs = record.max_abs_error,
                "embedding table quantized"
            );
            quantization.tensors.push(record);
        }
        _ => write_embeddings(dir, &weights, cfg)?,
    }
    weights.progress.finish_with_message("done");
    let tensors = weights.progress.position();
    check_unused(ck, &weights.unused(), opts.allow_unused_tensors)?;

    let mut files = vec![
        VISION_FILE.to_string(),
        format!("{VISION_FILE}.data"),
        DECODER_FILE.to_string(),
        format!("{DECODER_FILE}.data"),
        EMBEDDINGS_FILE.to_string(),
    ];
    let mut tokenizer = None;
    for name in [TOKENIZER_FILE, PREPROCESSOR_FILE, GENERATION_FILE] {
        let src = ck.dir.join(name);
        if src.is_file() {
            // Read and write rather than fs::copy, which would carry over the source's
            // permissions (a read-only checkpoint would give read-only bundle files).
            let bytes =
                std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            std::fs::write(dir.join(name), bytes)
                .with_context(|| format!("writing {}/{name}", dir.display()))?;
            files.push(name.to_string());
            if name == TOKENIZER_FILE {
                tokenizer = Some(name.to_string());
            }
        }
    }

    let ctc_head = if opts.ctc_head {
        Some(copy_ctc_head(ck, dir, cfg)?)
    } else {
        None
    };
    let lines = lines_written.then(|| LINES_FILE.to_string());
    let decoder_ort = ort_decoder_written.then(|| DECODER_ORT_FILE.to_string());
    if ort_decoder_written {
        files.push(DECODER_ORT_FILE.to_string());
        if dir.join(format!("{DECODER_ORT_FILE}.data")).is_file() {
            files.push(format!("{DECODER_ORT_FILE}.data"));
        }
    }
    if let Some(name) = &ctc_head {
        files.push(name.clone());
    }
    if lines_written {
        files.push(LINES_FILE.to_string());
        // Only when some weight of the line encoder was not vision.onnx's.
        if dir.join(format!("{LINES_FILE}.data")).is_file() {
            files.push(format!("{LINES_FILE}.data"));
        }
    }
    if opts.reading.reader == LineReader::Ctc && ctc_head.is_none() {
        bail!("the bundle is to read lines with the CTC head (reader ctc) but --ctc-head was not given");
    }

    let tokens = token_ids(ck, cfg)?;
    let files = files
        .iter()
        .map(|f| file_entry(dir, f))
        .collect::<Result<Vec<_>, _>>()?;
    let graphs = Graphs {
        vision: VISION_FILE.into(),
        decoder: DECODER_FILE.into(),
        embeddings: EMBEDDINGS_FILE.into(),
        tokenizer,
        ctc_head,
        lines,
        decoder_batch: true,
        decoder_ort,
    };
    let manifest = Manifest {
        schema_version: opts.reading.schema_version().max(graphs.schema_version()),
        created_by: format!("ove {}", env!("CARGO_PKG_VERSION")),
        dtype: opts.dtype.as_str().to_string(),
        model: cfg.clone(),
        preprocessor,
        generation: ck.generation.clone(),
        tokens,
        graphs,
        max_context,
        quantization,
        reading: opts.reading,
        files,
    };
    manifest
        .write(dir)
        .with_context(|| format!("writing {}/manifest.json", dir.display()))?;
    Ok((manifest, tensors))
}

/// Copies the checkpoint's CTC head into the bundle after checking it fits the encoder.
fn copy_ctc_head(ck: &Checkpoint, dir: &Path, cfg: &ModelConfig) -> Result<String> {
    let src = ck.dir.join(CTC_HEAD_FILE);
    if !src.is_file() {
        bail!(
            "--ctc-head: {} does not exist (ove-train ctc writes it beside the checkpoint)",
            src.display()
        );
    }
    let head = CtcHead::load(&src)?;
    if head.d != cfg.vision_config.hidden_size {
        bail!(
            "{}: the head reads {}-wide tokens, the vision encoder gives {}",
            src.display(),
            head.d,
            cfg.vision_config.hidden_size
        );
    }
    let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
    std::fs::write(dir.join(CTC_HEAD_FILE), bytes)
        .with_context(|| format!("writing {}/{CTC_HEAD_FILE}", dir.display()))?;
    Ok(CTC_HEAD_FILE.to_string())
}

/// A tensor the graphs did not read is an error naming it (the checkpoint is not what
/// config.json says: a renamed layer, an extra head, a mismatched config), unless the
/// caller allows it; then it is a warning.
fn check_unused(ck: &Checkpoint, unused: &[&str], allow: bool) -> Result<()> {
    if unused.is_empty() {
        return Ok(());
    }
    let names = ove_core::checkpoint::name_list(unused);
    if allow {
        warn!(count = unused.len(), tensors = %names, "checkpoint tensors not exported");
        return Ok(());
    }
    bail!(
        "checkpoint {}: {} tensor(s) are not used by the model config.json describes: {names} \
         (a different architecture or a config that does not match the weights; \
         --allow-unused-tensors exports anyway and leaves them out)",
        ck.dir.display(),
        unused.len()
    )
}

/// Builds `lines.onnx`, the batched line encoder, over vision.onnx's weights (`vision`:
/// its initializers, whose bytes in `vision.onnx.data` the new graph points at). The
/// progress bar and the tensor count are left as vision.onnx left them: no tensor is new.
fn build_lines(
    dir: &Path,
    opset: i64,
    weights: &Weights,
    linear: &dyn LinearEmitter,
    vision: Vec<TensorProto>,
    cfg: &ModelConfig,
) -> Result<()> {
    let position = weights.progress.position();
    info!("building {LINES_FILE}");
    build_graph(dir, LINES_FILE, opset, weights, linear, vision, |cx| {
        crate::vision::build_lines(cx, cfg)
    })?;
    weights.progress.set_position(position);
    // Every weight was vision.onnx's: lines.onnx.data holds nothing.
    let data = dir.join(format!("{LINES_FILE}.data"));
    if std::fs::metadata(&data).is_ok_and(|m| m.len() == 0) {
        std::fs::remove_file(&data).with_context(|| format!("removing {}", data.display()))?;
    }
    Ok(())
}

/// Builds `decoder_ort.onnx`, the decoder in ONNX Runtime's fused kernels, over
/// decoder.onnx's weights (`decoder`: its initializers). Like [`build_lines`], it leaves
/// the progress bar where it was and drops its data file when nothing went into it.
#[allow(clippy::too_many_arguments)]
fn build_ort_decoder(
    dir: &Path,
    opset: i64,
    weights: &Weights,
    linear: &dyn LinearEmitter,
    decoder: Vec<TensorProto>,
    cfg: &ModelConfig,
    max_context: usize,
    ops: DecoderOps,
) -> Result<()> {
    let position = weights.progress.position();
    info!("building {DECODER_ORT_FILE}");
    build_graph(
        dir,
        DECODER_ORT_FILE,
        opset,
        weights,
        linear,
        decoder,
        |cx| crate::decoder::build(cx, cfg, ops, max_context),
    )?;
    weights.progress.set_position(position);
    let data = dir.join(format!("{DECODER_ORT_FILE}.data"));
    if std::fs::metadata(&data).is_ok_and(|m| m.len() == 0) {
        std::fs::remove_file(&data).with_context(|| format!("removing {}", data.display()))?;
    }
    Ok(())
}

/// Builds one graph into `dir/file` and its external data file `dir/file.data` (empty when
/// every large initializer is one of `shared`). Returns the graph's initializers, for a
/// later graph over the same weights to share.
fn build_graph(
    dir: &Path,
    file: &str,
    opset: i64,
    weights: &Weights,
    linear: &dyn LinearEmitter,
    shared: Vec<TensorProto>,
    body: impl FnOnce(&mut Ctx) -> Result<()>,
) -> Result<Vec<TensorProto>> {
    let data = DataFile::create(dir, &format!("{file}.data"))?;
    let name = file.trim_end_matches(".onnx");
    let mut g = GraphBuilder::new(name, data);
    g.share_initializers(shared);
    g.set_opset(opset);
    let mut cx = Ctx {
        g,
        w: weights,
        linear_emitter: linear,
    };
    body(&mut cx).with_context(|| format!("building {file}"))?;
    let (model, data_bytes) = cx.g.finish(env!("CARGO_PKG_VERSION"))?;
    let path = dir.join(file);
    std::fs::write(&path, model.to_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    info!(file, data_bytes, "graph written");
    Ok(model.graph.map(|g| g.initializer).unwrap_or_default())
}

/// `embed_tokens.safetensors`: the `[V, H]` table in the bundle dtype, for the runtime's
/// own lookup (it splices image embeddings into the rows before the decoder runs).
fn write_embeddings(dir: &Path, weights: &Weights, cfg: &ModelConfig) -> Result<()> {
    let t = &cfg.text_config;
    let shape = vec![t.vocab_size, t.hidden_size];
    let bytes = weights.converted(EMBED_WEIGHT, &shape)?;
    let dtype = match weights.dtype {
        Dtype::F32 => safetensors::Dtype::F32,
        Dtype::F16 => safetensors::Dtype::F16,
    };
    let view = safetensors::tensor::TensorView::new(dtype, shape, &bytes)?;
    let path = dir.join(EMBEDDINGS_FILE);
    safetensors::serialize_to_file([(EMBEDDINGS_TENSOR, view)], None, &path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `embed_tokens.safetensors` quantized for `GatherBlockQuantized` (`--quantize-embeddings`):
/// the table is read as f32, quantized along H with the int4 block size and symmetry, and
/// written as [`EMBEDDINGS_QDATA`], [`EMBEDDINGS_SCALES`] and (asymmetric)
/// [`EMBEDDINGS_ZERO_POINTS`], with metadata `format`, `bits`, `block_size`, `symmetric`.
/// A tied lm_head is unaffected: the decoder graph took its own copy of the float table.
fn write_quantized_embeddings(
    dir: &Path,
    weights: &Weights,
    cfg: &ModelConfig,
    q: &Int4Options,
) -> Result<QuantizedTensor> {
    let t = &cfg.text_config;
    let (v, h) = (t.vocab_size, t.hidden_size);
    let table = weights.f32(EMBED_WEIGHT, &[v, h])?;
    let config = GatherBlockQuantizedConfig {
        block_size: q.block_size(),
        symmetric: q.symmetric,
    };
    let quantized = quantize_gather_block_quantized(&table, v, h, config)
        .with_context(|| format!("tensor {EMBED_WEIGHT}: quantizing"))?;
    drop(table);
    write_gather_block_quantized(&dir.join(EMBEDDINGS_FILE), &quantized.tensor)?;
    let m = &quantized.metrics;
    Ok(QuantizedTensor {
        name: EMBED_WEIGHT.to_string(),
        format: EMBEDDINGS_QUANT_FORMAT.to_string(),
        bits: GatherBlockQuantizedWeight::BITS,
        block_size: config.block_size,
        symmetric: config.symmetric,
        rel_frobenius_error: m.relative_frobenius,
        max_abs_error: m.max_abs,
    })
}

/// Writes a quantized embedding table in the layout the runtime's `embed` module reads.
pub fn write_gather_block_quantized(path: &Path, t: &GatherBlockQuantizedWeight) -> Result<()> {
    let scales: Vec<u8> = t.scales.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut views = vec![
        (
            EMBEDDINGS_QDATA,
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::U8,
                t.data_shape().to_vec(),
                &t.data,
            )?,
        ),
        (
            EMBEDDINGS_SCALES,
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                t.scales_shape().to_vec(),
                &scales,
            )?,
        ),
    ];
    if let (Some(zp), Some(shape)) = (&t.zero_points, t.zero_points_shape()) {
        views.push((
            EMBEDDINGS_ZERO_POINTS,
            safetensors::tensor::TensorView::new(safetensors::Dtype::U8, shape.to_vec(), zp)?,
        ));
    }
    let metadata = std::collections::HashMap::from([
        ("format".to_string(), EMBEDDINGS_QUANT_FORMAT.to_string()),
        (
            "bits".to_string(),
            GatherBlockQuantizedWeight::BITS.to_string(),
        ),
        ("block_size".to_string(), t.block_size().to_string()),
        ("symmetric".to_string(), t.zero_points.is_none().to_string()),
    ]);
    safetensors::serialize_to_file(views, Some(metadata), path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Special token ids from config.json, generation_config.json and tokenizer.json's
/// `added_tokens` (never constants: checkpoints and the golden cases use different ids).
fn token_ids(ck: &Checkpoint, cfg: &ModelConfig) -> Result<TokenIds> {
    let added = ck.tokenizer_path().map(|p| added_tokens(&p)).transpose()?;
    ove_core::prompt::resolve_token_ids_by(
        cfg,
        &ck.generation,
        added.as_ref().map(|a| |s: &str| a.get(s).copied()),
    )
    .with_context(|| format!("checkpoint {}", ck.dir.display()))
}

/// `content -> id` of tokenizer.json's `added_tokens`.
fn added_tokens(path: &Path) -> Result<BTreeMap<String, i64>> {
    #[derive(serde::Deserialize)]
    struct Added {
        id: i64,
        content: String,
    }
    #[derive(serde::Deserialize)]
    struct Tok {
        #[serde(default)]
        added_tokens: Vec<Added>,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let tok: Tok = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a tokenizer.json", path.display()))?;
    Ok(tok
        .added_tokens
        .into_iter()
        .map(|a| (a.content, a.id))
        .collect())
}
