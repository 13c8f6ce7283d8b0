//! Training data as JSONL, one sample per line:
//! `{"prompt_ids": [...], "response_ids": [...], "images": ["a.png", ...]}`.
//!
//! `prompt_ids` is the tokenized prompt (chat template applied) with exactly one
//! `<|image_pad|>` per image, where the image goes; the trainer preprocesses the images
//! with the checkpoint's `preprocessor_config.json` and expands each pad to the image's
//! token count. `response_ids` (the assistant's reply, end-of-turn token included) are the
//! trained tokens. Image paths are relative to the JSONL file.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use ove_core::config::{ModelConfig, PreprocessorConfig};
use ove_core::preprocess::{preprocess_file, DecodeOptions};
use ove_core::prompt::expand_image_pads;

use crate::train::packing::Sample;

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
    pub fn to_sample(
        &self,
        base: &Path,
        config: &ModelConfig,
        preprocessor: Option<&PreprocessorConfig>,
    ) -> Result<Sample> {
        let mut pixels = Vec::new();
        let mut grids = Vec::new();
        if !self.images.is_empty() {
            let pre = preprocessor.context(
                "the sample has images but the checkpoint has no preprocessor_config.json",
            )?;
            for img in &self.images {
                let path = base.join(img);
                let p = preprocess_file(&path, pre, &DecodeOptions::default())
                    .with_context(|| format!("preprocessing {}", path.display()))?;
                pixels.extend_from_slice(&p.pixel_values);
                grids.push(p.grid_thw);
            }
        }
        let counts: Vec<usize> = grids.iter().map(|g| config.tokens_per_image(*g)).collect();
        let prompt = expand_image_pads(&self.prompt_ids, config.image_token_id, &counts)?;
        let supervised: Vec<bool> = std::iter::repeat_n(false, prompt.len())
            .chain(std::iter::repeat_n(true, self.response_ids.len()))
            .collect();
        let mut ids = prompt;
        ids.extend_from_slice(&self.response_ids);
        Sample::new(ids, &supervised, pixels, grids)
    }
}

/// Reads every sample of a JSONL file (blank lines skipped); errors name the line.
pub fn read_jsonl(
    path: &Path,
    config: &ModelConfig,
    preprocessor: Option<&PreprocessorConfig>,
) -> Result<Vec<Sample>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let record: Record = serde_json::from_str(line).with_context(at)?;
        samples.push(
            record
                .to_sample(base, config, preprocessor)
                .with_context(at)?,
        );
    }
    Ok(samples)
}
