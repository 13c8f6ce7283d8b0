//! `ove layout` as a user runs it: the example pages' lines, an overlay, JSON for programs,
//! and an unreadable file reported without stopping the others.

use std::path::{Path, PathBuf};
use std::process::Command;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// The number of text lines of an example page: its ground-truth text has one per line.
fn truth_lines(name: &str) -> usize {
    let txt = example(name).with_extension("txt");
    std::fs::read_to_string(&txt)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn json_lists_every_line_of_each_example_page() {
    let pages = [
        "docgen-receipt.png",
        "docgen-form.png",
        "docgen-paragraph.png",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_ove"))
        .arg("layout")
        .arg("--json")
        .args(pages.iter().map(|p| example(p)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = v.as_array().expect("an array of pages");
    assert_eq!(found.len(), pages.len());
    for (page, name) in found.iter().zip(pages) {
        let lines = page["lines"].as_array().unwrap();
        assert_eq!(lines.len(), truth_lines(name), "{name}: {page}");
        // Reading order: top to bottom on these single-column pages.
        let tops: Vec<u64> = lines
            .iter()
            .map(|l| l["bbox"]["y0"].as_u64().unwrap())
            .collect();
        assert!(tops.windows(2).all(|w| w[0] < w[1]), "{name}: {tops:?}");
        assert!(page["image"].as_str().unwrap().ends_with(name));
    }
}

#[test]
fn draw_writes_an_overlay_and_a_bad_file_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("notes.png");
    std::fs::write(&bad, b"not an image").unwrap();
    let overlays = tmp.path().join("overlays");
    let out = Command::new(env!("CARGO_BIN_EXE_ove"))
        .arg("layout")
        .arg(&bad)
        .arg(example("docgen-receipt.png"))
        .arg("--draw")
        .arg(&overlays)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "one image failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notes.png"), "{err}");
    let overlay = overlays.join("docgen-receipt.layout.png");
    let img = image::open(&overlay).expect("the overlay is a PNG");
    let page = image::open(example("docgen-receipt.png")).unwrap();
    assert_eq!((img.width(), img.height()), (page.width(), page.height()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| !l.starts_with("==>")).count(),
        truth_lines("docgen-receipt.png"),
        "{text}"
    );
}
