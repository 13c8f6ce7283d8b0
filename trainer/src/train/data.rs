//! Training data as JSONL, one sample per line:
//! `{"prompt_ids": [...], "response_ids": [...], "images": ["a.png", ...]}`.
//!
//! `prompt_ids` is the tokenized prompt (chat template applied) with exactly one
//! `<|image_pad|>` per image, where the image goes; the trainer preprocesses the images
//! with the checkpoint's `preprocessor_config.json` and expands each pad to the image's
//! token count. `response_ids` (the assistant's reply, end-of-turn token included) are the
//! trained tokens. Image paths are relative to the JSONL file.
//!
//! `--data` may also name WebDataset-style tar shards ([`crate::train::shards`]): the same
//! record per key in `KEY.json`, the images as `KEY.png` / `KEY.0.png`, ... members.
//!
//! A sample whose image cannot be decoded (truncated, corrupt, not an image, no pixels,
//! over the pixel limit or the aspect ratio) is skipped and counted, never fatal: the
//! count and the first few names are logged at the end of loading ([`Skipped`]). A
//! missing image file, a bad record or a preprocessor config error still stops loading.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use ove_core::config::{ModelConfig, PreprocessorConfig};
use ove_core::preprocess::{
    load_rgb, load_rgb_from_bytes, preprocess, DecodeOptions, PreprocessError,
};
use ove_core::prompt::expand_image_pads;

use crate::train::pack_manifest::par_map;
use crate::train::packing::Sample;
use crate::train::shards::{read_shard, shard_paths};

/// How many skipped sample names [`Skipped`] keeps for its message.
pub const SKIPPED_NAMES: usize = 5;

/// Samples skipped because an image could not be decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub count: usize,
    /// The first [`SKIPPED_NAMES`] samples skipped, `FILE:LINE (image: error)`.
    pub first: Vec<String>,
}

impl Skipped {
    pub fn add(&mut self, what: String) {
        self.count += 1;
        if self.first.len() < SKIPPED_NAMES {
            self.first.push(what);
        }
    }

    pub fn merge(&mut self, other: Skipped) {
        self.count += other.count;
        for w in other.first {
            if self.first.len() < SKIPPED_NAMES {
                self.first.push(w);
            }
        }
    }

    /// Logs the count and the first names (a warning), if anything was skipped.
    pub fn warn(&self, source: &Path) {
        if self.count > 0 {
            tracing::warn!(
                skipped = self.count,
                first = ?self.first,
                "{}: {} sample(s) skipped for corrupt or undecodable images",
                source.display(),
                self.count
            );
        }
    }
}

/// Where one image comes from: a file, or bytes read from a shard.
#[derive(Debug, Clone, Copy)]
pub enum ImageRef<'a> {
    File(&'a Path),
    Bytes { name: &'a str, bytes: &'a [u8] },
}

impl ImageRef<'_> {
    pub fn name(&self) -> String {
        match self {
            ImageRef::File(p) => p.display().to_string(),
            ImageRef::Bytes { name, .. } => name.to_string(),
        }
    }
}

/// Whether a preprocessing error belongs to the image (skip the sample) rather than to
/// the setup (a missing file, the config: stop).
pub fn is_image_fault(e: &PreprocessError) -> bool {
    !matches!(e, PreprocessError::Io { .. } | PreprocessError::Config(_))
}

