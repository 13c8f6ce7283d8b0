//! The tract harness shared by the exporter's golden tests (`golden_tract.rs`, `int4.rs`):
//! an exported bundle's vision graph run per image on a golden case's own pixel_values and
//! its decoder on the case's prompt (one prefill, then greedy decoding with the KV cache),
//! with the differences from what the upstream implementation computed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ove_core::manifest::Manifest;
use ove_core::tensor_file::{read_safetensors, Tensor as OveTensor};
use ove_runtime::compare::max_abs_diff;
use ove_runtime::sampling::argmax;
use tract_onnx::prelude::*;

pub fn golden(case: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/golden")
        .join(case);
    assert!(p.is_dir(), "golden case missing at {}", p.display());
    p
}

pub fn f32s(t: &OveTensor) -> Vec<f32> {
    t.to_f32()
}

pub type Plan = Arc<TypedRunnableModel>;

/// The vision plan for any image: P patches, declared as `merge_unit * M` because the
/// merger folds each block of `merge_unit` rows into one and tract must see that P divides.
pub fn vision_plan(bundle: &Path, patch_dim: usize, merge_unit: usize, hidden: usize) -> Plan {
    let mut model = tract_onnx::onnx()
        .model_for_path(bundle.join("vision.onnx"))
        .unwrap();
    let p = model.symbols.sym("M").to_dim() * merge_unit as i64;
    let c = model.symbols.sym("C").to_dim();
    model = model
        .with_input_fact(0, f32::fact([p.clone(), patch_dim.to_dim()]).into())
        .unwrap()
        .with_input_fact(1, i64::fact([p.clone(), 2.to_dim()]).into())
        .unwrap()
        .with_input_fact(2, f32::fact([c, hidden.to_dim()]).into())
        .unwrap()
        .with_input_fact(3, i64::fact([p]).into())
        .unwrap();
    model.into_optimized().unwrap().into_runnable().unwrap()
}

pub struct DecoderShape {
    pub layers: usize,
    pub kvh: usize,
    pub hd: usize,
    pub hidden: usize,
    pub vocab: usize,
}

pub fn decoder_plan(bundle: &Path, d: &DecoderShape) -> Plan {
    let mut model = tract_onnx::onnx()
        .model_for_path(bundle.join("decoder.onnx"))
        .unwrap();
    // One sequence: the batch axis (schema 4) is 1, and its N = B*S rows are S.
    let s = model.symbols.sym("S").to_dim();
    let k = model.symbols.sym("K").to_dim();
    let l = model.symbols.sym("L").to_dim();
    let t = k.clone() + s.clone();
    let one = 1.to_dim();
    model = model
        .with_input_fact(0, f32::fact([s.clone(), d.hidden.to_dim()]).into())
        .unwrap()
        .with_input_fact(1, i64::fact([one.clone(), s.clone()]).into())
        .unwrap()
        .with_input_fact(2, f32::fact([one.clone(), s, t]).into())
        .unwrap()
        .with_input_fact(3, i64::fact([l]).into())
        .unwrap();
    for i in 0..2 * d.layers {
        model = model
            .with_input_fact(
                4 + i,
                f32::fact([one.clone(), d.kvh.to_dim(), k.clone(), d.hd.to_dim()]).into(),
            )
            .unwrap();
    }
    model.into_optimized().unwrap().into_runnable().unwrap()
}

pub fn tensor_f32(shape: &[usize], data: &[f32]) -> TValue {
    tract_ndarray::ArrayD::from_shape_vec(shape, data.to_vec())
        .unwrap()
        .into_tensor()
        .into_tvalue()
}

pub fn tensor_i64(shape: &[usize], data: &[i64]) -> TValue {
    tract_ndarray::ArrayD::from_shape_vec(shape, data.to_vec())
        .unwrap()
        .into_tensor()
        .into_tvalue()
}

