//! `ove-train trace`: run a golden-style case through the tch model and record every
//! intermediate the golden `expected.safetensors` has, under the same names and layouts.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use tch::{Kind, Tensor};

use ove_core::preprocess::{preprocess_file, DecodeOptions};
use ove_core::tensor_file::{read_safetensors, Tensor as OwnedTensor};

use crate::checkpoint::LoadedModel;
use crate::decoder::AttentionMask;
use crate::model::Images;

/// `case.json` of a golden model case.
#[derive(Debug, Clone, Deserialize)]
pub struct CaseSpec {
    /// Image files, relative to the case directory, in prompt order.
    #[serde(default)]
    pub images: Vec<String>,
    /// The prompt, image pads already expanded.
    pub input_ids: Vec<i64>,
    pub max_new_tokens: usize,
}

impl CaseSpec {
    pub fn read(case_dir: &Path) -> Result<Self> {
        let path = case_dir.join("case.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: invalid case", path.display()))
    }
}

/// Where the pixels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelSource {
    /// Preprocess the case's image files with `ove_core::preprocess`.
    Images,
    /// Take `pixel_values` and `image_grid_thw` from the case's `expected.safetensors`.
    Expected,
}

/// A case's pixels: `[P, patch_dim]` row-major and the grids.
struct Pixels {
    values: Vec<f32>,
    patch_dim: usize,
    grids: Vec<[usize; 3]>,
}

fn case_pixels(
    loaded: &LoadedModel,
    case_dir: &Path,
    spec: &CaseSpec,
    source: PixelSource,
) -> Result<Pixels> {
    match source {
        PixelSource::Expected => {
            let path = case_dir.join("expected.safetensors");
            let expected = read_safetensors(&path)?;
            let get = |name: &str| {
                expected
                    .get(name)
                    .with_context(|| format!("{}: no {name}", path.display()))
            };
            let pv = get("pixel_values")?;
            let grid = get("image_grid_thw")?;
            ensure!(
                pv.shape().len() == 2 && grid.shape().len() == 2 && grid.shape()[1] == 3,
                "{}: pixel_values {:?} / image_grid_thw {:?} have unexpected shapes",
                path.display(),
                pv.shape(),
                grid.shape()
            );
            let g = grid.to_i64()?;
            let grids = g
                .chunks_exact(3)
                .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
                .collect();
            Ok(Pixels {
                values: pv.to_f32(),
                patch_dim: pv.shape()[1],
                grids,
            })
        }
        PixelSource::Images => {
            let cfg = loaded.checkpoint.preprocessor.as_ref().with_context(|| {
                format!(
                    "{}: no preprocessor_config.json, cannot preprocess images",
                    loaded.checkpoint.dir.display()
                )
            })?;
            let mut values = Vec::new();
            let mut grids = Vec::new();
            let mut patch_dim = cfg.patch_dim();
            for img in &spec.images {
                let path = case_dir.join(img);
                let p = preprocess_file(&path, cfg, &DecodeOptions::default())
                    .with_context(|| format!("preprocessing {}", path.display()))?;
                patch_dim = p.patch_dim();
                values.extend_from_slice(&p.pixel_values);
                grids.push(p.grid_thw);
            }
            Ok(Pixels {
                values,
                patch_dim,
                grids,
            })
        }
    }
}

fn owned(t: &Tensor) -> Result<OwnedTensor> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let t = t.to_device(tch::Device::Cpu).contiguous();
    Ok(match t.kind() {
        Kind::Int64 => OwnedTensor::i64(shape, Vec::<i64>::try_from(t.flatten(0, -1))?),
        _ => OwnedTensor::f32(
            shape,
            Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))?,
        ),
    })
}

