//! Golden parity end to end: every golden model case is exported (`ove_exporter::export`,
//! once per dtype for this binary) and traced (`ove_runtime::trace`, what `ove trace`
//! runs) on both backends, and the results are compared with what the upstream
//! implementation computed (shared/golden/README.md gives the bars).
//!
//! The measured figures are printed (`cargo test -p ove-tests -- --nocapture`).

mod common;

use std::collections::BTreeMap;

use common::*;
use ove_core::tensor_file::Tensor;
use ove_exporter::Dtype;
use ove_runtime::backend::OrtDecoderGraph;
use ove_runtime::trace::{trace, Case, TraceOptions};
use ove_runtime::BackendChoice;

/// A float32 bundle fed the case's own pixel_values (golden README).
const PIXELS_TOL: f32 = 1e-4;
/// A float32 bundle on the runtime's own preprocessing of the images.
const OWN_PREPROCESS_TOL: f32 = 1e-3;
/// An f16-weight bundle (activations stay f32): logits only.
const F16_LOGITS_TOL: f32 = 2e-2;

fn run_trace(
    case: &str,
    dtype: Dtype,
    backend: BackendChoice,
    pixels_from_case: bool,
) -> BTreeMap<String, Tensor> {
    run_trace_on(
        case,
        dtype,
        backend,
        OrtDecoderGraph::Auto,
        pixels_from_case,
    )
}

/// [`run_trace`] with ONNX Runtime on decoder graph `graph`; checks that the graph asked
/// for is the one that runs.
fn run_trace_on(
    case: &str,
    dtype: Dtype,
    backend: BackendChoice,
    graph: OrtDecoderGraph,
    pixels_from_case: bool,
) -> BTreeMap<String, Tensor> {
    let bundle = bundle(case, dtype);
    let mut model = load_graph(&bundle, backend, graph);
    let described = model.describe_backend();
    match graph {
        OrtDecoderGraph::Fused => assert!(described.contains("fused decoder"), "{described}"),
        OrtDecoderGraph::Portable => {
            assert!(described.contains("portable decoder"), "{described}")
        }
        OrtDecoderGraph::Auto => {}
    }
    let c = Case::load(&case_dir(case)).unwrap();
    trace(&mut model, &c, &TraceOptions { pixels_from_case })
        .unwrap_or_else(|e| panic!("{case} on {backend:?}: {e:#}"))
}

/// Runs every case, prints one line of figures per case, and fails at the end listing
/// every case that missed a bar (so one failure does not hide the others' figures).
fn every_case(label: &str, cases: &[&str], mut check: impl FnMut(&str) -> (String, Vec<String>)) {
    let mut failures = Vec::new();
    for case in cases {
        let (figures, problems) = check(case);
        eprintln!("[{label}] {case}: {figures}");
        failures.extend(problems.into_iter().map(|p| format!("{case}: {p}")));
    }
    assert!(failures.is_empty(), "[{label}] {}", failures.join("; "));
}

fn pixels_from_case(backend: BackendChoice, graph: OrtDecoderGraph) {
    let label = format!("{backend:?} ({graph:?} decoder) f32 pixels-from-case");
    every_case(&label, &CASES, |case| {
        let want = expected(case);
        let got = run_trace_on(case, Dtype::F32, backend, graph, true);
        let mut problems = Vec::new();
        let mut figures = Vec::new();
        let mut names = vec!["logits"];
        if want.contains_key("image_embeds") {
            names.splice(0..0, ["vision_tokens", "image_embeds"]);
            assert_eq!(
                ids("image_grid_thw", &got),
                ids("image_grid_thw", &want),
                "{case}: grid"
            );
        }
        for name in names {
            let d = diff(name, &got, &want);
            figures.push(format!("{name} {d:.2e}"));
            if d > PIXELS_TOL || d.is_nan() {
                problems.push(format!("{name} max|diff| {d:.3e} > {PIXELS_TOL:e}"));
            }
        }
        let (g, w) = (ids("generated_ids", &got), ids("generated_ids", &want));
        figures.push(format!(
            "generated_ids {}",
            if g == w { "identical" } else { "DIFFER" }
        ));
        if g != w {
            problems.push(format!("generated_ids {g:?} != {w:?}"));
        }
        assert_eq!(ids("input_ids", &got), ids("input_ids", &want));
        (figures.join(", "), problems)
    });
}

#[test]
fn tract_matches_golden_on_case_pixels() {
    pixels_from_case(BackendChoice::Tract, OrtDecoderGraph::Auto);
}

/// decoder_ort.onnx: ONNX Runtime's fused kernels, the cache written in place.
#[test]
fn ort_fused_decoder_matches_golden_on_case_pixels() {
    pixels_from_case(BackendChoice::Ort, OrtDecoderGraph::Fused);
}

