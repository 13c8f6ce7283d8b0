//! The CTC line reader end to end, tiny: docgen lines -> `ove-train ctc` (the loss falls,
//! held-out CER is logged) -> `ove export --ctc-head --reads lines` -> the runtime on
//! tract reads the same crops with the same head: its vision tokens match the trainer's
//! and its text is what the head gives on them.

use std::path::{Path, PathBuf};

use ove_core::ctc::{CtcHead as CoreHead, CTC_HEAD_FILE};
use ove_core::manifest::{LineReader, PageReading, Reading};
use ove_core::preprocess::preprocess;
use ove_core::preprocess::{line_crop, load_rgb, DecodeOptions};
use ove_core::prompt::PromptBuilder;
use ove_docgen::dataset::{write_set, Degradation, Options};
use ove_docgen::generate::Kind;
use ove_exporter::{export, ExportOptions};
use ove_runtime::line_batch::encode_lines;
use ove_runtime::read::{
    encode_rgb, read_line_ctc, read_lines_ctc, read_lines_decoder, MAX_LINE_BATCH,
};
use ove_runtime::{BackendChoice, BackendOptions, GenerateOptions, LoadOptions, Model};
use ove_train::ctc::HeadStore;
use ove_train::recipe::{collect_texts, save_tokenizer, train_tokenizer};
use ove_train::train::lines::{line_batch, read_lines, Reshape};
use serde_json::Value;
use tch::{Device, Tensor};

mod common;
use common::ove_train;

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/default-ocr")
}

