//! The built-in default OCR model, through the `ove` binary as a user runs it:
//! - the README's first command (`ove ocr` on the example receipt, no --bundle) succeeds,
//!   unpacks the embedded bundle, reads the receipt within a CER bound, and prints the same
//!   text on tract and on ONNX Runtime;
//! - `ove eval` on held-out sets of the four kinds of issue 16's evaluation (single clean
//!   lines, single degraded lines, paragraphs, receipts; fonts and a seed never used in
//!   training) stays under a CER bound per set, on both backends.
//!
//! The bounds are the committed model's measured CER plus a margin
//! (models/default-ocr/README.md has the figures): they catch a regression in
//! preprocessing, layout, line crops, export or the CTC reader (a broken pipeline reads
//! nothing, CER ~1).
use std::path::{Path, PathBuf};
use std::process::Command;

use ove_docgen::dataset::{write_set, Degradation, Options};
use ove_docgen::fonts;
use ove_docgen::generate::Kind;

const OVE: &str = env!("CARGO_BIN_EXE_ove");

/// The README's example: the first receipt `ove-docgen generate --kinds receipt --fonts
/// heldout --seed 16 --count 1 --no-manifests` writes (not picked), and its ground truth.
const README_EXAMPLE: &str = "examples/heldout-receipt.png";
const README_EXAMPLE_TEXT: &str = "examples/heldout-receipt.txt";
/// CER the README's example must stay under: issue 16's 2% (measured 0.0068 on both
/// backends with the default reading: the euro sign of `TOTAL €55.46` read as `¬`).
const README_CER_BOUND: f64 = 0.02;

/// The held-out sets: name, kind, degradation, bound on the set's total CER (measured when
/// committed, both backends, the default reading: 0.0139, 0.0609, 0.0016, 0.0032; the
/// previous model: 0.0139, 0.0582, 0.0000, 0.0005; 10 images a set are a small sample: one
/// clean line's character is 0.3%, and seed 7171's 60-image sets read better on all four
/// kinds, models/default-ocr/README.md) (the
/// training recipe uses seeds 1-21 and its evaluation 1001-1021; this seed is used nowhere
/// else).
const EVAL_SEED: u64 = 4242;
const EVAL_COUNT: u64 = 10;
const EVAL_SETS: [(&str, Kind, Degradation, f64); 4] = [
    ("lines-clean", Kind::Line, Degradation::Clean, 0.02),
    ("lines-degraded", Kind::Line, Degradation::Level(0.7), 0.08),
    ("paragraphs", Kind::Paragraph, Degradation::Clean, 0.01),
    ("receipts", Kind::Receipt, Degradation::Clean, 0.008),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ove(cache: &Path) -> Command {
    let mut c = Command::new(OVE);
    c.current_dir(root())
        .env("OVE_CACHE_DIR", cache)
        .env("RUST_LOG", "warn");
    c
}

#[test]
fn readme_example_reads_within_bound_on_the_embedded_model() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("scripts/ove ocr {README_EXAMPLE}\n")),
        "README.md's first command is not `scripts/ove ocr {README_EXAMPLE}`"
    );
    let expected = std::fs::read_to_string(root().join(README_EXAMPLE_TEXT)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut texts = Vec::new();
    for backend in ["tract", "ort"] {
        let out = ove(cache.path())
            .args(["ocr", README_EXAMPLE, "--backend", backend])
            .output()
            .expect("running ove ocr");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ove ocr ({backend}) failed: {stderr}");
        let text = String::from_utf8(out.stdout).unwrap();
        let cer = ove_core::metrics::score(&expected, &text).cer();
        eprintln!("README example ({backend}): CER {cer:.4}\n{text}");
        assert!(
            cer <= README_CER_BOUND,
            "ove ocr ({backend}) read the README's example at CER {cer:.4} > {README_CER_BOUND}:\n{text}"
        );
        texts.push(text);
    }
    assert_eq!(
        texts[0], texts[1],
        "tract and ONNX Runtime read differently"
    );
    // Unpacked once, under a digest-named folder, verified like any bundle (beside it,
    // `tract/` holds tract's decoder cache unless OVE_TRACT_CACHE=off).
    let dirs: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "tract")
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert!(dirs[0].starts_with("default-ocr-"), "{dirs:?}");
    assert!(cache.path().join(&dirs[0]).join("manifest.json").is_file());
}

