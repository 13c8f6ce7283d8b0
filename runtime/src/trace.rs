//! `ove trace`: a golden case through a bundle, every intermediate written under the
//! golden names and layouts (see shared/golden/README.md), so that a runtime result can be
//! compared tensor by tensor with what the upstream implementation computed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ove_core::tensor_file::{read_safetensors, Tensor};
use serde::Deserialize;

use crate::generate::{EncodedImage, LogitRows, Model};
use crate::sampling::{argmax, margin};

/// A golden case directory: `case.json`, its images, and `expected.safetensors`.
#[derive(Debug, Clone)]
pub struct Case {
    pub dir: PathBuf,
    /// In prompt order.
    pub images: Vec<PathBuf>,
    /// The prompt, image pads already expanded.
    pub input_ids: Vec<i64>,
    pub max_new_tokens: usize,
}

#[derive(Deserialize)]
struct CaseJson {
    #[serde(default)]
    images: Vec<String>,
    input_ids: Vec<i64>,
    max_new_tokens: usize,
}

impl Case {
    pub fn load(dir: &Path) -> Result<Self> {
        let file = dir.join("case.json");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let c: CaseJson = ove_core::config::parse_json(&file, &text)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            images: c.images.iter().map(|i| dir.join(i)).collect(),
            input_ids: c.input_ids,
            max_new_tokens: c.max_new_tokens,
        })
    }

    pub fn expected_path(&self) -> PathBuf {
        self.dir.join("expected.safetensors")
    }
}

/// Where the trace's images come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceOptions {
    /// Feed the case's own `pixel_values` (isolates the graphs from preprocessing);
    /// otherwise the runtime preprocesses the case's image files itself.
    pub pixels_from_case: bool,
}

/// The case's reference patches, split per image.
fn case_pixels(case: &Case) -> Result<Vec<(Vec<f32>, [usize; 3])>> {
    let path = case.expected_path();
    let t = read_safetensors(&path)?;
    let get = |n: &str| {
        t.get(n)
            .ok_or_else(|| anyhow!("{}: no tensor {n}", path.display()))
    };
    let pixels = get("pixel_values")?;
    let grids = get("image_grid_thw")?.to_i64()?;
    let dim = *pixels.shape().last().unwrap_or(&0);
    let values = pixels.to_f32();
    let n = grids.len() / 3;
    if n != case.images.len() {
        bail!(
            "{}: {n} grids for {} images",
            path.display(),
            case.images.len()
        );
    }
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for g in grids.chunks_exact(3) {
        let grid = [g[0] as usize, g[1] as usize, g[2] as usize];
        let len = grid.iter().product::<usize>() * dim;
        let slice = values
            .get(start..start + len)
            .ok_or_else(|| anyhow!("{}: pixel_values shorter than the grids", path.display()))?;
        out.push((slice.to_vec(), grid));
        start += len;
    }
    Ok(out)
}

/// Runs the case: images (one vision.onnx call each), one decoder forward over the whole
/// prompt with logits for every row, then `max_new_tokens` greedy tokens through the KV
/// cache with no end-of-turn stop. Returns the tensors `ove trace` writes.
pub fn trace(
    model: &mut Model,
    case: &Case,
    opts: &TraceOptions,
) -> Result<BTreeMap<String, Tensor>> {
    let inputs: Vec<(Vec<f32>, [usize; 3])> = if opts.pixels_from_case {
        if case.images.is_empty() {
            Vec::new()
        } else {
            case_pixels(case)?
        }
    } else {
        case.images
            .iter()
            .map(|p| {
                let pre = model.preprocess_image(p)?;
                Ok((pre.pixel_values, pre.grid_thw))
            })
            .collect::<Result<_>>()?
    };
    let pairs: Vec<(&[f32], [usize; 3])> = inputs.iter().map(|(p, g)| (p.as_slice(), *g)).collect();
    let images: Vec<EncodedImage> = model.encode_images(&pairs)?;
    let refs: Vec<&EncodedImage> = images.iter().collect();

    let ids = &case.input_ids;
    let mut seq = model.new_sequence();
    let logits = model.prefill(&mut seq, ids, &refs, LogitRows::All, None)?;
    let v = model.vocab();
    let mut last = logits[(ids.len() - 1) * v..].to_vec();
    let mut generated = Vec::with_capacity(case.max_new_tokens);
    let mut margins = Vec::with_capacity(case.max_new_tokens);
    while generated.len() < case.max_new_tokens {
        let token = argmax(&last) as i64;
        generated.push(token);
        margins.push(margin(&last));
        if generated.len() == case.max_new_tokens {
            break;
        }
        last = model.step(&mut seq, token)?;
    }

    let mut out = BTreeMap::new();
    out.insert(
        "input_ids".into(),
        Tensor::i64(vec![ids.len()], ids.clone()),
    );
    out.insert("logits".into(), Tensor::f32(vec![ids.len(), v], logits));
    out.insert(
        "generated_ids".into(),
        Tensor::i64(vec![generated.len()], generated),
    );
    out.insert(
        "generation_margins".into(),
        Tensor::f32(vec![margins.len()], margins),
    );
    if !images.is_empty() {
        let patch_dim = model.manifest().model.vision_config.patch_dim();
        let d = model.manifest().model.vision_config.hidden_size;
        let h = model.hidden();
        let patches: usize = inputs
            .iter()
            .map(|(_, g)| g.iter().product::<usize>())
            .sum();
        let tokens: usize = images.iter().map(|i| i.tokens).sum();
        out.insert(
            "pixel_values".into(),
            Tensor::f32(
                vec![patches, patch_dim],
                inputs.iter().flat_map(|(p, _)| p.iter().copied()).collect(),
            ),
        );
        out.insert(
            "image_grid_thw".into(),
            Tensor::i64(
                vec![inputs.len(), 3],
                inputs
                    .iter()
                    .flat_map(|(_, g)| g.iter().map(|&x| x as i64))
                    .collect(),
            ),
        );
        out.insert(
            "vision_tokens".into(),
            Tensor::f32(
                vec![patches, d],
                images
                    .iter()
                    .flat_map(|i| i.vision_tokens.iter().copied())
                    .collect(),
            ),
        );
        out.insert(
            "image_embeds".into(),
            Tensor::f32(
                vec![tokens, h],
                images
                    .iter()
                    .flat_map(|i| i.image_embeds.iter().copied())
                    .collect(),
            ),
        );
    }
    Ok(out)
}
