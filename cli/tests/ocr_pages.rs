//! `ove ocr` on pages as a user runs it: line-by-line reading follows `ove layout`'s lines,
//! and PDFs are read page by page (pages separated by a form feed; `--json` numbers them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ove(cache: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ove"))
        .current_dir(root())
        .env("OVE_CACHE_DIR", cache)
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ove {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn line_reading_reads_the_lines_the_layout_finds() {
    let cache = tempfile::tempdir().unwrap();
    let page = "examples/docgen-receipt.png";
    let layout = json(&ove(cache.path(), &["layout", "--json", page]));
    let read = json(&ove(
        cache.path(),
        &[
            "ocr",
            "--layout",
            "lines",
            "--json",
            "--backend",
            "tract",
            page,
        ],
    ));
    let pages = read.as_array().unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0]["page"], 1);
    let lines = pages[0]["lines"].as_array().unwrap();
    let found = layout[0]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), found.len());
    for (l, f) in lines.iter().zip(found) {
        assert_eq!(l["bbox"], f["bbox"]);
        assert!(l["text"].is_string());
    }
    // The page's text is its lines' texts, one per line.
    let joined: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(pages[0]["text"].as_str().unwrap(), joined.join("\n"));
}

/// A two-page PDF (Helvetica text, one line per page) and a broken one (a PDF header and
/// junk), both written by hand: cli/tests/data.
fn pdf(name: &str) -> String {
    format!("cli/tests/data/{name}")
}

#[test]
fn a_pdf_is_read_page_by_page() {
    let cache = tempfile::tempdir().unwrap();
    let two = pdf("two-pages.pdf");
    let common = ["--backend", "tract", "--max-new-tokens", "4", "--layout"];
    for layout in ["page", "lines"] {
        let mut args = vec!["ocr", "--json"];
        args.extend(common);
        args.extend([layout, two.as_str()]);
        let pages = json(&ove(cache.path(), &args));
        let numbers: Vec<u64> = pages
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["page"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, [1, 2], "{layout}");
        if layout == "lines" {
            for p in pages.as_array().unwrap() {
                assert_eq!(
                    p["lines"].as_array().unwrap().len(),
                    1,
                    "one line per page: {p}"
                );
            }
        }
    }
    let mut args = vec!["ocr"];
    args.extend(common);
    args.extend(["page", two.as_str()]);
    let text = String::from_utf8(ove(cache.path(), &args).stdout).unwrap();
    assert_eq!(
        text.matches('\x0c').count(),
        1,
        "pages separated by a form feed: {text:?}"
    );
}

#[test]
fn a_broken_pdf_is_an_error_naming_it() {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ove"))
        .current_dir(root())
        .env("OVE_CACHE_DIR", cache.path())
        .env("RUST_LOG", "warn")
        .args(["ocr", "--backend", "tract", &pdf("broken.pdf")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.pdf"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `ove bench --page` reads the page as `ove ocr` does and reports what it timed: the
/// layout's lines, the bundle's reading mode, positive times.
#[test]
fn the_page_bench_reports_the_lines_it_read() {
    let cache = tempfile::tempdir().unwrap();
    let page = "examples/docgen-receipt.png";
    let layout = json(&ove(cache.path(), &["layout", "--json", page]));
    let found = layout[0]["lines"].as_array().unwrap().len();
    let b = json(&ove(
        cache.path(),
        &[
            "bench",
            "--backend",
            "tract",
            "--page",
            page,
            "--page-runs",
            "2",
            "--json",
        ],
    ));
    assert_eq!(b["lines"], found, "{b}");
    assert_eq!(b["runs"], 2, "{b}");
    assert_eq!(b["layout"], "lines", "{b}");
    assert_eq!(b["backend"], "tract", "{b}");
    // The built-in model reads lines with its CTC head and has lines.onnx: batched and one
    // by one, alike (a bundle without lines.onnx reports no one-by-one timing).
    for (timing, batch) in [("batched", 16), ("one_by_one", 1)] {
        let t = &b[timing];
        assert_eq!(t["batch"], batch, "{b}");
        let (median, best) = (
            t["median_s"].as_f64().unwrap(),
            t["best_s"].as_f64().unwrap(),
        );
        assert!(best > 0.0 && best <= median, "{b}");
        assert!(t["lines_per_s"].as_f64().unwrap() > 0.0, "{b}");
    }
    assert_eq!(b["same_text"], true, "{b}");
}
