//! The default-OCR recipe end to end, tiny: docgen pages -> tokenizer -> init (a shrunken
//! default-ocr config) -> prepare -> stages 1, 1.5 and 2 through the `ove-train` binary; the
//! loss falls, and the final checkpoint exports (f32 and int4) to bundles that the runtime
//! runs on tract.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ove_core::prompt::{expand_image_pads, render_chat, DEFAULT_SYSTEM, IMAGE_PAD};
use ove_docgen::dataset::{write_set, Degradation, Options};
use ove_docgen::generate::Kind;
use ove_exporter::{export, ExportOptions, Int4Options};
use ove_runtime::{BackendChoice, BackendOptions, GenerateOptions, LoadOptions, Model};
use ove_train::recipe::{collect_texts, load_tokenizer, save_tokenizer, train_tokenizer};
use serde_json::Value;

mod common;
use common::ove_train;

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/default-ocr")
}

fn losses(metrics: &Path) -> Vec<f64> {
    ove_train::plot::read_metrics(metrics)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .iter()
        .map(|m| {
            assert!(m.loss.is_finite() && m.loss > 0.0, "{m:?}");
            m.loss
        })
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// A default-ocr stage TOML with a higher learning rate, a smaller batch and (stage 1.5)
/// shorter packs, so a handful of steps visibly lowers the loss.
fn stage_toml(name: &str, lr: f64) -> String {
    let src = std::fs::read_to_string(configs().join(name)).unwrap();
    let mut t: toml::Table = toml::from_str(&src).unwrap();
    let opt = t["optimizer"].as_table_mut().unwrap();
    opt.insert("lr".into(), lr.into());
    opt.insert("min_lr".into(), (lr / 2.0).into());
    opt.insert("warmup_ratio".into(), 0.0.into());
    let data = t["data"].as_table_mut().unwrap();
    data.insert("global_batch_size".into(), 4.into());
    if data.contains_key("pack_length") {
        data.insert("pack_length".into(), 512.into());
    }
    toml::to_string(&t).unwrap()
}

fn find_png(dir: &Path) -> Option<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_png(&p) {
                return Some(f);
            }
        } else if p.extension().is_some_and(|x| x == "png") {
            return Some(p);
        }
    }
    None
}