/// Runs one case: vision tokens, image embeddings, prompt logits (one forward, no cache)
/// and a greedy continuation with the KV cache. Keys as in the golden `expected.safetensors`
/// (plus `generation_margins`, top-1 minus top-2 logit per greedy step).
pub fn trace_case(
    loaded: &LoadedModel,
    case_dir: &Path,
    source: PixelSource,
) -> Result<BTreeMap<String, OwnedTensor>> {
    let _guard = tch::no_grad_guard();
    let model = &loaded.model;
    let device = model.device();
    let spec = CaseSpec::read(case_dir)?;
    let mut out = BTreeMap::new();
    let t = spec.input_ids.len();
    out.insert(
        "input_ids".to_string(),
        OwnedTensor::i64(vec![t], spec.input_ids.clone()),
    );

    let image_embeds = if spec.images.is_empty() {
        None
    } else {
        let px = case_pixels(loaded, case_dir, &spec, source)?;
        let rows = px.values.len() / px.patch_dim.max(1);
        let pixel_values = Tensor::from_slice(&px.values)
            .reshape([rows as i64, px.patch_dim as i64])
            .to_device(device);
        let vis = model.encode_images(&Images::new(&pixel_values, &px.grids))?;
        let grid_flat: Vec<i64> = px.grids.iter().flatten().map(|&v| v as i64).collect();
        out.insert(
            "pixel_values".into(),
            OwnedTensor::f32(vec![rows, px.patch_dim], px.values),
        );
        out.insert(
            "image_grid_thw".into(),
            OwnedTensor::i64(vec![px.grids.len(), 3], grid_flat),
        );
        out.insert("vision_tokens".into(), owned(&vis.vision_tokens)?);
        out.insert("image_embeds".into(), owned(&vis.image_embeds)?);
        Some(vis.image_embeds)
    };

    let ids = Tensor::from_slice(&spec.input_ids)
        .to_device(device)
        .unsqueeze(0);
    let logits = model
        .forward_with_image_embeds(&ids, image_embeds.as_ref(), None, &AttentionMask::Causal)?
        .squeeze_dim(0);
    out.insert("logits".into(), owned(&logits)?);

    let generated =
        model.generate_greedy(&spec.input_ids, image_embeds.as_ref(), spec.max_new_tokens)?;
    let n = generated.ids.len();
    out.insert(
        "generated_ids".into(),
        OwnedTensor::i64(vec![n], generated.ids),
    );
    out.insert(
        "generation_margins".into(),
        OwnedTensor::f32(vec![n], generated.margins),
    );
    Ok(out)
}

/// Max |a - b| over two tensors of the same shape (an error if the shapes differ).
pub fn max_abs_diff(a: &OwnedTensor, b: &OwnedTensor) -> Result<f32> {
    if a.shape() != b.shape() {
        bail!("shapes differ: {:?} vs {:?}", a.shape(), b.shape());
    }
    Ok(a.to_f32()
        .iter()
        .zip(b.to_f32())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max))
}

/// Compares a trace with a golden `expected.safetensors`: `(name, max |diff|)` for every
/// float tensor both have, and whether the integer tensors (ids, grids) are identical.
pub fn compare(
    expected: &BTreeMap<String, OwnedTensor>,
    actual: &BTreeMap<String, OwnedTensor>,
) -> Result<Comparison> {
    let mut cmp = Comparison::default();
    for (name, e) in expected {
        let Some(a) = actual.get(name) else {
            cmp.missing.push(name.clone());
            continue;
        };
        match e {
            OwnedTensor::I64 { .. } => {
                let same = e.shape() == a.shape() && e.to_i64()? == a.to_i64()?;
                cmp.exact.push((name.clone(), same));
            }
            _ => {
                let d = max_abs_diff(e, a).with_context(|| name.clone())?;
                cmp.diffs.push((name.clone(), d));
            }
        }
    }
    Ok(cmp)
}

#[derive(Debug, Default)]
pub struct Comparison {
    /// Float tensors: max |expected - actual|.
    pub diffs: Vec<(String, f32)>,
    /// Integer tensors: identical or not.
    pub exact: Vec<(String, bool)>,
    /// In the expected file but not in the trace.
    pub missing: Vec<String>,
}

impl Comparison {
    pub fn diff(&self, name: &str) -> Option<f32> {
        self.diffs.iter().find(|(n, _)| n == name).map(|(_, d)| *d)
    }
    pub fn identical(&self, name: &str) -> Option<bool> {
        self.exact.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, d) in &self.diffs {
            writeln!(f, "  {n:<20} max|diff| {d:.3e}")?;
        }
        for (n, s) in &self.exact {
            writeln!(
                f,
                "  {n:<20} {}",
                if *s { "identical" } else { "DIFFERENT" }
            )?;
        }
        for n in &self.missing {
            writeln!(f, "  {n:<20} missing from the trace")?;
        }
        Ok(())
    }
}
