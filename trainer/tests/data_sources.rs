//! Data sources: WebDataset-style tar shards next to the JSONL manifest, and corrupt images
//! skipped and counted (never fatal) when loading for `train` and when packing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ove_core::checkpoint::Checkpoint;
use ove_train::train::binpack::PackConfig;
use ove_train::train::data::{read_data, Record};
use ove_train::train::pack_manifest::pack_manifest_with_skips;
use ove_train::train::shards::{read_shard, shard_paths};

fn checkpoint_dir() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/two-images/checkpoint");
    assert!(p.is_dir(), "golden checkpoint missing at {}", p.display());
    p
}

/// An encoded image (noisy, so a truncated copy really lacks pixel data).
fn image_bytes(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let v = x.wrapping_mul(7919) ^ y.wrapping_mul(104_729);
        image::Rgb([v as u8, (v >> 8) as u8, (x + y) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn record(pad: i64, images: usize) -> serde_json::Value {
    let mut prompt: Vec<i64> = vec![1, 2, 3];
    prompt.extend(std::iter::repeat_n(pad, images));
    serde_json::json!({"prompt_ids": prompt, "response_ids": [7, 8]})
}

/// A shard of three samples: `a` (one PNG), `b` (a corrupt PNG), `c` (a PNG and a JPEG).
fn write_shard(path: &Path, pad: i64) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes).unwrap();
    };
    add("a.json", record(pad, 1).to_string().as_bytes());
    add("a.png", &image_bytes(56, 56, image::ImageFormat::Png));
    add("a.txt", b"a caption, ignored");
    add("b.json", record(pad, 1).to_string().as_bytes());
    add("b.png", b"\x89PNG\r\n\x1a\nthis is not a png at all");
    add("c.json", record(pad, 2).to_string().as_bytes());
    add("c.1.jpg", &image_bytes(100, 30, image::ImageFormat::Jpeg));
    add("c.0.png", &image_bytes(33, 80, image::ImageFormat::Png));
    b.into_inner().unwrap();
}

#[test]
fn tar_shard_loads_and_skips_the_corrupt_image() {
    let ckpt = Checkpoint::open(&checkpoint_dir()).unwrap();
    let pad = ckpt.config.image_token_id;
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("shard-000.tar");
    write_shard(&shard, pad);

    let samples = read_shard(&shard).unwrap();
    let keys: Vec<&str> = samples
        .iter()
        .map(|s| s.name.rsplit(':').next().unwrap())
        .collect();
    assert_eq!(keys, ["a", "b", "c"]);
    let c: Vec<&str> = samples[2].images.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(c, ["c.0.png", "c.1.jpg"]);

    let loaded = read_data(&shard, &ckpt.config, ckpt.preprocessor.as_ref()).unwrap();
    assert_eq!(loaded.samples.len(), 2);
    assert_eq!(loaded.skipped.count, 1);
    assert!(
        loaded.skipped.first[0].contains("shard-000.tar:b"),
        "{:?}",
        loaded.skipped
    );

    // The shard's samples equal the same records read from files through JSONL.
    let mut lines = Vec::new();
    for (s, _) in samples.iter().zip(&keys).filter(|(_, k)| **k != "b") {
        let mut names = Vec::new();
        for (name, bytes) in &s.images {
            std::fs::write(dir.path().join(name), bytes).unwrap();
            names.push(name.clone());
        }
        let mut r = record(pad, names.len());
        r["images"] = serde_json::json!(names);
        lines.push(r.to_string());
    }
    let manifest = dir.path().join("same.jsonl");
    std::fs::write(&manifest, lines.join("\n")).unwrap();
    let from_jsonl = read_data(&manifest, &ckpt.config, ckpt.preprocessor.as_ref()).unwrap();
    assert_eq!(from_jsonl.skipped.count, 0);
    for (a, b) in loaded.samples.iter().zip(&from_jsonl.samples) {
        assert_eq!(a.input_ids, b.input_ids);
        assert_eq!(a.pixel_values, b.pixel_values);
        assert_eq!(a.grids, b.grids);
    }

    // A directory of shards and a one-star pattern name the same shard.
    assert_eq!(
        shard_paths(dir.path()).unwrap().unwrap(),
        vec![shard.clone()]
    );
    assert_eq!(
        shard_paths(&dir.path().join("shard-*.tar"))
            .unwrap()
            .unwrap(),
        vec![shard.clone()]
    );
    assert!(shard_paths(&manifest).unwrap().is_none());
    let by_dir = read_data(dir.path(), &ckpt.config, ckpt.preprocessor.as_ref()).unwrap();
    assert_eq!((by_dir.samples.len(), by_dir.skipped.count), (2, 1));
}

