//! Golden parity of exported bundles, run on tract: every golden model case is exported,
//! its vision graph is run per image on the case's own pixel_values and its decoder on
//! the case's prompt (one prefill, then greedy decoding with the KV cache), and the
//! results are compared with what the upstream implementation computed.

mod common;

use std::path::{Path, PathBuf};

use common::{golden, run_case};
use ove_core::manifest::Manifest;
use ove_exporter::{export, Dtype, ExportOptions};
use ove_runtime::compare::max_abs_diff;

/// Bar for a float32 export fed the case's own inputs (golden/README.md).
const F32_TOL: f32 = 1e-4;

fn export_case(case: &str, dtype: Dtype) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    let mut opts = ExportOptions::new(golden(case).join("checkpoint"), &out);
    opts.dtype = dtype;
    let report = export(&opts).unwrap_or_else(|e| panic!("export of {case} failed: {e:#}"));
    assert_eq!(report.out, out);
    (tmp, out)
}

fn check_f32_case(case: &str) {
    let (_tmp, bundle) = export_case(case, Dtype::F32);
    let (_, diffs) = run_case(case, &bundle, true);
    assert!(diffs.vision_tokens <= F32_TOL, "{case}: {diffs:?}");
    assert!(diffs.image_embeds <= F32_TOL, "{case}: {diffs:?}");
    assert!(diffs.logits <= F32_TOL, "{case}: {diffs:?}");
}

#[test]
fn one_image_f32_matches_golden() {
    check_f32_case("one-image");
}

#[test]
fn two_images_f32_matches_golden() {
    check_f32_case("two-images");
}

#[test]
fn text_only_f32_matches_golden() {
    check_f32_case("text-only");
}

#[test]
fn large_image_f32_matches_golden() {
    check_f32_case("large-image");
}

/// f16 weights (Cast to f32 in the graph) stay close to the f32 logits; greedy ids are not
/// compared (the random golden models win some steps by only 1e-3).
#[test]
fn f16_export_stays_close_to_f32() {
    let (_t1, b32) = export_case("one-image", Dtype::F32);
    let (_t2, b16) = export_case("one-image", Dtype::F16);
    let m = Manifest::read(&b16).unwrap();
    assert_eq!(m.dtype, "f16");
    let (l32, _) = run_case("one-image", &b32, false);
    let (l16, d16) = run_case("one-image", &b16, false);
    let diff = max_abs_diff(&l32, &l16);
    eprintln!("one-image f16 vs f32 logits on tract: {diff}; f16 vs golden: {d16:?}");
    assert!(diff <= 2e-2, "f16 logits differ from f32 by {diff}");
    // The f16 weight file is about half the f32 one.
    let size = |b: &Path| {
        std::fs::metadata(b.join("decoder.onnx.data"))
            .unwrap()
            .len()
    };
    assert!(
        size(&b16) * 10 < size(&b32) * 6,
        "{} vs {}",
        size(&b16),
        size(&b32)
    );
}
