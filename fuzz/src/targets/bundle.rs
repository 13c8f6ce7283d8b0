//! A bundle's own files: `manifest.json` (with the checks that keep every listed path inside
//! the bundle) and the ONNX graphs (protobuf, then the external-data references).

use std::path::Path;

use ove_core::manifest::{resolve_in_bundle, Manifest};
use ove_core::onnx_proto::ModelProto;
use ove_runtime::bundle::graph_from_bytes;

use crate::fixtures;

/// Asserts that `path`, if it exists, resolves (links followed) inside `bundle`.
fn assert_inside(bundle: &Path, path: &Path, what: &str) {
    if let Ok(real) = path.canonicalize() {
        let root = bundle.canonicalize().expect("the bundle exists");
        assert!(
            real.starts_with(&root),
            "{what} {} leaves the bundle",
            path.display()
        );
    }
}

pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fx = fixtures::get();
    let Ok(m) = Manifest::parse(&fx.bundle, text) else {
        return;
    };
    for f in &m.files {
        let p = resolve_in_bundle(&fx.bundle, &f.path)
            .unwrap_or_else(|e| panic!("parse accepted {:?}, which does not resolve: {e}", f.path));
        assert_inside(&fx.bundle, &p, "listed file");
    }
    let _ = m.verify_files(&fx.bundle);
    let _ = m.bundle_digest();
    let again = serde_json::to_string_pretty(&m).expect("a parsed manifest serializes");
    let back = Manifest::parse(&fx.bundle, &again)
        .unwrap_or_else(|e| panic!("manifest written back does not read: {e}\n{again}"));
    assert_eq!(m, back, "manifest changed in a write and read");
}

pub fn onnx(data: &[u8]) {
    if let Ok(model) = ModelProto::from_bytes(data) {
        // Compared as bytes: float fields may hold NaN, which is not equal to itself.
        let bytes = model.to_bytes();
        let back = ModelProto::from_bytes(&bytes).expect("a written model reads");
        assert_eq!(
            bytes,
            back.to_bytes(),
            "ONNX model changed in a write and read"
        );
    }
    let fx = fixtures::get();
    let rel = fx.manifest.graphs.vision.clone();
    if let Ok(info) = graph_from_bytes(&fx.bundle, &fx.manifest, &rel, data) {
        for f in &info.external_files {
            assert_inside(&fx.bundle, &fx.bundle.join(f), "external data file");
        }
    }
}
