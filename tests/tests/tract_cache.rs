//! tract's cached decoder (`ove_runtime::backend::tract_cache`): the first load writes the
//! decluttered decoder as an NNEF archive, the next reads it, and both compute the golden
//! case exactly as the reference; a damaged archive is a warning and the graph is loaded
//! from the bundle instead. Its own test binary: the cache is found through environment
//! variables, which every test of a binary shares.

mod common;

use common::*;
use ove_exporter::Dtype;
use ove_runtime::trace::{trace, Case, TraceOptions};
use ove_runtime::BackendChoice;

const CASE: &str = "one-image";

fn traced(
    bundle: &std::path::Path,
) -> std::collections::BTreeMap<String, ove_core::tensor_file::Tensor> {
    let mut model = load(bundle, BackendChoice::Tract);
    let c = Case::load(&case_dir(CASE)).unwrap();
    trace(
        &mut model,
        &c,
        &TraceOptions {
            pixels_from_case: true,
        },
    )
    .unwrap_or_else(|e| panic!("{CASE} on tract: {e:#}"))
}

fn archives(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("tract"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(".nnef.tar"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_cached_decoder_computes_what_the_bundle_does() {
    let cache = tempfile::tempdir().unwrap();
    std::env::remove_var("OVE_TRACT_CACHE");
    std::env::set_var("OVE_CACHE_DIR", cache.path());
    let bundle = bundle(CASE, Dtype::F32);
    let want = expected(CASE);

    // First load: from the bundle, writing the archive.
    let first = traced(&bundle);
    let written = archives(cache.path());
    assert_eq!(written.len(), 1, "{written:?}");
    // Second load: from the archive.
    let second = traced(&bundle);
    assert_eq!(archives(cache.path()), written, "no second archive");
    for got in [&first, &second] {
        let d = diff("logits", got, &want);
        assert!(d <= 1e-4, "logits max|diff| {d}");
        assert_eq!(ids("generated_ids", got), ids("generated_ids", &want));
    }
    assert_eq!(diff("logits", &first, &second), 0.0, "cached != loaded");

    // A damaged archive: the graph is loaded from the bundle again, same result.
    std::fs::write(&written[0], b"not a tar").unwrap();
    let third = traced(&bundle);
    assert_eq!(diff("logits", &third, &first), 0.0);
    assert_eq!(ids("generated_ids", &third), ids("generated_ids", &want));

    // Off: nothing written.
    let off = tempfile::tempdir().unwrap();
    std::env::set_var("OVE_CACHE_DIR", off.path());
    std::env::set_var("OVE_TRACT_CACHE", "off");
    traced(&bundle);
    assert!(archives(off.path()).is_empty());
}
