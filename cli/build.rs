//! Embeds the default OCR bundle (`models/default-ocr/`, committed) into `ove` when the
//! `embedded-model` feature is on, so that `ove ocr page.png` works from the binary alone
//! (on a Jetson too). The generated `embedded_bundle.rs` lists the bundle's files as
//! `(name, bytes)`; it is empty when the feature is off or the folder is missing.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let bundle = manifest_dir.join("../models/default-ocr");
    println!("cargo:rerun-if-changed={}", bundle.display());
    let mut code = String::from(
        "/// The embedded default bundle's files: (file name, bytes), sorted by name.\n\
         pub static FILES: &[(&str, &[u8])] = &[\n",
    );
    if std::env::var_os("CARGO_FEATURE_EMBEDDED_MODEL").is_some()
        && bundle.join("manifest.json").is_file()
    {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&bundle)
            .expect("reading models/default-ocr")
            .map(|e| e.expect("reading models/default-ocr").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            println!("cargo:rerun-if-changed={}", f.display());
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .expect("UTF-8 file name");
            if name.starts_with('.') || name == "README.md" {
                continue;
            }
            let abs = f.canonicalize().expect("canonical path");
            writeln!(code, "    ({name:?}, include_bytes!({abs:?})),").expect("string write");
        }
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("embedded_bundle.rs"), code).expect("writing embedded_bundle.rs");
}
