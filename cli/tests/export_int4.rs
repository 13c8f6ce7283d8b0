//! `ove export --int4` as a user runs it: the fast defaults (lm_head int4, accuracy level 4)
//! and the exact path one flag away, each recorded in the manifest; conflicting flags are
//! refused before anything is written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn checkpoint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/one-image/checkpoint")
}

fn export(out: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ove"))
        .env("RUST_LOG", "warn")
        .arg("export")
        .arg("--checkpoint")
        .arg(checkpoint())
        .arg("--out")
        .arg(out)
        .args(flags)
        .output()
        .unwrap()
}

/// `(parts, accuracy_level)` of the bundle's manifest.
fn quantization(out: &Path, flags: &[&str]) -> (Vec<String>, Option<u64>) {
    let o = export(out, flags);
    assert!(
        o.status.success(),
        "ove export {flags:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let q = &m["quantization"];
    let parts = q["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    (parts, q["accuracy_level"].as_u64())
}

#[test]
fn int4_defaults_are_fast_and_exact_is_one_flag_away() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (parts, level) = quantization(&t.join("fast"), &["--int4"]);
    assert_eq!(parts, ["decoder_linear", "lm_head"]);
    assert_eq!(level, Some(4));

    let (parts, level) = quantization(&t.join("exact"), &["--int4", "--int4-exact"]);
    assert_eq!(parts, ["decoder_linear"]);
    assert_eq!(level, Some(0));

    let (parts, level) = quantization(&t.join("keep"), &["--int4", "--keep-lm-head"]);
    assert_eq!(parts, ["decoder_linear"]);
    assert_eq!(level, Some(4));

    // TensorRT picks its own precision: no level is written, lm_head is int4 as on ort.
    let (parts, level) = quantization(
        &t.join("trt"),
        &["--int4", "--target", "tensorrt", "--block-size", "64"],
    );
    assert_eq!(parts, ["decoder_linear", "lm_head"]);
    assert_eq!(level, None);
}

#[test]
fn conflicting_int4_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for flags in [
        &["--int4", "--int4-exact", "--int4-accuracy-level", "4"][..],
        &["--int4-exact"][..],
        &[
            "--int4",
            "--target",
            "tensorrt",
            "--int4-accuracy-level",
            "4",
        ][..],
    ] {
        let out = tmp.path().join("b");
        let o = export(&out, flags);
        assert!(!o.status.success(), "ove export {flags:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            !out.join("manifest.json").exists(),
            "{flags:?} wrote a bundle"
        );
        eprintln!("{flags:?}: {}", err.lines().next().unwrap_or(""));
    }
}