/// The training sample from its token ids and images. `Ok(Err(reason))`: an image could
/// not be decoded, the sample is to be skipped.
pub fn build_sample(
    prompt_ids: &[i64],
    response_ids: &[i64],
    images: &[ImageRef<'_>],
    config: &ModelConfig,
    preprocessor: Option<&PreprocessorConfig>,
) -> Result<std::result::Result<Sample, String>> {
    let mut pixels = Vec::new();
    let mut grids = Vec::new();
    if !images.is_empty() {
        let pre = preprocessor
            .context("the sample has images but the checkpoint has no preprocessor_config.json")?;
        let opts = DecodeOptions::default();
        for img in images {
            let r = match img {
                ImageRef::File(p) => load_rgb(p, &opts),
                ImageRef::Bytes { bytes, .. } => load_rgb_from_bytes(bytes, &opts),
            }
            .and_then(|rgb| preprocess(&rgb, pre));
            match r {
                Ok(p) => {
                    pixels.extend_from_slice(&p.pixel_values);
                    grids.push(p.grid_thw);
                }
                Err(e) if is_image_fault(&e) => return Ok(Err(format!("{}: {e}", img.name()))),
                Err(e) => {
                    return Err(anyhow::Error::from(e))
                        .with_context(|| format!("preprocessing {}", img.name()))
                }
            }
        }
    }
    let counts: Vec<usize> = grids.iter().map(|g| config.tokens_per_image(*g)).collect();
    let prompt = expand_image_pads(prompt_ids, config.image_token_id, &counts)?;
    let supervised: Vec<bool> = std::iter::repeat_n(false, prompt.len())
        .chain(std::iter::repeat_n(true, response_ids.len()))
        .collect();
    let mut ids = prompt;
    ids.extend_from_slice(response_ids);
    Ok(Ok(Sample::new(ids, &supervised, pixels, grids)?))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub prompt_ids: Vec<i64>,
    pub response_ids: Vec<i64>,
    #[serde(default)]
    pub images: Vec<String>,
}

impl Record {
    /// The training sample: images preprocessed, pads expanded, the response supervised.
    /// An undecodable image is an error here (see [`Record::to_sample_or_skip`]).
    pub fn to_sample(
        &self,
        base: &Path,
        config: &ModelConfig,
        preprocessor: Option<&PreprocessorConfig>,
    ) -> Result<Sample> {
        self.to_sample_or_skip(base, config, preprocessor)?
            .map_err(|why| anyhow::anyhow!("preprocessing {why}"))
    }

    /// As [`Record::to_sample`], with `Ok(Err(reason))` for a sample to skip because an
    /// image could not be decoded.
    pub fn to_sample_or_skip(
        &self,
        base: &Path,
        config: &ModelConfig,
        preprocessor: Option<&PreprocessorConfig>,
    ) -> Result<std::result::Result<Sample, String>> {
        let paths: Vec<PathBuf> = self.images.iter().map(|i| base.join(i)).collect();
        let refs: Vec<ImageRef<'_>> = paths.iter().map(|p| ImageRef::File(p)).collect();
        build_sample(
            &self.prompt_ids,
            &self.response_ids,
            &refs,
            config,
            preprocessor,
        )
    }
}

/// Samples loaded, and those skipped for their images.
#[derive(Debug)]
pub struct Loaded {
    pub samples: Vec<Sample>,
    /// `records[i]`: the record number of `samples[i]` (non-blank manifest line, or record
    /// in shard order, from 0), the numbering `ove-train pack` uses in its bins.
    pub records: Vec<usize>,
    pub skipped: Skipped,
}

/// Reads every sample of `data`: a JSONL file, or tar shards ([`shard_paths`]). Samples
/// with undecodable images are skipped and counted (and logged, see [`Skipped::warn`]);
/// other errors name the line or the shard key.
pub fn read_data(
    data: &Path,
    config: &ModelConfig,
    preprocessor: Option<&PreprocessorConfig>,
) -> Result<Loaded> {
    let mut samples = Vec::new();
    let mut records = Vec::new();
    let mut skipped = Skipped::default();
    if let Some(shards) = shard_paths(data)? {
        let mut record = 0;
        for shard in shards {
            for s in read_shard(&shard)? {
                record += 1;
                let refs: Vec<ImageRef<'_>> = s
                    .images
                    .iter()
                    .map(|(name, bytes)| ImageRef::Bytes { name, bytes })
                    .collect();
                match build_sample(
                    &s.record.prompt_ids,
                    &s.record.response_ids,
                    &refs,
                    config,
                    preprocessor,
                )
                .with_context(|| s.name.clone())?
                {
                    Ok(sample) => {
                        samples.push(sample);
                        records.push(record - 1);
                    }
                    Err(why) => skipped.add(format!("{} ({why})", s.name)),
                }
            }
        }
    } else {
        let text =
            std::fs::read_to_string(data).with_context(|| format!("reading {}", data.display()))?;
        let base = data.parent().unwrap_or(Path::new("."));
        let at = |i: usize| format!("{}:{}", data.display(), i + 1);
        let parsed = parse_records(data, &text)?;
        // Decoding and preprocessing the images is most of the loading time: spread it over
        // the cores, keeping the manifest's order.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let built = par_map(&parsed, threads, |(_, r)| {
            r.to_sample_or_skip(base, config, preprocessor)
        });
        for (record, ((i, _), b)) in parsed.iter().zip(built).enumerate() {
            match b.with_context(|| at(*i))? {
                Ok(sample) => {
                    samples.push(sample);
                    records.push(record);
                }
                Err(why) => skipped.add(format!("{} ({why})", at(*i))),
            }
        }
    }
    skipped.warn(data);
    Ok(Loaded {
        samples,
        records,
        skipped,
    })
}

/// The records of a JSONL manifest's text, each with its line index (from 0); blank lines
/// are skipped, a bad line is an error naming `file:line`.
pub fn parse_records(file: &Path, text: &str) -> Result<Vec<(usize, Record)>> {
    crate::jsonl::parse_lines(file, text)
}

/// Reads every sample of `data` ([`read_data`]: a JSONL file or tar shards); samples
/// with undecodable images are skipped, counted and logged.
pub fn read_jsonl(
    path: &Path,
    config: &ModelConfig,
    preprocessor: Option<&PreprocessorConfig>,
) -> Result<Vec<Sample>> {
    Ok(read_data(path, config, preprocessor)?.samples)
}
