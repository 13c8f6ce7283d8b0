//! `ove-train balance` end to end: .npy and .safetensors inputs, weights out, the concept
//! entropy printed rising towards flat.

use std::collections::BTreeMap;
use std::process::Command;

use ove_core::tensor_file::{write_safetensors, Tensor};
use ove_train::train::balance::write_npy_f32;
use ove_train::train::binpack::SplitMix64;

#[test]
fn balance_command_flattens_a_planted_imbalance() {
    let dir = tempfile::tempdir().unwrap();
    let (n_img, n_con, dim) = (3000usize, 6usize, 16usize);
    let mut rng = SplitMix64::new(9);
    let concepts: Vec<f32> = (0..n_con * dim)
        .map(|_| rng.unit() as f32 * 2.0 - 1.0)
        .collect();
    // Concept c holds 2^-(c+1) of the images, roughly.
    let mut images = Vec::new();
    for i in 0..n_img {
        let c = (i.trailing_ones() as usize).min(n_con - 1);
        for d in 0..dim {
            images.push(concepts[c * dim + d] + 0.01 * (rng.unit() as f32 - 0.5));
        }
    }
    let img = dir.path().join("images.npy");
    write_npy_f32(&img, &[n_img, dim], &images).unwrap();
    let con = dir.path().join("concepts.safetensors");
    let mut t = BTreeMap::new();
    t.insert(
        "embeddings".to_string(),
        Tensor::f32(vec![n_con, dim], concepts),
    );
    write_safetensors(&con, &t).unwrap();
    let out = dir.path().join("weights.npy");
    let drawn_path = dir.path().join("drawn.txt");
    let o = Command::new(env!("CARGO_BIN_EXE_ove-train"))
        .arg("balance")
        .arg("--image-embeddings")
        .arg(&img)
        .arg("--concept-embeddings")
        .arg(&con)
        .args(["--top-k", "1", "--draws", "30000", "--seed", "2", "--out"])
        .arg(&out)
        .arg("--samples-out")
        .arg(&drawn_path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    println!("{stdout}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("weights.npy.report.json")).unwrap(),
    )
    .unwrap();
    let r = &report["report"];
    let (before, after, flat) = (
        r["entropy_before"].as_f64().unwrap(),
        r["entropy_after"].as_f64().unwrap(),
        r["entropy_max"].as_f64().unwrap(),
    );
    assert!(stdout.contains("entropy before"), "{stdout}");
    assert!(before < 0.85 * flat && after > 0.97 * flat, "{r}");
    // Weights: one f32 per image after a 64-byte-aligned header, summing to 1.
    let bytes = std::fs::read(&out).unwrap();
    let header = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!(header % 64, 0);
    let w: Vec<f32> = bytes[header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(w.len(), n_img);
    assert!((w.iter().map(|&x| x as f64).sum::<f64>() - 1.0).abs() < 1e-4);
    // Images of the rarest concept weigh more than those of the commonest.
    assert!(w[63] > 10.0 * w[0], "{} vs {}", w[63], w[0]);
    let drawn = std::fs::read_to_string(&drawn_path).unwrap();
    assert_eq!(drawn.lines().count(), 30000);
}
