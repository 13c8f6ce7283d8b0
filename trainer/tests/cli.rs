//! The `ove-train` binary: --help, `trace` and `resave` end to end.

use std::path::{Path, PathBuf};
use std::process::Command;

use ove_core::tensor_file::read_safetensors;
use ove_train::trace::compare;

fn golden_case(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/golden")
        .join(name);
    assert!(p.is_dir(), "golden data missing at {}", p.display());
    p
}

fn ove_train(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ove-train"))
        .args(args)
        .output()
        .expect("running ove-train");
    assert!(
        out.status.success(),
        "ove-train {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn help_lists_the_commands() {
    let out = ove_train(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["trace", "resave", "train"] {
        assert!(text.contains(cmd), "--help does not mention {cmd}:\n{text}");
    }
    let out = ove_train(&["trace", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--pixels-from-case"));
}

#[test]
fn trace_writes_the_golden_layout() {
    let case = golden_case("two-images");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trace.safetensors");
    let run = ove_train(&[
        "trace",
        "--checkpoint",
        case.join("checkpoint").to_str().unwrap(),
        "--case",
        case.to_str().unwrap(),
        "--pixels-from-case",
        "--out",
        out.to_str().unwrap(),
        "--compare",
    ]);
    println!("{}", String::from_utf8_lossy(&run.stdout));
    let traced = read_safetensors(&out).unwrap();
    let expected = read_safetensors(&case.join("expected.safetensors")).unwrap();
    for (name, t) in &expected {
        assert_eq!(traced[name].shape(), t.shape(), "{name}");
    }
    let cmp = compare(&expected, &traced).unwrap();
    assert!(cmp.diff("logits").unwrap() <= 1e-4);
    assert_eq!(cmp.identical("generated_ids"), Some(true));
}

#[test]
fn a_bad_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ove-train"))
        .args([
            "resave",
            "--checkpoint",
            dir.path().to_str().unwrap(),
            "--out",
        ])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json"), "{err}");
}

/// Stage 1 on a two-line JSONL built from the golden one-image case: the merger moves,
/// nothing else does, and the result loads as a checkpoint.
#[test]
fn train_stage1_end_to_end() {
    let case = golden_case("one-image");
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("case.json")).unwrap()).unwrap();
    let pad = spec["special_tokens"]["image_pad"].as_i64().unwrap();
    let ids: Vec<i64> = spec["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    // One pad per image in the prompt; the trainer expands it.
    let mut collapsed: Vec<i64> = Vec::new();
    for &t in &ids {
        if !(t == pad && collapsed.last() == Some(&pad)) {
            collapsed.push(t);
        }
    }
    let (prompt, response) = collapsed.split_at(collapsed.len() - 4);
    let dir = tempfile::tempdir().unwrap();
    let img = case.join("img0.png");
    let lines = [
        serde_json::json!({"prompt_ids": prompt, "response_ids": response, "images": [img]}),
        serde_json::json!({"prompt_ids": [1, 2, 3], "response_ids": [4, 5]}),
    ];
    let data = dir.path().join("data.jsonl");
    std::fs::write(
        &data,
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let out = dir.path().join("trained");
    let run = ove_train(&[
        "train",
        "--checkpoint",
        case.join("checkpoint").to_str().unwrap(),
        "--stage",
        "stage1",
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    println!("{}", String::from_utf8_lossy(&run.stdout));
    let before = read_safetensors(&case.join("checkpoint/model.safetensors")).unwrap();
    let after = read_safetensors(&out.join("model.safetensors")).unwrap();
    assert_eq!(before.len(), after.len());
    for (name, t) in &before {
        let moved = after[name] != *t;
        assert_eq!(moved, name.starts_with("visual.merger."), "{name}");
    }
    assert!(out.join("preprocessor_config.json").is_file());
    ove_core::checkpoint::Checkpoint::open(&out).unwrap();
}

#[test]
fn bench_train_runs_a_tiny_config_on_the_cpu() {
    let out = ove_train(&[
        "bench-train",
        "--preset",
        "tiny",
        "--seq-len",
        "32",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--device",
        "cpu",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT impl=ove-train"))
        .unwrap_or_else(|| panic!("no RESULT line:\n{text}"));
    assert!(line.contains("tokens_per_step=32"), "{line}");
    assert!(line.contains("mfu="), "{line}");
    let bad = Command::new(env!("CARGO_BIN_EXE_ove-train"))
        .args(["bench-train", "--preset", "tiny", "--device", "tpu"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