#[test]
fn three_stages_export_and_run() {
    let t0 = Instant::now();
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    // Pages.
    let data = dir.join("train");
    let opts = Options {
        kinds: vec![Kind::parse("line").unwrap()],
        seed: 5,
        degradation: Degradation::Clean,
    };
    let fonts = ove_docgen::fonts::select("dejavu").unwrap();
    write_set(&data, &fonts, &opts, 0, 6, true).unwrap();

    // Tokenizer.
    let texts = collect_texts(&[data.clone(), data.join("stage2.jsonl")]).unwrap();
    let tok = train_tokenizer(&texts, 512, 2).unwrap();
    let tok_file = dir.join("tokenizer.json");
    save_tokenizer(&tok, &tok_file).unwrap();

    // A smaller default-ocr model: 1 decoder layer, 1 vision block, hidden 64, small pages.
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(configs().join("config.json")).unwrap())
            .unwrap();
    let text = &mut cfg["text_config"];
    text["hidden_size"] = 64.into();
    text["intermediate_size"] = 128.into();
    text["num_hidden_layers"] = 1.into();
    text["num_attention_heads"] = 2.into();
    text["num_key_value_heads"] = 1.into();
    text["head_dim"] = 32.into();
    text["max_position_embeddings"] = 1024.into();
    let vision = &mut cfg["vision_config"];
    vision["depth"] = 1.into();
    vision["embed_dim"] = 48.into();
    vision["hidden_size"] = 48.into();
    vision["intermediate_size"] = 96.into();
    vision["num_heads"] = 2.into();
    vision["text_hidden_size"] = 64.into();
    std::fs::write(conf.join("config.json"), cfg.to_string()).unwrap();
    let mut pre: Value = serde_json::from_str(
        &std::fs::read_to_string(configs().join("preprocessor_config.json")).unwrap(),
    )
    .unwrap();
    pre["max_pixels"] = 50176.into();
    pre["size"]["longest_edge"] = 50176.into();
    std::fs::write(conf.join("preprocessor_config.json"), pre.to_string()).unwrap();

    let init = dir.join("ckpt/init");
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

    // Prepare.
    let captions = dir.join("data/captions.tokens.jsonl");
    let stage2 = dir.join("data/stage2.tokens.jsonl");
    for (src, out) in [("captions.jsonl", &captions), ("stage2.jsonl", &stage2)] {
        ove_train(&[
            "prepare",
            "--data",
            &s(&data.join(src)),
            "--tokenizer",
            &s(&tok_file),
            "--config",
            &s(&init),
            "--out",
            &s(out),
        ]);
    }

    // Three stages.
    let stages: [(&str, &str, f64, &Path, usize); 3] = [
        ("stage1", "stage1.toml", 1e-2, &captions, 4),
        ("stage1_5", "stage1_5.toml", 5e-3, &captions, 8),
        ("stage2", "stage2.toml", 5e-3, &stage2, 8),
    ];
    let mut from = init.clone();
    let mut all = Vec::new();
    for (name, file, lr, data, steps) in stages {
        let toml_path = dir.join(file);
        std::fs::write(&toml_path, stage_toml(file, lr)).unwrap();
        let out = dir.join("ckpt").join(name);
        ove_train(&[
            "train",
            "--checkpoint",
            &s(&from),
            "--stage",
            &s(&toml_path),
            "--data",
            &s(data),
            "--steps",
            &steps.to_string(),
            "--seed",
            "1",
            "--out",
            &s(&out),
        ]);
        let l = losses(&out.join("metrics.jsonl"));
        assert_eq!(l.len(), steps, "{name}");
        eprintln!("{name}: losses {l:.3?}");
        all.push(l);
        from = out;
    }
    let (s1, s2) = (&all[0], &all[2]);
    let first = s1[0];
    let last = *s2.last().unwrap();
    assert!(
        last < 0.8 * first,
        "the loss did not fall across the stages: stage 1 step 1 {first:.3}, stage 2 last {last:.3}"
    );
    let (head, tail) = (mean(&s2[..3]), mean(&s2[s2.len() - 3..]));
    assert!(
        tail < head,
        "the stage-2 loss did not fall: first 3 steps {head:.3}, last 3 {tail:.3}"
    );
    eprintln!("training done at {:.1} s", t0.elapsed().as_secs_f64());

    // Export (f32 and int4) and run on tract.
    let image = find_png(&data).expect("a docgen page");
    for int4 in [false, true] {
        let bundle = dir.join(if int4 { "bundle-int4" } else { "bundle-f32" });
        let mut eo = ExportOptions::new(&from, &bundle);
        if int4 {
            eo.int4 = Some(Int4Options::default());
        }
        export(&eo).unwrap_or_else(|e| panic!("export (int4 {int4}): {e:#}"));

        let lo = LoadOptions {
            backend: BackendOptions {
                choice: BackendChoice::Tract,
                threads: Some(1),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut model = Model::load(&bundle, &lo)
            .unwrap_or_else(|e| panic!("loading {}: {e:#}", bundle.display()));
        let q = &model.manifest().quantization;
        assert_eq!(q.scheme, if int4 { "int4" } else { "none" });
        assert_eq!(!q.tensors.is_empty(), int4, "{q:?}");
        let tok_path = model
            .bundle()
            .tokenizer_path()
            .unwrap()
            .expect("the bundle has a tokenizer");
        let btok = load_tokenizer(&tok_path).unwrap();
        let img = model.encode_image_file(&image).unwrap();
        let pad = i64::from(btok.token_to_id(IMAGE_PAD).unwrap());
        let text = render_chat(DEFAULT_SYSTEM, "Read the text in the image.", 1);
        let ids: Vec<i64> = btok
            .encode(text, false)
            .unwrap()
            .get_ids()
            .iter()
            .map(|&i| i64::from(i))
            .collect();
        let ids = expand_image_pads(&ids, pad, &[img.tokens]).unwrap();
        let gopts = GenerateOptions {
            max_new_tokens: 8,
            stop_at_eos: false,
            ..Default::default()
        };
        let gen = model
            .generate(&ids, &[&img], &gopts, |_| ControlFlow::Continue(()))
            .unwrap();
        let vocab = model.vocab();
        eprintln!(
            "{}: {} tokens {:?} (vocabulary {vocab})",
            bundle.file_name().unwrap().to_string_lossy(),
            gen.tokens.len(),
            gen.tokens
        );
        assert_eq!(gen.tokens.len(), 8);
        assert!(
            gen.tokens.iter().all(|&t| t >= 0 && (t as usize) < vocab),
            "{:?} outside 0..{vocab}",
            gen.tokens
        );
    }
    eprintln!("total {:.1} s", t0.elapsed().as_secs_f64());
}
