//! Shared by the end-to-end test binaries: the golden data, bundles exported once per
//! binary, the ONNX Runtime library, and comparisons.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ove_core::tensor_file::{read_safetensors, Tensor};
use ove_exporter::{export, Dtype, ExportOptions};
use ove_runtime::backend::OrtDecoderGraph;
use ove_runtime::compare::max_abs_diff;
use ove_runtime::{BackendChoice, BackendOptions, LoadOptions, Model, OrtOptions};

pub const CASES: [&str; 4] = ["one-image", "two-images", "text-only", "large-image"];

/// The golden data directory; a missing one fails the test (never a skip).
pub fn golden_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden");
    assert!(
        p.is_dir(),
        "golden data missing at {} (the tests need /work/shared/golden)",
        p.display()
    );
    p
}

pub fn case_dir(case: &str) -> PathBuf {
    let p = golden_root().join(case);
    assert!(p.is_dir(), "golden case missing at {}", p.display());
    p
}

pub fn expected(case: &str) -> BTreeMap<String, Tensor> {
    let p = case_dir(case).join("expected.safetensors");
    read_safetensors(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))
}

/// Bundles exported once per test binary, shared by every test in it. They live in
/// Cargo's per-target scratch directory (a static is never dropped, so a temp dir would
/// leak), one directory per test binary, replaced on each run.
struct Exports {
    root: PathBuf,
    done: std::sync::Mutex<BTreeMap<String, PathBuf>>,
}

fn exports() -> &'static Exports {
    static EXPORTS: OnceLock<Exports> = OnceLock::new();
    EXPORTS.get_or_init(|| {
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tests".into());
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("bundles")
            .join(binary);
        std::fs::create_dir_all(&root).expect("creating the bundle scratch directory");
        Exports {
            root,
            done: std::sync::Mutex::new(BTreeMap::new()),
        }
    })
}

/// The bundle of a golden case in `dtype`, exported on first use (the lock serialises
/// exports, so two tests asking for the same bundle share one export).
pub fn bundle(case: &str, dtype: Dtype) -> PathBuf {
    let ex = exports();
    let key = format!("{case}-{}", dtype.as_str());
    let mut done = ex.done.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = done.get(&key) {
        return p.clone();
    }
    let out = ex.root.join(&key);
    let mut opts = ExportOptions::new(case_dir(case).join("checkpoint"), &out);
    opts.dtype = dtype;
    opts.force = true;
    let t = std::time::Instant::now();
    export(&opts).unwrap_or_else(|e| panic!("export of {case} ({key}) failed: {e:#}"));
    eprintln!("exported {key} in {:.2} s", t.elapsed().as_secs_f64());
    done.insert(key, out.clone());
    out
}

/// The ONNX Runtime library, found the way the runtime finds it; its absence fails the
/// test with the search list (CI installs the wheel into .venv).
pub fn ort_library() -> PathBuf {
    ove_runtime::backend::ort::find_library(None).unwrap_or_else(|e| {
        panic!("ONNX Runtime is required by these tests (run scripts/setup): {e:#}")
    })
}

pub fn load(bundle: &Path, backend: BackendChoice) -> Model {
    load_graph(bundle, backend, OrtDecoderGraph::Auto)
}

/// [`load`] with ONNX Runtime running the decoder graph `graph` (the fused one by default
/// when the bundle has it).
pub fn load_graph(bundle: &Path, backend: BackendChoice, graph: OrtDecoderGraph) -> Model {
    let mut opts = LoadOptions {
        backend: BackendOptions {
            choice: backend,
            threads: None,
            ort: OrtOptions {
                decoder_graph: graph,
                ..Default::default()
            },
        },
        ..Default::default()
    };
    if backend == BackendChoice::Ort {
        opts.backend.ort.library = Some(ort_library());
    }
    Model::load(bundle, &opts)
        .unwrap_or_else(|e| panic!("loading {} on {backend:?}: {e:#}", bundle.display()))
}

/// max |diff| of one named tensor between a trace and the golden, shapes checked.
pub fn diff(name: &str, got: &BTreeMap<String, Tensor>, want: &BTreeMap<String, Tensor>) -> f32 {
    let g = got
        .get(name)
        .unwrap_or_else(|| panic!("trace has no {name}"));
    let w = want
        .get(name)
        .unwrap_or_else(|| panic!("golden has no {name}"));
    assert_eq!(g.shape(), w.shape(), "{name}: shape");
    max_abs_diff(&g.to_f32(), &w.to_f32())
}

pub fn ids(name: &str, t: &BTreeMap<String, Tensor>) -> Vec<i64> {
    t.get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_i64()
        .unwrap()
}

/// A private, writable copy of a case's f32 bundle (the directory goes with the TempDir).
pub fn copy_bundle_of(case: &str) -> (tempfile::TempDir, PathBuf) {
    let src = bundle(case, Dtype::F32);
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("bundle");
    std::fs::create_dir(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    (tmp, dst)
}

pub fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}
