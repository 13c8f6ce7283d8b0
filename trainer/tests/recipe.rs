//! The default-model recipe on three generated pages: tokenizer -> prepare -> init -> two
//! training steps; the tokenizer is deterministic, the prepared records decode back to the
//! chat text, the loss is finite and the checkpoint opens.

use std::path::{Path, PathBuf};

use ove_core::checkpoint::Checkpoint;
use ove_core::config::GenerationConfig;
use ove_core::prompt::{
    render_chat, resolve_token_ids, DEFAULT_SYSTEM, IMAGE_PAD, IM_END, IM_START,
};
use ove_docgen::dataset::{write_set, Degradation, Options};
use ove_docgen::generate::Kind;
use ove_train::recipe::{
    collect_texts, decode, load_tokenizer, prepare_files, save_tokenizer, train_tokenizer,
    Conversation, SPECIAL_TOKENS,
};
use serde_json::Value;

mod common;
use common::ove_train;

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/default-ocr")
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn tokenizer_prepare_init_train() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("train");
    let opts = Options {
        kinds: vec![
            Kind::parse("line").unwrap(),
            Kind::parse("receipt").unwrap(),
        ],
        seed: 3,
        degradation: Degradation::Clean,
    };
    let fonts = ove_docgen::fonts::select("dejavu").unwrap();
    write_set(&data, &fonts, &opts, 0, 3, true).unwrap();

    // Tokenizer: specials first, deterministic.
    let inputs = [data.clone(), data.join("stage2.jsonl")];
    let texts = collect_texts(&inputs).unwrap();
    let tok = train_tokenizer(&texts, 600, 2).unwrap();
    let again = train_tokenizer(&texts, 600, 2).unwrap();
    assert_eq!(
        tok.to_string(false).unwrap(),
        again.to_string(false).unwrap()
    );
    for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(tok.token_to_id(s), Some(i as u32), "{s}");
    }
    let tok_file = dir.join("tokenizer.json");
    save_tokenizer(&tok, &tok_file).unwrap();
    let tok = load_tokenizer(&tok_file).unwrap();

    // Init: ids from the tokenizer.
    let ckpt = dir.join("init");
    ove_train(&[
        "init",
        "--config",
        configs().join("config.json").to_str().unwrap(),
        "--tokenizer",
        tok_file.to_str().unwrap(),
        "--out",
        ckpt.to_str().unwrap(),
    ]);
    let opened = Checkpoint::open(&ckpt).unwrap();
    assert_eq!(
        opened.config.image_token_id,
        i64::from(tok.token_to_id(IMAGE_PAD).unwrap())
    );
    assert!(opened.config.text_config.vocab_size >= tok.get_vocab_size(true));
    assert!(opened.preprocessor.is_some());
    let gen = GenerationConfig::from_file(&ckpt.join("generation_config.json")).unwrap();
    let ids = resolve_token_ids(&opened.config, &gen, Some(&tok)).unwrap();
    assert_eq!(ids.im_end, tok.token_to_id(IM_END).map(i64::from));

    // Prepare (into another folder: image paths are rewritten) and decode back.
    let prepared = dir.join("tokens/stage2.jsonl");
    let source = data.join("stage2.jsonl");
    let s = prepare_files(std::slice::from_ref(&source), &tok, &prepared).unwrap();
    let originals = lines(&source);
    let records = lines(&prepared);
    assert_eq!(s.records, originals.len());
    assert_eq!(records.len(), originals.len());
    for (orig, rec) in originals.iter().zip(&records) {
        let conv = Conversation::from_value(orig).unwrap();
        let ids = |k: &str| -> Vec<i64> {
            rec[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        };
        let prompt = decode(&tok, &ids("prompt_ids")).unwrap();
        assert_eq!(prompt, render_chat(DEFAULT_SYSTEM, &conv.user, 1));
        assert!(prompt.starts_with(IM_START));
        let response = decode(&tok, &ids("response_ids")).unwrap();
        assert_eq!(response, format!("{}{IM_END}", conv.answer));
        let img = rec["images"][0].as_str().unwrap();
        assert!(img.starts_with("../train/"), "{img}");
        assert!(prepared.parent().unwrap().join(img).is_file());
    }

    // Two training steps on all parameters.
    let out = dir.join("trained");
    let stdout = ove_train(&[
        "train",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--stage",
        configs().join("stage2.toml").to_str().unwrap(),
        "--data",
        prepared.to_str().unwrap(),
        "--steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("2 steps"), "{stdout}");
    let metrics = lines(&out.join("metrics.jsonl"));
    assert_eq!(metrics.len(), 2);
    for m in &metrics {
        let loss = m["loss"].as_f64().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{m}");
    }
    let trained = Checkpoint::open(&out).unwrap();
    assert_eq!(trained.config, opened.config);
    assert!(out.join("tokenizer.json").is_file());
}
