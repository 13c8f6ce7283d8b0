//! `ove-train pack`: offline packing of a training manifest (the JSONL of
//! [`crate::train::data`]) into bins of at most `--max-len` tokens.
//!
//! Each sample's full length is its prompt and response tokens plus, for each image, the
//! image's token count minus its one pad: the count comes from the shared preprocessing's
//! grid (`ove_core::preprocess::patch_grid` of the size in the image's header, nothing else decoded) and
//! `ModelConfig::tokens_per_image`. Lengths are computed on scoped threads.
//!
//! Output in `--out`: `bins-00000.jsonl`, ... (at most [`BINS_PER_SHARD`] lines each,
//! `{"samples": [record indices], "tokens": n}`; a record index counts the manifest's
//! non-blank lines from 0) and `report.json` ([`PackReport`] plus the settings).
//!
//! `--data` may also name tar shards ([`crate::train::shards`]); a record index then counts
//! the shards' samples from 0, shard after shard. A sample whose image header cannot be
//! read (or whose image the preprocessing refuses) is skipped and counted, never fatal: it
//! is in no bin, and `report.json` gives `skipped_images` (count and first names).

use std::io::{BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use ove_core::config::{ModelConfig, PreprocessorConfig};
use ove_core::preprocess::patch_grid;
use ove_core::preprocess::PreprocessError;

use crate::train::binpack::{pack_lengths, PackConfig, PackPlan, PackReport};
use crate::train::data::{is_image_fault, ImageRef, Record, Skipped};
use crate::train::shards::{read_shard, shard_paths};

/// Bins per output JSONL file.
pub const BINS_PER_SHARD: usize = 100_000;

/// Token count of one image from its size, as the preprocessing would make it.
pub fn image_tokens(
    width: usize,
    height: usize,
    config: &ModelConfig,
    pre: &PreprocessorConfig,
) -> Result<usize> {
    Ok(config.tokens_per_image(patch_grid(height, width, pre)?))
}

/// The full token length of one manifest record (images relative to `base`).
pub fn record_length(
    record: &Record,
    base: &Path,
    config: &ModelConfig,
    pre: Option<&PreprocessorConfig>,
) -> Result<usize> {
    record_length_or_skip(record, base, config, pre)?.map_err(|why| anyhow::anyhow!("{why}"))
}

/// As [`record_length`], with `Ok(Err(reason))` for a record to skip because an image
/// header cannot be read or the preprocessing refuses the image.
pub fn record_length_or_skip(
    record: &Record,
    base: &Path,
    config: &ModelConfig,
    pre: Option<&PreprocessorConfig>,
) -> Result<std::result::Result<usize, String>> {
    let paths: Vec<PathBuf> = record.images.iter().map(|i| base.join(i)).collect();
    let refs: Vec<ImageRef<'_>> = paths.iter().map(|p| ImageRef::File(p)).collect();
    sample_length(&record.prompt_ids, &record.response_ids, &refs, config, pre)
}

/// The header size (width, height) of one image; `Ok(Err(reason))` when the header cannot
/// be read. A file that cannot be opened is an error.
fn image_size(img: &ImageRef<'_>) -> Result<std::result::Result<(u32, u32), String>> {
    let dims = match img {
        ImageRef::File(path) => image::ImageReader::open(path)
            .and_then(|r| r.with_guessed_format())
            .with_context(|| format!("opening {}", path.display()))?
            .into_dimensions(),
        ImageRef::Bytes { bytes, .. } => image::ImageReader::new(Cursor::new(*bytes))
            .with_guessed_format()
            .with_context(|| format!("reading {}", img.name()))?
            .into_dimensions(),
    };
    Ok(dims.map_err(|e| format!("reading the header of {}: {e}", img.name())))
}

/// The full token length of one sample from its ids and images; `Ok(Err(reason))` for a
/// sample to skip (see [`record_length_or_skip`]).
pub fn sample_length(
    prompt_ids: &[i64],
    response_ids: &[i64],
    images: &[ImageRef<'_>],
    config: &ModelConfig,
    pre: Option<&PreprocessorConfig>,
) -> Result<std::result::Result<usize, String>> {
    let pads = prompt_ids
        .iter()
        .filter(|&&t| t == config.image_token_id)
        .count();
    ensure!(
        pads == images.len(),
        "the prompt has {pads} image pad(s) for {} image(s)",
        images.len()
    );
    let mut len = prompt_ids.len() - pads + response_ids.len();
    if !images.is_empty() {
        let pre = pre.context("the sample has images but there is no preprocessor config")?;
        for img in images {
            let (w, h) = match image_size(img)? {
                Ok(d) => d,
                Err(why) => return Ok(Err(why)),
            };
            match image_tokens(w as usize, h as usize, config, pre) {
                Ok(t) => len += t,
                Err(e)
                    if e.downcast_ref::<PreprocessError>()
                        .is_some_and(is_image_fault) =>
                {
                    return Ok(Err(format!("{}: {e}", img.name())))
                }
                Err(e) => return Err(e.context(format!("image {}", img.name()))),
            }
        }
    }
    Ok(Ok(len))
}

/// `f` over `items` on up to `threads` scoped threads, results in order (so the outcome
/// never depends on thread timing).
pub(crate) fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let per = items.len().div_ceil(threads.max(1)).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|chunk| s.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread panicked"))
            .collect()
    })
}

/// Every record's length, in manifest order (blank lines skipped), on up to `threads`
/// threads. Errors name the line; an unreadable image header is an error here (see
/// [`data_lengths`] for skipping).
pub fn manifest_lengths(
    path: &Path,
    config: &ModelConfig,
    pre: Option<&PreprocessorConfig>,
    threads: usize,
) -> Result<Vec<usize>> {
    let (lengths, skipped) = data_lengths(path, config, pre, threads)?;
    if skipped.count > 0 {
        bail!(
            "{} sample(s) with unreadable images: {}",
            skipped.count,
            skipped.first.join("; ")
        );
    }
    Ok(lengths.into_iter().flatten().collect())
}