pub fn values(v: &TValue) -> Vec<f32> {
    v.to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// One decoder run of one sequence (batch axis 1): `embeds` [S, H] at positions K..K+S
/// with a causal bias; logits for the rows in `logits_rows`.
pub fn decoder_step(
    plan: &Plan,
    d: &DecoderShape,
    embeds: &[f32],
    past: &[TValue],
    k: usize,
    logits_rows: &[i64],
) -> (Vec<f32>, Vec<TValue>) {
    let s = embeds.len() / d.hidden;
    let t = k + s;
    let positions: Vec<i64> = (k as i64..t as i64).collect();
    let mut bias = vec![0f32; s * t];
    for i in 0..s {
        for j in 0..t {
            if j > k + i {
                bias[i * t + j] = -1e9;
            }
        }
    }
    let mut inputs: TVec<TValue> = tvec![
        tensor_f32(&[s, d.hidden], embeds),
        tensor_i64(&[1, s], &positions),
        tensor_f32(&[1, s, t], &bias),
        tensor_i64(&[logits_rows.len()], logits_rows),
    ];
    inputs.extend(past.iter().cloned());
    let out = plan.run(inputs).unwrap();
    let logits = values(&out[0]);
    assert_eq!(logits.len(), logits_rows.len() * d.vocab);
    let presents: Vec<TValue> = out.into_iter().skip(1).collect();
    assert_eq!(presents.len(), 2 * d.layers);
    assert_eq!(presents[0].shape(), &[1, d.kvh, t, d.hd]);
    (logits, presents)
}

/// Measured differences of one case.
#[derive(Debug, Default)]
pub struct Diffs {
    pub vision_tokens: f32,
    pub image_embeds: f32,
    pub logits: f32,
}

/// Runs a golden case through an exported bundle; returns the logits of the prompt and
/// the measured differences. With `strict`, also checks the greedy continuation.
pub fn run_case(case: &str, bundle: &Path, strict: bool) -> (Vec<f32>, Diffs) {
    let dir = golden(case);
    let manifest = Manifest::read(bundle).unwrap();
    manifest.verify_files(bundle).unwrap();
    let exp = read_safetensors(&dir.join("expected.safetensors")).unwrap();
    let cfg = &manifest.model;
    let t = &cfg.text_config;
    let d = DecoderShape {
        layers: t.num_hidden_layers,
        kvh: t.num_key_value_heads,
        hd: t.head_dim(),
        hidden: t.hidden_size,
        vocab: t.vocab_size,
    };
    let mut diffs = Diffs::default();

    // Vision, one image at a time.
    let mut image_embeds = Vec::new();
    if let Some(grids) = exp.get("image_grid_thw") {
        let v = &cfg.vision_config;
        let patch_dim = v.patch_dim();
        let plan = vision_plan(bundle, patch_dim, v.merge_unit(), v.hidden_size);
        let grids = grids.to_i64().unwrap();
        let pixels = f32s(&exp["pixel_values"]);
        let want_tokens = f32s(&exp["vision_tokens"]);
        let want_embeds = f32s(&exp["image_embeds"]);
        let (mut row, mut got_tokens) = (0, Vec::new());
        // Rows of every image's `vision_states` so far (the reference's whole sequence).
        let mut states: Vec<f32> = Vec::new();
        let dd = v.hidden_size;
        for (i, grid) in grids.chunks(3).enumerate() {
            let grid = [grid[0] as usize, grid[1] as usize, grid[2] as usize];
            let p = grid.iter().product::<usize>();
            let pos = ove_core::preprocess::patch_positions(grid, v.spatial_merge_size);
            let pos: Vec<i64> = pos.iter().flatten().copied().collect();
            // The reference keeps rows 1..=total of the concatenated [class; patches]
            // blocks: image 0 drops its class token, image i >= 1 starts i - 1 rows early.
            let c = i.saturating_sub(1);
            let carry = states[states.len() - c * dd..].to_vec();
            let window: Vec<i64> = if i == 0 {
                (1..=p as i64).collect()
            } else {
                (0..p as i64).collect()
            };
            let out = plan
                .run(tvec![
                    tensor_f32(
                        &[p, patch_dim],
                        &pixels[row * patch_dim..(row + p) * patch_dim]
                    ),
                    tensor_i64(&[p, 2], &pos),
                    tensor_f32(&[c, dd], &carry),
                    tensor_i64(&[p], &window),
                ])
                .unwrap();
            assert_eq!(out[0].shape(), &[p, dd]);
            assert_eq!(out[1].shape(), &[p / v.merge_unit(), t.hidden_size]);
            assert_eq!(out[2].shape(), &[p + 1, dd]);
            got_tokens.extend(values(&out[0]));
            image_embeds.extend(values(&out[1]));
            states.extend(values(&out[2]));
            row += p;
        }
        diffs.vision_tokens = max_abs_diff(&got_tokens, &want_tokens);
        diffs.image_embeds = max_abs_diff(&image_embeds, &want_embeds);
    }

    // Prefill over the whole prompt, image pads replaced by the image embeddings in order.
    let table = read_safetensors(&bundle.join("embed_tokens.safetensors")).unwrap();
    let table = f32s(&table["embed_tokens"]);
    let ids = exp["input_ids"].to_i64().unwrap();
    let h = d.hidden;
    let embed = |id: i64| table[id as usize * h..(id as usize + 1) * h].to_vec();
    let mut embeds = Vec::new();
    let mut next_image_row = 0;
    for &id in &ids {
        if id == manifest.tokens.image_pad {
            embeds.extend_from_slice(&image_embeds[next_image_row * h..(next_image_row + 1) * h]);
            next_image_row += 1;
        } else {
            embeds.extend(embed(id));
        }
    }
    assert_eq!(
        next_image_row * h,
        image_embeds.len(),
        "image pads vs image embeddings"
    );
    let plan = decoder_plan(bundle, &d);
    let empty: Vec<TValue> = (0..2 * d.layers)
        .map(|_| {
            Tensor::zero::<f32>(&[1, d.kvh, 0, d.hd])
                .unwrap()
                .into_tvalue()
        })
        .collect();
    let all_rows: Vec<i64> = (0..ids.len() as i64).collect();
    let (logits, mut past) = decoder_step(&plan, &d, &embeds, &empty, 0, &all_rows);
    diffs.logits = max_abs_diff(&logits, &f32s(&exp["logits"]));
    eprintln!("{case} ({}) on tract: {diffs:?}", manifest.dtype);

    if strict {
        // Greedy continuation with the cache, one token per step.
        let want = exp["generated_ids"].to_i64().unwrap();
        let mut tok = argmax(&logits[(ids.len() - 1) * d.vocab..]) as i64;
        let mut generated = vec![tok];
        let mut k = ids.len();
        while generated.len() < want.len() {
            let (l, p) = decoder_step(&plan, &d, &embed(tok), &past, k, &[0]);
            past = p;
            k += 1;
            tok = argmax(&l) as i64;
            generated.push(tok);
        }
        assert_eq!(generated, want, "{case}: greedy continuation differs");
    }
    (logits, diffs)
}
