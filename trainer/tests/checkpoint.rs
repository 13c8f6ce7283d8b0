//! Checkpoint loading and saving: strict names and shapes, single-file and sharded bf16
//! layouts, and a save -> load round trip that `ove_core::checkpoint::Checkpoint` (what
//! `ove export` reads) accepts as it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ove_core::checkpoint::{Checkpoint, SINGLE_WEIGHTS, WEIGHTS_INDEX};
use ove_core::tensor_file::{read_safetensors, write_safetensors, Tensor as Owned};
use ove_train::checkpoint::{load_model, save_checkpoint, SaveDtype, SaveOptions};
use tch::{Device, Kind, Tensor};

fn golden_checkpoint() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/one-image/checkpoint");
    assert!(p.is_dir(), "golden data missing at {}", p.display());
    p
}

/// A writable copy of the golden checkpoint's config files, with the given weights.
fn checkpoint_with(dir: &Path, weights: &BTreeMap<String, Owned>) {
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(golden_checkpoint().join(f), dir.join(f)).unwrap();
    }
    write_safetensors(&dir.join(SINGLE_WEIGHTS), weights).unwrap();
}

fn variables(vs: &tch::nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables().into_iter().collect()
}

#[test]
fn loads_every_golden_tensor_exactly() {
    let src = golden_checkpoint();
    let loaded = load_model(&src, Device::Cpu).unwrap();
    let on_disk = read_safetensors(&src.join(SINGLE_WEIGHTS)).unwrap();
    let vars = variables(&loaded.vs);
    assert_eq!(vars.len(), on_disk.len());
    for (name, t) in &on_disk {
        let v = &vars[name];
        let shape: Vec<usize> = v.size().iter().map(|&d| d as usize).collect();
        assert_eq!(shape, t.shape(), "{name}");
        let values = Vec::<f32>::try_from(v.flatten(0, -1)).unwrap();
        assert_eq!(values, t.to_f32(), "{name}");
    }
}

#[test]
fn round_trip_single_file_f32() {
    let src = golden_checkpoint();
    let loaded = load_model(&src, Device::Cpu).unwrap();
    let out = tempfile::tempdir().unwrap();
    // A tokenizer next to the source must be carried over.
    let with_tok = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "preprocessor_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(src.join(f), with_tok.path().join(f)).unwrap();
    }
    std::fs::write(with_tok.path().join("tokenizer.json"), b"{\"fake\": true}").unwrap();

    save_checkpoint(
        &loaded.vs,
        &loaded.checkpoint.config,
        Some(with_tok.path()),
        out.path(),
        &SaveOptions::default(),
    )
    .unwrap();
    for f in [
        "config.json",
        SINGLE_WEIGHTS,
        "preprocessor_config.json",
        "generation_config.json",
        "tokenizer.json",
    ] {
        assert!(out.path().join(f).is_file(), "{f} not written");
    }
    assert!(!out.path().join(WEIGHTS_INDEX).exists());

    // What `ove export` opens.
    let ck = Checkpoint::open(out.path()).unwrap();
    assert_eq!(ck.config, loaded.checkpoint.config);
    assert!(ck.preprocessor.is_some());

    let again = load_model(out.path(), Device::Cpu).unwrap();
    let (a, b) = (variables(&loaded.vs), variables(&again.vs));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} changed in the round trip");
    }
}

#[test]
fn round_trip_sharded_bf16() {
    let src = golden_checkpoint();
    let loaded = load_model(&src, Device::Cpu).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = SaveOptions {
        dtype: SaveDtype::Bf16,
        max_shard_bytes: Some(300_000),
    };
    save_checkpoint(
        &loaded.vs,
        &loaded.checkpoint.config,
        Some(&src),
        out.path(),
        &opts,
    )
    .unwrap();
    assert!(out.path().join(WEIGHTS_INDEX).is_file());
    assert!(!out.path().join(SINGLE_WEIGHTS).exists());
    let shards: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("model-"))
        .collect();
    assert!(
        shards.len() > 2,
        "expected several shards, got {}",
        shards.len()
    );
    for s in &shards {
        // Only a single tensor larger than the limit may exceed it (none here).
        assert!(
            s.metadata().unwrap().len() < 300_000 + 20_000,
            "{:?} too big",
            s.path()
        );
    }

    let ck = Checkpoint::open(out.path()).unwrap();
    for name in ck.names() {
        assert_eq!(
            ck.info(name).unwrap().dtype,
            safetensors::Dtype::BF16,
            "{name}"
        );
    }
    // Loading bf16 gives the f32 weights rounded to bf16, exactly.
    let again = load_model(out.path(), Device::Cpu).unwrap();
    let (a, b) = (variables(&loaded.vs), variables(&again.vs));
    for (name, t) in &a {
        let rounded = t.to_kind(Kind::BFloat16).to_kind(Kind::Float);
        assert!(rounded.equal(&b[name]), "{name}");
    }

    // Saving again as one f32 file replaces the shards.
    save_checkpoint(
        &again.vs,
        &again.checkpoint.config,
        None,
        out.path(),
        &SaveOptions::default(),
    )
    .unwrap();
    assert!(!out.path().join(WEIGHTS_INDEX).exists());
    assert!(out.path().join(SINGLE_WEIGHTS).is_file());
    load_model(out.path(), Device::Cpu).unwrap();
}

fn load_error(weights: &BTreeMap<String, Owned>) -> String {
    let dir = tempfile::tempdir().unwrap();
    checkpoint_with(dir.path(), weights);
    match load_model(dir.path(), Device::Cpu) {
        Ok(_) => panic!("loading should have failed"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_missing_tensor_is_named() {
    let mut w = read_safetensors(&golden_checkpoint().join(SINGLE_WEIGHTS)).unwrap();
    w.remove("model.layers.1.self_attn.k_norm.weight");
    let err = load_error(&w);
    assert!(
        err.contains("missing: model.layers.1.self_attn.k_norm.weight"),
        "{err}"
    );
}

#[test]
fn an_extra_tensor_is_named() {
    let mut w = read_safetensors(&golden_checkpoint().join(SINGLE_WEIGHTS)).unwrap();
    w.insert(
        "visual.blocks.7.attn.qkv.weight".into(),
        Owned::f32(vec![2], vec![0.0, 1.0]),
    );
    let err = load_error(&w);
    assert!(
        err.contains("unexpected: visual.blocks.7.attn.qkv.weight"),
        "{err}"
    );
}

#[test]
fn a_misshaped_tensor_is_named() {
    let mut w = read_safetensors(&golden_checkpoint().join(SINGLE_WEIGHTS)).unwrap();
    w.insert(
        "visual.class_pos_emb".into(),
        Owned::f32(vec![1, 4], vec![0.0; 4]),
    );
    let err = load_error(&w);
    assert!(
        err.contains("visual.class_pos_emb") && err.contains("[1, 4]"),
        "{err}"
    );
}