/// decoder.onnx on ONNX Runtime (what it runs under TensorRT/CUDA, or when asked).
#[test]
fn ort_portable_decoder_matches_golden_on_case_pixels() {
    pixels_from_case(BackendChoice::Ort, OrtDecoderGraph::Portable);
}

fn own_preprocessing(backend: BackendChoice) {
    let label = format!("{backend:?} f32 own-preprocessing");
    let cases: Vec<&str> = CASES.into_iter().filter(|c| *c != "text-only").collect();
    every_case(&label, &cases, |case| {
        let want = expected(case);
        let got = run_trace(case, Dtype::F32, backend, false);
        let mut problems = Vec::new();
        let mut figures = Vec::new();
        assert_eq!(
            ids("image_grid_thw", &got),
            ids("image_grid_thw", &want),
            "{case}: grid"
        );
        let px = diff("pixel_values", &got, &want);
        figures.push(format!("pixel_values {px:.2e}"));
        // Our preprocessing is bit-identical to the reference's (README): demand it here too.
        if px != 0.0 || px.is_nan() {
            problems.push(format!("pixel_values max|diff| {px:.3e} (must be 0)"));
        }
        for name in ["image_embeds", "logits"] {
            let d = diff(name, &got, &want);
            figures.push(format!("{name} {d:.2e}"));
            if d > OWN_PREPROCESS_TOL || d.is_nan() {
                problems.push(format!("{name} max|diff| {d:.3e} > {OWN_PREPROCESS_TOL:e}"));
            }
        }
        // Identical pixels give the same prompt as the case's own pixel_values, so the greedy
        // continuation must be identical too (the f32 bar of the golden README).
        let (g, w) = (ids("generated_ids", &got), ids("generated_ids", &want));
        figures.push(format!(
            "generated_ids {}",
            if g == w { "identical" } else { "DIFFER" }
        ));
        if g != w {
            problems.push(format!("generated_ids {g:?} != {w:?}"));
        }
        (figures.join(", "), problems)
    });
}

#[test]
fn tract_matches_golden_on_own_preprocessing() {
    own_preprocessing(BackendChoice::Tract);
}

#[test]
fn ort_matches_golden_on_own_preprocessing() {
    own_preprocessing(BackendChoice::Ort);
}

/// `ove export --kv-cache f16`: decoder_ort.onnx keeps its cache, and computes attention,
/// in f16; logits only (the bar of f16 weights).
#[test]
fn ort_f16_kv_cache_logits_are_close() {
    let tmp = tempfile::tempdir().unwrap();
    every_case("Ort f16 KV cache pixels-from-case", &CASES, |case| {
        let want = expected(case);
        let dir = tmp.path().join(case);
        let mut opts = ove_exporter::ExportOptions::new(case_dir(case).join("checkpoint"), &dir);
        opts.ort_kv_f16 = true;
        ove_exporter::export(&opts).unwrap_or_else(|e| panic!("{case}: export: {e:#}"));
        let mut model = load_graph(&dir, BackendChoice::Ort, OrtDecoderGraph::Fused);
        let described = model.describe_backend();
        assert!(
            described.contains("fused decoder, f16 KV cache"),
            "{described}"
        );
        let c = Case::load(&case_dir(case)).unwrap();
        let got = trace(
            &mut model,
            &c,
            &TraceOptions {
                pixels_from_case: true,
            },
        )
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
        f16_logits_check(&got, &want)
    });
}

/// The figures and problems of an f16 run (weights or cache): logits within
/// [`F16_LOGITS_TOL`], and how many greedy tokens agree (reported, not required).
fn f16_logits_check(
    got: &BTreeMap<String, Tensor>,
    want: &BTreeMap<String, Tensor>,
) -> (String, Vec<String>) {
    let d = diff("logits", got, want);
    let (g, w) = (ids("generated_ids", got), ids("generated_ids", want));
    let agree = g.iter().zip(&w).filter(|(a, b)| a == b).count();
    let figures = format!("logits {d:.2e}, generated_ids agree {agree}/{}", w.len());
    let problems = if d > F16_LOGITS_TOL || d.is_nan() {
        vec![format!("logits max|diff| {d:.3e} > {F16_LOGITS_TOL:e}")]
    } else {
        vec![]
    };
    (figures, problems)
}

#[test]
fn ort_f16_bundle_logits_are_close() {
    every_case("Ort f16 pixels-from-case", &CASES, |case| {
        let want = expected(case);
        let got = run_trace(case, Dtype::F16, BackendChoice::Ort, true);
        f16_logits_check(&got, &want)
    });
}
