//! Preprocessing against the reference: every case in `shared/golden/preprocess`.
//!
//! Accepted images must give the reference's grid exactly and identical pixel values (the
//! README claims bit-identical preprocessing; the golden README's looser bar is one 8-bit
//! level); rejected images must give an error, not a panic. Per-case figures are printed
//! (`cargo test --test preprocess_golden -- --nocapture`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ove_core::preprocess::{preprocess_file, DecodeOptions, PreprocessError};
use ove_core::PreprocessorConfig;
use safetensors::{Dtype, SafeTensors};

fn golden_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/preprocess");
    assert!(
        dir.join("cases.json").is_file(),
        "golden preprocessing data missing at {} (expected cases.json, expected.safetensors, \
         preprocessor_config.json and the images): the reference data must be present",
        dir.display()
    );
    dir
}

#[derive(serde::Deserialize)]
struct Case {
    ok: bool,
    #[serde(default)]
    grid_thw: Option<[usize; 3]>,
    #[serde(default)]
    error: Option<String>,
}

fn tensor<'a>(st: &'a SafeTensors<'a>, name: &str) -> safetensors::tensor::TensorView<'a> {
    st.tensor(name)
        .unwrap_or_else(|e| panic!("expected.safetensors has no {name}: {e}"))
}

fn f32s(view: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
    assert_eq!(view.dtype(), Dtype::F32);
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn i64s(view: &safetensors::tensor::TensorView<'_>) -> Vec<i64> {
    assert_eq!(view.dtype(), Dtype::I64);
    view.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// How far our values are from the reference's, in normalised units and in 8-bit levels.
struct Diff {
    max_abs: f32,
    mean_abs: f64,
    share_differing: f64,
    max_levels: f64,
}

fn compare(ours: &[f32], theirs: &[f32], cfg: &PreprocessorConfig) -> Diff {
    assert_eq!(ours.len(), theirs.len());
    let per_channel = cfg.temporal_patch_size * cfg.patch_size * cfg.patch_size;
    let patch_dim = cfg.patch_dim();
    let (mut max_abs, mut sum, mut differing, mut max_levels) = (0f32, 0f64, 0usize, 0f64);
    for (i, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
        let d = (a - b).abs();
        if a != b {
            differing += 1;
        }
        max_abs = max_abs.max(d);
        sum += f64::from(d);
        // One 8-bit level is rescale_factor / std of the value's channel.
        let c = (i % patch_dim) / per_channel;
        let level = cfg.rescale_factor / f64::from(cfg.image_std[c]);
        max_levels = max_levels.max(f64::from(d) / level);
    }
    Diff {
        max_abs,
        mean_abs: sum / ours.len().max(1) as f64,
        share_differing: differing as f64 / ours.len().max(1) as f64,
        max_levels,
    }
}

#[test]
fn preprocessing_matches_the_reference_on_every_golden_case() {
    let dir = golden_dir();
    let cases: BTreeMap<String, Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    assert!(!cases.is_empty(), "cases.json lists no case");
    let cfg = PreprocessorConfig::from_file(&dir.join("preprocessor_config.json")).unwrap();
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let opts = DecodeOptions::default();

    let mut failures = Vec::new();
    for (file, case) in &cases {
        let path = dir.join(file);
        let result = preprocess_file(&path, &cfg, &opts);
        if !case.ok {
            match result {
                Err(e) => eprintln!(
                    "{file:<20} rejected as the reference does: {e}  (reference: {})",
                    case.error.as_deref().unwrap_or("?")
                ),
                Ok(p) => failures.push(format!(
                    "{file}: the reference rejects it ({}), we accepted it with grid {:?}",
                    case.error.as_deref().unwrap_or("?"),
                    p.grid_thw
                )),
            }
            continue;
        }
        let got = match result {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{file}: the reference accepts it, we fail: {e}"));
                continue;
            }
        };
        let stem = file.rsplit_once('.').map_or(file.as_str(), |(s, _)| s);
        let want_grid: Vec<usize> = i64s(&tensor(&st, &format!("{stem}.image_grid_thw")))
            .into_iter()
            .map(|v| v as usize)
            .collect();
        assert_eq!(want_grid.len(), 3);
        if let Some(g) = case.grid_thw {
            assert_eq!(
                g.as_slice(),
                want_grid.as_slice(),
                "{file}: cases.json and safetensors disagree"
            );
        }
        if got.grid_thw.as_slice() != want_grid.as_slice() {
            failures.push(format!(
                "{file}: grid {:?}, reference {want_grid:?}",
                got.grid_thw
            ));
            continue;
        }
        let want = tensor(&st, &format!("{stem}.pixel_values"));
        assert_eq!(
            want.shape(),
            &[got.num_patches(), cfg.patch_dim()],
            "{file}: shape"
        );
        let d = compare(&got.pixel_values, &f32s(&want), &cfg);
        eprintln!(
            "{file:<20} grid {:?}  max|diff| {:.6}  mean|diff| {:.3e}  differing {:.4}%  (max {:.2} 8-bit levels)",
            got.grid_thw,
            d.max_abs,
            d.mean_abs,
            100.0 * d.share_differing,
            d.max_levels
        );
        // Bit-identical, as the README claims: any difference at all is a failure.
        if d.max_abs != 0.0 || d.max_abs.is_nan() {
            failures.push(format!(
                "{file}: max |diff| {} = {:.2} 8-bit levels (must be 0)",
                d.max_abs, d.max_levels
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden preprocessing cases failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn rejected_golden_cases_are_errors_with_a_clear_message() {
    let dir = golden_dir();
    let cfg = PreprocessorConfig::from_file(&dir.join("preprocessor_config.json")).unwrap();
    let cases: BTreeMap<String, Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    for (file, case) in cases.iter().filter(|(_, c)| !c.ok) {
        let err = preprocess_file(&dir.join(file), &cfg, &DecodeOptions::default()).unwrap_err();
        let reference = case.error.as_deref().unwrap_or_default();
        if reference.contains("aspect ratio") {
            assert!(
                matches!(err, PreprocessError::AspectRatio { .. }),
                "{file}: {err}"
            );
            assert!(err.to_string().contains("exceeds 200"), "{file}: {err}");
        }
    }
}