fn jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ctc_training_export_and_runtime_agree() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    let data = dir.join("lines");
    let opts = Options {
        kinds: vec![Kind::parse("word").unwrap()],
        seed: 7,
        degradation: Degradation::Clean,
    };
    let fonts = ove_docgen::fonts::select("dejavu").unwrap();
    write_set(&data, &fonts, &opts, 0, 6, true).unwrap();
    let texts = collect_texts(&[data.clone(), data.join("stage2.jsonl")]).unwrap();
    let tok_file = dir.join("tokenizer.json");
    save_tokenizer(&train_tokenizer(&texts, 300, 2).unwrap(), &tok_file).unwrap();

    // A tiny default-ocr model: one vision block of width 32.
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(configs().join("config.json")).unwrap())
            .unwrap();
    let text = &mut cfg["text_config"];
    text["hidden_size"] = 32.into();
    text["intermediate_size"] = 64.into();
    text["num_hidden_layers"] = 1.into();
    text["num_attention_heads"] = 2.into();
    text["num_key_value_heads"] = 1.into();
    text["head_dim"] = 16.into();
    let vision = &mut cfg["vision_config"];
    vision["depth"] = 1.into();
    vision["embed_dim"] = 32.into();
    vision["hidden_size"] = 32.into();
    vision["intermediate_size"] = 64.into();
    vision["num_heads"] = 2.into();
    vision["text_hidden_size"] = 32.into();
    std::fs::write(conf.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        configs().join("preprocessor_config.json"),
        conf.join("preprocessor_config.json"),
    )
    .unwrap();
    let init = dir.join("init");
    ove_train(&[
        "init",
        "--config",
        &s(&conf.join("config.json")),
        "--tokenizer",
        &s(&tok_file),
        "--out",
        &s(&init),
        "--seed",
        "1",
    ]);

    let ckpt = dir.join("ctc");
    ove_train(&[
        "ctc",
        "--checkpoint",
        &s(&init),
        "--data",
        &s(&data),
        "--eval-data",
        &s(&data),
        "--steps",
        "40",
        "--batch",
        "6",
        "--lr",
        "1e-2",
        "--line-height",
        "20",
        "--eval-every",
        "20",
        "--out",
        &s(&ckpt),
    ]);
    let m = jsonl(&ckpt.join("metrics.jsonl"));
    assert_eq!(m.len(), 40);
    let loss = |i: usize| m[i]["loss"].as_f64().unwrap();
    let (first, last) = (loss(0), (35..40).map(loss).sum::<f64>() / 5.0);
    assert!(
        last < 0.7 * first,
        "the CTC loss did not fall: {first:.3} -> {last:.3}"
    );
    let ev = jsonl(&ckpt.join("eval.jsonl"));
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(ev.iter().all(|e| e["cer"].as_f64().is_some()));
    assert!(ckpt.join(CTC_HEAD_FILE).is_file());
    assert!(
        !std::fs::read_to_string(ckpt.join("model.safetensors.index.json"))
            .is_ok_and(|t| t.contains("ctc")),
        "the head must stay out of the checkpoint's weights"
    );

    // Without --ctc-head a CTC reader is refused; with it the bundle carries the head.
    let bundle = dir.join("bundle");
    let mut eo = ExportOptions::new(&ckpt, &bundle);
    eo.reading = Reading {
        layout: PageReading::Lines,
        line_height: Some(20),
        reader: LineReader::Ctc,
    };
    let err = export(&eo).unwrap_err();
    assert!(format!("{err:#}").contains("--ctc-head"), "{err:#}");
    eo.ctc_head = true;
    let report = export(&eo).unwrap_or_else(|e| panic!("export: {e:#}"));
    // The head comes with the batched line encoder (schema 3; 5 for the fused ONNX Runtime
    // decoder every new bundle has), which stores no weight of its own: its initializers
    // point into vision.onnx.data.
    assert_eq!(report.manifest.schema_version, 5);
    assert_eq!(
        report.manifest.graphs.ctc_head.as_deref(),
        Some(CTC_HEAD_FILE)
    );
    assert_eq!(report.manifest.graphs.lines.as_deref(), Some("lines.onnx"));
    assert!(!bundle.join("lines.onnx.data").exists());

    // The trainer's reading of the lines (no jitter).
    let heads = HeadStore::open_or_new(&ckpt, Device::Cpu, 32, 2, 4).unwrap();
    let loaded = ove_train::load_model(&ckpt, Device::Cpu).unwrap();
    let pre = loaded.checkpoint.preprocessor.clone().unwrap();
    let items = read_lines(std::slice::from_ref(&data)).unwrap();
    let refs: Vec<_> = items.iter().collect();
    let batch = line_batch(&refs, 20, &pre, Reshape::default(), None);
    assert!(batch.skipped.is_empty(), "{:?}", batch.skipped);
    let pixels = Tensor::from_slice(&batch.pixel_values).reshape([-1, 588]);
    let groups = vec![1; batch.grids.len()];
    let tokens = tch::no_grad(|| {
        loaded
            .model
            .visual
            .forward_grouped(&pixels, &batch.grids, &groups)
            .unwrap()
    });
    let trained = heads.head.greedy(&tokens, &batch.grids).unwrap();
    let core = CoreHead::load(&bundle.join(CTC_HEAD_FILE)).unwrap();
    assert_eq!(
        core.weight,
        heads.head.to_core().weight,
        "the bundle's head is the trained one"
    );

    // The runtime, on the same crops.
    let lo = LoadOptions {
        backend: BackendOptions {
            choice: BackendChoice::Tract,
            threads: Some(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut model = Model::load(&bundle, &lo).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(model.ctc_head().is_some());
    let flat: Vec<f32> = Vec::try_from(&tokens.reshape([-1])).unwrap();
    let mut at = 0;
    let mut crops = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let page = load_rgb(&item.image, &DecodeOptions::default()).unwrap();
        let crop = line_crop(&page, item.bbox, Some(20));
        let enc = encode_rgb(&mut model, &crop).unwrap();
        assert_eq!(enc.grid_thw, batch.grids[i]);
        let theirs = &flat[at..at + enc.vision_tokens.len()];
        at += enc.vision_tokens.len();
        let diff = enc
            .vision_tokens
            .iter()
            .zip(theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "line {i}: vision tokens differ by {diff}");
        // The runtime's text is the head's reading of its own tokens, and (the tokens
        // being equal to 1e-3) the trainer's reading of the same line.
        let read = read_line_ctc(&mut model, &crop).unwrap();
        let own = core.read(&enc.vision_tokens, enc.grid_thw, 2).unwrap();
        assert_eq!(read, own.trim());
        assert_eq!(
            read,
            trained[i].trim(),
            "line {i}: runtime and trainer read differently"
        );
        eprintln!(
            "line {i}: {:?} trainer {:?} runtime {read:?}",
            item.text, trained[i]
        );
        crops.push((crop, enc.vision_tokens));
    }

    // All lines in one lines.onnx call read as they do one by one through vision.onnx.
    assert!(model.bundle().lines().is_some());
    let pre: Vec<_> = crops
        .iter()
        .map(|(c, _)| preprocess(c, &model.manifest().preprocessor).unwrap())
        .collect();
    // One batch, and one that pads: the lines differ in length.
    assert!(
        pre.len() > 1 && pre.len() <= MAX_LINE_BATCH,
        "{} lines",
        pre.len()
    );
    let lengths: std::collections::BTreeSet<usize> = pre.iter().map(|p| p.num_patches()).collect();
    assert!(
        lengths.len() > 1,
        "every line has {lengths:?} patches: nothing is padded"
    );
    let batched = encode_lines(&mut model, &pre, MAX_LINE_BATCH).unwrap();
    for (i, ((_, alone), b)) in crops.iter().zip(&batched).enumerate() {
        assert_eq!(alone.len(), b.len(), "line {i}");
        let diff = alone
            .iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "line {i}: batched tokens differ by {diff}");
    }
    let images: Vec<_> = crops.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(
        read_lines_ctc(&mut model, images.clone(), MAX_LINE_BATCH).unwrap(),
        read_lines_ctc(&mut model, images.clone(), 1).unwrap()
    );

    // The decoder reader (this decoder is untrained: what it says does not matter, only
    // that the lines decoded together say what each says alone, padding and all).
    assert_eq!(model.max_decoder_rows(), ove_runtime::kv::MAX_DECODER_ROWS);
    let tok = model.bundle().tokenizer_path().unwrap().expect("tokenizer");
    let prompt = PromptBuilder::from_file(&tok, model.manifest().tokens.clone()).unwrap();
    let gen = GenerateOptions {
        max_new_tokens: 6,
        ..Default::default()
    };
    let read = |model: &mut Model, batch| {
        read_lines_decoder(
            model,
            &prompt,
            "Read the text.",
            images.clone(),
            batch,
            &gen,
        )
        .unwrap()
        .into_iter()
        .map(|(text, g)| (text, g.tokens, g.finish))
        .collect::<Vec<_>>()
    };
    let together = read(&mut model, MAX_LINE_BATCH);
    assert_eq!(together.len(), images.len());
    assert_eq!(together, read(&mut model, 1));
}