/// Every sample's length of `data` (a JSONL manifest or tar shards), in record order, on up
/// to `threads` threads; `None` for a sample skipped for its image (counted in the
/// [`Skipped`]). Other errors name the line or the shard key.
pub fn data_lengths(
    data: &Path,
    config: &ModelConfig,
    pre: Option<&PreprocessorConfig>,
    threads: usize,
) -> Result<(Vec<Option<usize>>, Skipped)> {
    let results: Vec<(String, Result<std::result::Result<usize, String>>)> =
        if let Some(shards) = shard_paths(data)? {
            let mut samples = Vec::new();
            for shard in shards {
                samples.extend(read_shard(&shard)?);
            }
            par_map(&samples, threads, |s| {
                let refs: Vec<ImageRef<'_>> = s
                    .images
                    .iter()
                    .map(|(name, bytes)| ImageRef::Bytes { name, bytes })
                    .collect();
                let r = sample_length(
                    &s.record.prompt_ids,
                    &s.record.response_ids,
                    &refs,
                    config,
                    pre,
                );
                (s.name.clone(), r)
            })
        } else {
            let text = std::fs::read_to_string(data)
                .with_context(|| format!("reading {}", data.display()))?;
            let base = data.parent().unwrap_or(Path::new("."));
            let lines: Vec<(usize, &str)> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .collect();
            par_map(&lines, threads, |&(i, line)| {
                let at = format!("{}:{}", data.display(), i + 1);
                let r = serde_json::from_str::<Record>(line)
                    .map_err(anyhow::Error::from)
                    .and_then(|record| record_length_or_skip(&record, base, config, pre));
                (at, r)
            })
        };
    let mut lengths = Vec::with_capacity(results.len());
    let mut skipped = Skipped::default();
    for (at, r) in results {
        match r.with_context(|| at.clone())? {
            Ok(len) => lengths.push(Some(len)),
            Err(why) => {
                skipped.add(format!("{at} ({why})"));
                lengths.push(None);
            }
        }
    }
    Ok((lengths, skipped))
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
    /// Samples skipped because an image could not be read (in no bin).
    skipped_images: &'a Skipped,
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
    write_packing_with_skips(
        out,
        manifest,
        lengths,
        plan,
        cfg,
        report,
        &Skipped::default(),
    )
}

/// [`write_packing`], with the samples skipped for their images in `report.json`.
pub fn write_packing_with_skips(
    out: &Path,
    manifest: &Path,
    lengths: &[u32],
    plan: &PackPlan,
    cfg: &PackConfig,
    report: &PackReport,
    skipped: &Skipped,
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
        skipped_images: skipped,
        report,
    };
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&file)?,
    )?;
    Ok(names)
}

/// The bins of a `pack` output folder (every `bins-*.jsonl`, in name order): each a list
/// of record indices of the manifest it was made from.
pub fn read_bins(dir: &Path) -> Result<Vec<Vec<usize>>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("bins-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "{}: no bins-*.jsonl (write them with `ove-train pack`)",
            dir.display()
        );
    }
    #[derive(serde::Deserialize)]
    struct Bin {
        samples: Vec<usize>,
    }
    let mut bins = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let b: Bin =
                serde_json::from_str(line).with_context(|| format!("{}:{}", f.display(), i + 1))?;
            bins.push(b.samples);
        }
    }
    Ok(bins)
}

/// The whole `ove-train pack`: lengths, packing, files; returns the report. Samples
/// skipped for their images are logged and listed in `report.json`
/// ([`pack_manifest_with_skips`] returns them too).
pub fn pack_manifest(
    manifest: &Path,
    config: &ModelConfig,
    pre: Option<&PreprocessorConfig>,
    cfg: &PackConfig,
    out: &Path,
) -> Result<PackReport> {
    Ok(pack_manifest_with_skips(manifest, config, pre, cfg, out)?.0)
}

/// [`pack_manifest`], also returning the samples skipped for their images.
pub fn pack_manifest_with_skips(
    manifest: &Path,
    config: &ModelConfig,
    pre: Option<&PreprocessorConfig>,
    cfg: &PackConfig,
    out: &Path,
) -> Result<(PackReport, Skipped)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (all, skipped) = data_lengths(manifest, config, pre, threads)?;
    skipped.warn(manifest);
    // Pack the kept samples, then map the bins back to record indices.
    let kept: Vec<u32> = (0..all.len() as u32)
        .filter(|&i| all[i as usize].is_some())
        .collect();
    if kept.is_empty() {
        bail!("{}: no samples", manifest.display());
    }
    let lengths: Vec<u32> = all
        .iter()
        .map(|l| l.map_or(0, |l| u32::try_from(l).unwrap_or(u32::MAX)))
        .collect();
    let kept_lengths: Vec<u32> = kept.iter().map(|&i| lengths[i as usize]).collect();
    let plan = pack_lengths(&kept_lengths, cfg);
    let report = PackReport::new(&kept_lengths, &plan, cfg.capacity);
    let plan = PackPlan {
        bins: plan
            .bins
            .iter()
            .map(|b| b.iter().map(|&i| kept[i as usize]).collect())
            .collect(),
        dropped: plan.dropped.iter().map(|&i| kept[i as usize]).collect(),
    };
    write_packing_with_skips(out, manifest, &lengths, &plan, cfg, &report, &skipped)?;
    Ok((report, skipped))
}
