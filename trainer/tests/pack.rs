//! `ove-train pack`: lengths from image headers agree with the full preprocessing, and the
//! command writes bins that hold every kept sample exactly once.

use std::path::{Path, PathBuf};
use std::process::Command;

use ove_core::checkpoint::Checkpoint;
use ove_train::train::data::Record;
use ove_train::train::pack_manifest::{manifest_lengths, record_length};

fn checkpoint_dir() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/two-images/checkpoint");
    assert!(p.is_dir(), "golden checkpoint missing at {}", p.display());
    p
}

/// A manifest of text-only and image samples (PNG and JPEG, several sizes), one of them
/// too long for a 96-token bin.
fn write_manifest(dir: &Path, pad: i64) -> PathBuf {
    let sizes = [(56u32, 56u32), (100, 30), (33, 200), (300, 290), (57, 85)];
    for (k, &(w, h)) in sizes.iter().enumerate() {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, k as u8]));
        let ext = if k.is_multiple_of(2) { "png" } else { "jpg" };
        img.save(dir.join(format!("img{k}.{ext}"))).unwrap();
    }
    let name = |k: usize| format!("img{k}.{}", if k.is_multiple_of(2) { "png" } else { "jpg" });
    let mut lines = Vec::new();
    for i in 0..40usize {
        let n_img = i % 3;
        let mut prompt: Vec<i64> = (0..(i % 7 + 2) as i64).collect();
        let mut images = Vec::new();
        for j in 0..n_img {
            prompt.push(pad);
            images.push(name((i + j) % sizes.len()));
        }
        let response: Vec<i64> = (0..(i % 5 + 1) as i64).map(|t| t + 10).collect();
        lines.push(serde_json::json!({
            "prompt_ids": prompt, "response_ids": response, "images": images
        }));
    }
    // Far over the 96-token bins of the command test.
    lines.push(serde_json::json!({"prompt_ids": vec![1i64; 200], "response_ids": [2]}));
    let path = dir.join("manifest.jsonl");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&path, text.join("\n\n") + "\n").unwrap();
    path
}

#[test]
fn header_lengths_match_the_preprocessed_samples() {
    let ckpt = Checkpoint::open(&checkpoint_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), ckpt.config.image_token_id);
    let pre = ckpt.preprocessor.as_ref();
    let lengths = manifest_lengths(&manifest, &ckpt.config, pre, 3).unwrap();
    let text = std::fs::read_to_string(&manifest).unwrap();
    let records: Vec<Record> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lengths.len(), records.len());
    let mut with_images = 0;
    for (i, (r, &len)) in records.iter().zip(&lengths).enumerate() {
        let full = r.to_sample(dir.path(), &ckpt.config, pre).unwrap();
        assert_eq!(len, full.len(), "record {i}");
        assert_eq!(
            len,
            record_length(r, dir.path(), &ckpt.config, pre).unwrap()
        );
        with_images += usize::from(!r.images.is_empty());
    }
    assert!(with_images > 10);
    // A pad without an image is an error that names the line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n",
            serde_json::json!({"prompt_ids": [1, ckpt.config.image_token_id], "response_ids": [2]})
        ),
    )
    .unwrap();
    let err = manifest_lengths(&bad, &ckpt.config, pre, 1).unwrap_err();
    assert!(format!("{err:#}").contains("bad.jsonl:1"), "{err:#}");
}

#[test]
fn pack_command_writes_every_kept_sample_once() {
    let ckpt = Checkpoint::open(&checkpoint_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), ckpt.config.image_token_id);
    let lengths = manifest_lengths(&manifest, &ckpt.config, ckpt.preprocessor.as_ref(), 2).unwrap();
    let run = |out: &Path, seed: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_ove-train"))
            .args(["pack", "--data"])
            .arg(&manifest)
            .arg("--checkpoint")
            .arg(checkpoint_dir())
            .args(["--max-len", "96", "--seed", seed, "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(stdout.contains("compression"), "{stdout}");
        std::fs::read_to_string(out.join("bins-00000.jsonl")).unwrap()
    };
    let out = dir.path().join("packed");
    let bins = run(&out, "5");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let dropped: Vec<usize> = (0..lengths.len()).filter(|&i| lengths[i] > 96).collect();
    assert!(!dropped.is_empty());
    assert_eq!(report["dropped"], dropped.len());
    assert_eq!(report["samples"], lengths.len());
    let mut seen = vec![0; lengths.len()];
    let mut nbins = 0;
    for line in bins.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let members: Vec<usize> = v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let tokens: usize = members.iter().map(|&i| lengths[i]).sum();
        assert!(tokens <= 96);
        assert_eq!(v["tokens"], tokens);
        for i in members {
            seen[i] += 1;
        }
        nbins += 1;
    }
    assert_eq!(report["bins"], nbins);
    for (i, &n) in seen.iter().enumerate() {
        assert_eq!(n, usize::from(!dropped.contains(&i)), "record {i}");
    }
    let kept_tokens: usize = (0..lengths.len())
        .filter(|i| !dropped.contains(i))
        .map(|i| lengths[i])
        .sum();
    assert_eq!(
        report["padding_after"],
        nbins * 96 - kept_tokens,
        "{report:#}"
    );
    // Same seed, same bins.
    assert_eq!(run(&dir.path().join("again"), "5"), bins);
}