#[test]
fn jsonl_truncated_png_is_skipped_and_counted() {
    let ckpt = Checkpoint::open(&checkpoint_dir()).unwrap();
    let pad = ckpt.config.image_token_id;
    let dir = tempfile::tempdir().unwrap();
    let png = image_bytes(64, 48, image::ImageFormat::Png);
    std::fs::write(dir.path().join("good.png"), &png).unwrap();
    std::fs::write(dir.path().join("cut.png"), &png[..png.len() / 2]).unwrap();
    let line = |img: &str| {
        let mut r = record(pad, 1);
        r["images"] = serde_json::json!([img]);
        r.to_string()
    };
    let manifest = dir.path().join("data.jsonl");
    std::fs::write(
        &manifest,
        [line("good.png"), line("cut.png"), line("good.png")].join("\n") + "\n",
    )
    .unwrap();
    let loaded = read_data(&manifest, &ckpt.config, ckpt.preprocessor.as_ref()).unwrap();
    assert_eq!(loaded.samples.len(), 2);
    assert_eq!(loaded.skipped.count, 1);
    assert!(
        loaded.skipped.first[0].contains("data.jsonl:2"),
        "{:?}",
        loaded.skipped
    );
    assert!(
        loaded.skipped.first[0].contains("cut.png"),
        "{:?}",
        loaded.skipped
    );
    // The strict per-record path still reports the image as an error.
    let r: Record = serde_json::from_str(&line("cut.png")).unwrap();
    assert!(r
        .to_sample(dir.path(), &ckpt.config, ckpt.preprocessor.as_ref())
        .is_err());
    // A missing image file is not a corrupt image: still an error naming the line.
    std::fs::write(&manifest, line("missing.png") + "\n").unwrap();
    let err = read_data(&manifest, &ckpt.config, ckpt.preprocessor.as_ref()).unwrap_err();
    assert!(format!("{err:#}").contains("data.jsonl:1"), "{err:#}");
}

fn bin_samples(out: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(out.join("bins-00000.jsonl")).unwrap();
    let mut all = Vec::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        all.extend(
            v["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32),
        );
    }
    all.sort();
    all
}

#[test]
fn pack_skips_and_counts_unreadable_images() {
    let ckpt = Checkpoint::open(&checkpoint_dir()).unwrap();
    let pad = ckpt.config.image_token_id;
    let dir = tempfile::tempdir().unwrap();
    let cfg = PackConfig {
        capacity: 4096,
        min_fill: vec![0.96, 0.95, 0.94, 0.93, 0.92, 0.91, 0.90],
        seed: 3,
        shards: 1,
    };

    // JSONL: record 1's image has no readable header.
    std::fs::write(
        dir.path().join("good.png"),
        image_bytes(56, 56, image::ImageFormat::Png),
    )
    .unwrap();
    std::fs::write(dir.path().join("bad.png"), b"\x89PNG\r\n\x1a\n").unwrap();
    let line = |img: &str| {
        let mut r = record(pad, 1);
        r["images"] = serde_json::json!([img]);
        r.to_string()
    };
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(
        &manifest,
        [line("good.png"), line("bad.png"), line("good.png")].join("\n"),
    )
    .unwrap();
    let out = dir.path().join("packed-jsonl");
    let (report, skipped) = pack_manifest_with_skips(
        &manifest,
        &ckpt.config,
        ckpt.preprocessor.as_ref(),
        &cfg,
        &out,
    )
    .unwrap();
    assert_eq!(skipped.count, 1);
    assert!(skipped.first[0].contains("m.jsonl:2"), "{skipped:?}");
    assert_eq!(bin_samples(&out), vec![0, 2]);
    assert_eq!(report.samples, 2);
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(rep["skipped_images"]["count"], 1);

    // A tar shard through the command line: sample 1 (key b) skipped, 0 and 2 packed.
    let shard = dir.path().join("s.tar");
    write_shard(&shard, pad);
    let out = dir.path().join("packed-tar");
    let o = Command::new(env!("CARGO_BIN_EXE_ove-train"))
        .args(["pack", "--data"])
        .arg(&shard)
        .arg("--checkpoint")
        .arg(checkpoint_dir())
        .args(["--max-len", "4096", "--seed", "1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(bin_samples(&out), vec![0, 2]);
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(rep["skipped_images"]["count"], 1);
    let first: BTreeSet<String> = rep["skipped_images"]["first"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(first.iter().all(|n| n.contains("s.tar:b")), "{first:?}");
}
