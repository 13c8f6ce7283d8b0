//! `ove-train pack`: offline packing of a training manifest (the JSONL of
//! [`crate::train::data`]) into bins of at most `--max-len` tokens.
//!
//! Each sample's full length is its prompt and response tokens plus, for each image, the
//! image's token count minus its one pad: the count comes from the shared preprocessing's
//! grid (`smart_resize` of the size in the image's header, nothing else decoded) and
//! `ModelConfig::tokens_per_image`. Lengths are computed on scoped threads.
//!
//! Output in `--out`: `bins-00000.jsonl`, ... (at most [`BINS_PER_SHARD`] lines each,
//! `{"samples": [record indices], "tokens": n}`; a record index counts the manifest's
//! non-blank lines from 0) and `report.json` ([`PackReport`] plus the settings).

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use ove_core::config::{ModelConfig, PreprocessorConfig};
use ove_core::preprocess::resize::smart_resize;

use crate::train::binpack::{pack_lengths, PackConfig, PackPlan, PackReport};
use crate::train::data::Record;

/// Bins per output JSONL file.
pub const BINS_PER_SHARD: usize = 100_000;

/// Token count of one image from its size, as the preprocessing would make it.
pub fn image_tokens(
    width: usize,
    height: usize,
    config: &ModelConfig,
    pre: &PreprocessorConfig,
) -> Result<usize> {
    let (h, w) = if pre.do_resize {
        let min = pre
            .min_pixels()
            .context("preprocessor: no min_pixels (or size.shortest_edge)")?;
        let max = pre
            .max_pixels()
            .context("preprocessor: no max_pixels (or size.longest_edge)")?;
        smart_resize(height, width, pre.factor(), min, max)?
    } else {
        (height, width)
    };
    ensure!(
        h % pre.factor() == 0 && w % pre.factor() == 0,
        "image {width}x{height} is not a multiple of {} and do_resize is off",
        pre.factor()
    );
    Ok(config.tokens_per_image([1, h / pre.patch_size, w / pre.patch_size]))
}

/// The full token length of one manifest record (images relative to `base`).
pub fn record_length(
    record: &Record,
    base: &Path,
    config: &ModelConfig,
    pre: Option<&PreprocessorConfig>,
) -> Result<usize> {
    let pads = record
        .prompt_ids
        .iter()
        .filter(|&&t| t == config.image_token_id)
        .count();
    ensure!(
        pads == record.images.len(),
        "the prompt has {pads} image pad(s) for {} image(s)",
        record.images.len()
    );
    let mut len = record.prompt_ids.len() - pads + record.response_ids.len();
    if !record.images.is_empty() {
        let pre = pre.context("the sample has images but there is no preprocessor config")?;
        for img in &record.images {
            let path = base.join(img);
            let (w, h) = image::ImageReader::open(&path)
                .and_then(|r| r.with_guessed_format())
                .map_err(anyhow::Error::from)
                .and_then(|r| Ok(r.into_dimensions()?))
                .with_context(|| format!("reading the header of {}", path.display()))?;
            len += image_tokens(w as usize, h as usize, config, pre)
                .with_context(|| format!("image {}", path.display()))?;
        }
    }
    Ok(len)
}

/// Every record's length, in manifest order (blank lines skipped), on up to `threads`
/// threads. Errors name the line.
pub fn manifest_lengths(
    path: &Path,
    config: &ModelConfig,
    pre: Option<&PreprocessorConfig>,
    threads: usize,
) -> Result<Vec<usize>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let per = lines.len().div_ceil(threads.max(1)).max(1);
    let parts: Vec<Result<Vec<usize>>> = std::thread::scope(|s| {
        let handles: Vec<_> = lines
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|&(i, line)| {
                            let at = || format!("{}:{}", path.display(), i + 1);
                            let record: Record = serde_json::from_str(line).with_context(at)?;
                            record_length(&record, base, config, pre).with_context(at)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("length thread panicked"))
            .collect()
    });
    let mut lengths = Vec::with_capacity(lines.len());
    for p in parts {
        lengths.extend(p?);
    }
    Ok(lengths)
}

#[derive(Serialize)]
struct BinLine<'a> {
    samples: &'a [u32],
    tokens: u64,
}

#[derive(Serialize)]
struct ReportFile<'a> {
    manifest: String,
    seed: u64,
    min_fill: &'a [f64],
    shards: usize,
    bin_files: Vec<String>,
    #[serde(flatten)]
    report: &'a PackReport,
}

/// Writes the bins and `report.json` into `out`; returns the bin file names.
pub fn write_packing(
    out: &Path,
    manifest: &Path,
    lengths: &[u32],
    plan: &PackPlan,
    cfg: &PackConfig,
    report: &PackReport,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut names = Vec::new();
    for (k, chunk) in plan.bins.chunks(BINS_PER_SHARD).enumerate() {
        let name = format!("bins-{k:05}.jsonl");
        let path = out.join(&name);
        let mut w = BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        for bin in chunk {
            let tokens = bin.iter().map(|&i| lengths[i as usize] as u64).sum();
            serde_json::to_writer(
                &mut w,
                &BinLine {
                    samples: bin,
                    tokens,
                },
            )?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        names.push(name);
    }
    let file = ReportFile {
        manifest: manifest.display().to_string(),
        seed: cfg.seed,
        min_fill: &cfg.min_fill,
        shards: cfg.shards,
        bin_files: names.clone(),
        report,
    };
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&file)?,
    )?;
    Ok(names)
}

/// The whole `ove-train pack`: lengths, packing, files; returns the report.
pub fn pack_manifest(
    manifest: &Path,
    config: &ModelConfig,
    pre: Option<&PreprocessorConfig>,
    cfg: &PackConfig,
    out: &Path,
) -> Result<PackReport> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lengths = manifest_lengths(manifest, config, pre, threads)?;
    if lengths.is_empty() {
        bail!("{}: no samples", manifest.display());
    }
    let lengths: Vec<u32> = lengths
        .into_iter()
        .map(|l| u32::try_from(l).unwrap_or(u32::MAX))
        .collect();
    let plan = pack_lengths(&lengths, cfg);
    let report = PackReport::new(&lengths, &plan, cfg.capacity);
    write_packing(out, manifest, &lengths, &plan, cfg, &report)?;
    Ok(report)
}