#[test]
fn held_out_cer_within_bound() {
    let specs = fonts::select("heldout").expect("held-out fonts (scripts/setup installs them)");
    let cache = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, kind, degradation, bound) in EVAL_SETS {
        let data = tempfile::tempdir().unwrap();
        let opts = Options {
            kinds: vec![kind],
            seed: EVAL_SEED,
            degradation,
        };
        write_set(data.path(), &specs, &opts, 0, EVAL_COUNT, false).expect("generating the set");
        for backend in ["tract", "ort"] {
            let out = ove(cache.path())
                .args(["eval", "--json", "--backend", backend, "--data"])
                .arg(data.path())
                .output()
                .expect("running ove eval");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "ove eval ({name}, {backend}) failed: {stderr}"
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("eval JSON");
            assert_eq!(v["count"], EVAL_COUNT, "{v}");
            assert_eq!(v["failed"], 0, "{v}");
            let cer = v["total"]["cer"].as_f64().expect("total.cer");
            eprintln!(
                "{name} ({EVAL_COUNT} images, {backend}): CER {cer:.4}, WER {}, bound {bound}",
                v["total"]["wer"]
            );
            if cer > bound {
                failures.push(format!("{name} on {backend}: CER {cer:.4} > {bound}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the default model reads the held-out sets worse than its bounds: {failures:?}"
    );
}

/// Issue 16's batch test, as a user runs it: `ove ocr --json` reads every line of the
/// README's receipt and of held-out pages of the four page kinds the same (same boxes,
/// same text) with all lines in one lines.onnx call as one by one through vision.onnx, on
/// both backends.
#[test]
fn batched_lines_read_as_one_by_one() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/default-ocr/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["graphs"]["lines"], "lines.onnx",
        "the default bundle has no batched line encoder"
    );
    let specs = fonts::select("heldout").expect("held-out fonts (scripts/setup installs them)");
    let data = tempfile::tempdir().unwrap();
    let opts = Options {
        kinds: ["paragraph", "receipt", "form", "table"]
            .map(|k| Kind::parse(k).unwrap())
            .to_vec(),
        seed: EVAL_SEED + 1,
        degradation: Degradation::Level(0.5),
    };
    write_set(data.path(), &specs, &opts, 0, 4, false).expect("generating the pages");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pages.sort();
    assert_eq!(pages.len(), 4, "{pages:?}");
    pages.insert(0, root().join(README_EXAMPLE));
    let cache = tempfile::tempdir().unwrap();
    for backend in ["tract", "ort"] {
        let read = |batch: &str| {
            let out = ove(cache.path())
                .args(["ocr", "--json", "--backend", backend, "--line-batch", batch])
                .args(&pages)
                .output()
                .expect("running ove ocr");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "ove ocr ({backend}, batch {batch}): {stderr}"
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("ocr JSON")
        };
        let (mut batched, mut alone) = (read("16"), read("1"));
        let lines: usize = batched
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["lines"].as_array().unwrap().len())
            .sum();
        eprintln!("{backend}: {lines} lines on {} pages", pages.len());
        assert!(
            lines >= 5 * pages.len(),
            "too few lines to test batching: {lines}"
        );
        // Confidences agree up to the kernels' summation order; all else exactly.
        let (a, b) = (take_confidences(&mut batched), take_confidences(&mut alone));
        assert_eq!(a.len(), lines, "{backend}: a line without its confidence");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-4,
                "{backend}: confidence {x} against {y}"
            );
        }
        assert_eq!(batched, alone, "{backend}: batches read differently");
    }
}

/// Removes every line's "confidence" from `ove ocr --json` output and returns them in order.
fn take_confidences(pages: &mut serde_json::Value) -> Vec<f64> {
    let mut out = Vec::new();
    for page in pages.as_array_mut().unwrap() {
        for line in page["lines"].as_array_mut().unwrap() {
            let c = line.as_object_mut().unwrap().remove("confidence");
            out.extend(c.and_then(|c| c.as_f64()));
        }
    }
    out
}

/// The gate of the multi-scale reading: with `--reread-below 0` no line is read again, so
/// `--read-scales 7` reads as `--read-scales 1` does (the same first reading of every
/// line, none voted), `--reread-below 1` votes every line over 7 readings, and the JSON
/// says so; a probability outside 0..=1 is refused with the flag's name.
#[test]
fn no_line_is_read_again_below_zero() {
    let cache = tempfile::tempdir().unwrap();
    let read = |extra: &[&str]| {
        ove(cache.path())
            .args(["ocr", "--json", "--backend", "ort", README_EXAMPLE])
            .args(extra)
            .output()
            .expect("running ove ocr")
    };
    let json = |out: std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ove ocr failed: {stderr}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("ocr JSON")
    };
    let once = json(read(&["--read-scales", "1"]));
    let gated = json(read(&["--read-scales", "7", "--reread-below", "0"]));
    assert!(once[0]["lines"].as_array().unwrap().len() >= 5, "{once}");
    assert_eq!(once, gated, "--reread-below 0 read some line again");
    // Every line says how sure its first reading was and how many readings it got.
    let lines = |v: &serde_json::Value| v[0]["lines"].as_array().unwrap().clone();
    for line in lines(&once) {
        let c = line["confidence"]
            .as_f64()
            .expect("a CTC line has a confidence");
        assert!((0.0..=1.0).contains(&c), "{line}");
        assert_eq!(line["readings"], 1, "{line}");
    }
    let all = json(read(&["--reread-below", "1"]));
    for (line, first) in lines(&all).iter().zip(lines(&once)) {
        assert_eq!(line["readings"], 7, "{line}");
        assert_eq!(line["confidence"], first["confidence"], "{line}");
    }
    for bad in ["1.5", "-0.1", "NaN"] {
        let out = read(&[&format!("--reread-below={bad}")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--reread-below {bad} was accepted");
        assert!(stderr.contains("--reread-below"), "{bad}: {stderr}");
    }
}
