//! What an export writes besides the graphs (manifest, embeddings, copied files) and how it
//! fails: bad checkpoints give errors that name the problem, and a failed export leaves
//! nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ove_core::manifest::Manifest;
use ove_core::tensor_file::{read_safetensors, write_safetensors, Tensor};
use ove_exporter::{export, Dtype, ExportOptions};

fn golden_checkpoint() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/one-image/checkpoint");
    assert!(p.is_dir(), "golden case missing at {}", p.display());
    p
}

/// A writable copy of the golden checkpoint's config files (no weights).
fn config_copy(dir: &Path) -> PathBuf {
    let ck = dir.join("ckpt");
    std::fs::create_dir_all(&ck).unwrap();
    for f in [
        "config.json",
        "preprocessor_config.json",
        "generation_config.json",
    ] {
        std::fs::write(
            ck.join(f),
            std::fs::read(golden_checkpoint().join(f)).unwrap(),
        )
        .unwrap();
    }
    ck
}

/// A checkpoint whose weights are the golden ones passed through `edit`.
fn edited_checkpoint(dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) -> PathBuf {
    let ck = config_copy(dir);
    let mut w = read_safetensors(&golden_checkpoint().join("model.safetensors")).unwrap();
    edit(&mut w);
    write_safetensors(&ck.join("model.safetensors"), &w).unwrap();
    ck
}

fn export_err(ck: &Path, out: &Path) -> String {
    let err = export(&ExportOptions::new(ck, out)).expect_err("export should fail");
    format!("{err:#}")
}

/// Nothing but `keep` is left in `dir` (no half bundle, no temporary directory).
fn assert_only(dir: &Path, keep: &[&str]) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

#[test]
fn manifest_lists_every_file_and_the_config_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    let mut opts = ExportOptions::new(golden_checkpoint(), &out);
    opts.max_context = Some(1000);
    let report = export(&opts).unwrap();
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m, report.manifest);
    m.verify_files(&out).unwrap();
    let mut paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "decoder.onnx",
            "decoder.onnx.data",
            "decoder_ort.onnx",
            "embed_tokens.safetensors",
            "generation_config.json",
            "preprocessor_config.json",
            "vision.onnx",
            "vision.onnx.data"
        ]
    );
    // Every file of the directory is listed, and only the manifest is not.
    let on_disk = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(on_disk, paths.len() + 1);
    assert_eq!(m.dtype, "f32");
    assert_eq!(m.max_context, 1000);
    assert_eq!(m.quantization.scheme, "none");
    assert_eq!(m.tokens.image_pad, 1655);
    assert_eq!(m.tokens.vision_start, Some(1652));
    assert_eq!(report.bytes, m.files.iter().map(|f| f.bytes).sum::<u64>());
    // The preprocessor config is copied verbatim.
    assert_eq!(
        std::fs::read(out.join("preprocessor_config.json")).unwrap(),
        std::fs::read(golden_checkpoint().join("preprocessor_config.json")).unwrap()
    );
    // The embedding table is the checkpoint's.
    let table = read_safetensors(&out.join("embed_tokens.safetensors")).unwrap();
    let ck = read_safetensors(&golden_checkpoint().join("model.safetensors")).unwrap();
    assert_eq!(table["embed_tokens"], ck["model.embed_tokens.weight"]);
    // Default max context: text_config.max_position_embeddings.
    let out2 = tmp.path().join("bundle2");
    let m2 = export(&ExportOptions::new(golden_checkpoint(), &out2))
        .unwrap()
        .manifest;
    assert_eq!(m2.max_context, m2.model.text_config.max_position_embeddings);
}

/// decoder_ort.onnx is ONNX Runtime's fused form of decoder.onnx over the same weight
/// bytes: every initializer it keeps outside the graph is decoder.onnx's, at the same place
/// in decoder.onnx.data (int4 ones too: they are not quantized again), and it has no data
/// file of its own. `--no-ort-decoder` leaves it out, and the bundle is schema 4 again.
#[test]
fn the_ort_decoder_shares_every_weight_of_decoder_onnx() {
    use ove_core::onnx_proto::ModelProto;
    use std::collections::HashMap;
    let tmp = tempfile::tempdir().unwrap();
    let read = |p: PathBuf| ModelProto::from_bytes(&std::fs::read(p).unwrap()).unwrap();
    for (dir, int4) in [
        ("f32", None),
        ("int4", Some(ove_exporter::Int4Options::default())),
    ] {
        let out = tmp.path().join(dir);
        let mut opts = ExportOptions::new(golden_checkpoint(), &out);
        opts.int4 = int4;
        let m = export(&opts).unwrap().manifest;
        assert_eq!(m.graphs.decoder_ort.as_deref(), Some("decoder_ort.onnx"));
        assert_eq!(m.schema_version, 5);
        assert!(!out.join("decoder_ort.onnx.data").exists());
        let places = |model: &ModelProto| -> HashMap<String, (String, u64)> {
            model
                .graph
                .as_ref()
                .unwrap()
                .initializer
                .iter()
                .filter_map(|t| {
                    let loc = t.external_location().unwrap()?;
                    Some((t.name.clone().unwrap(), (loc.location, loc.offset)))
                })
                .collect()
        };
        let portable = read(out.join("decoder.onnx"));
        let fused = read(out.join("decoder_ort.onnx"));
        let (a, b) = (places(&portable), places(&fused));
        assert!(!b.is_empty());
        for (name, place) in &b {
            assert_eq!(a.get(name), Some(place), "{dir}: {name}");
        }
        // Every weight matrix is shared (the small norm vectors may be inline).
        let weights = |p: &HashMap<String, (String, u64)>| {
            p.keys()
                .filter(|n| n.contains("proj") || n.contains("embed_tokens"))
                .count()
        };
        assert_eq!(weights(&a), weights(&b), "{dir}");
        let ops: Vec<&str> = fused
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .filter_map(|n| n.op_type.as_deref())
            .collect();
        for op in [
            "GroupQueryAttention",
            "RotaryEmbedding",
            "SkipSimplifiedLayerNormalization",
            "SimplifiedLayerNormalization",
        ] {
            assert!(ops.contains(&op), "{dir}: no {op}");
        }
        assert!(!ops.contains(&"Softmax"), "{dir}: attention left unfused");
    }
    let out = tmp.path().join("portable-only");
    let mut opts = ExportOptions::new(golden_checkpoint(), &out);
    opts.ort_decoder = false;
    let m = export(&opts).unwrap().manifest;
    assert_eq!(m.graphs.decoder_ort, None);
    assert_eq!(m.schema_version, 4);
    assert!(!out.join("decoder_ort.onnx").exists());
}

#[test]
fn external_data_is_aligned_and_inside_the_bundle() {
    use ove_core::onnx_proto::ModelProto;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    export(&ExportOptions::new(golden_checkpoint(), &out)).unwrap();
    for graph in ["vision.onnx", "decoder.onnx"] {
        let model = ModelProto::from_bytes(&std::fs::read(out.join(graph)).unwrap()).unwrap();
        let data_len = std::fs::metadata(out.join(format!("{graph}.data")))
            .unwrap()
            .len();
        let mut external = 0;
        for t in &model.graph.as_ref().unwrap().initializer {
            if let Some(loc) = t.external_location().unwrap() {
                external += 1;
                assert_eq!(loc.location, format!("{graph}.data"));
                assert_eq!(loc.offset % 64, 0, "{:?}", t.name);
                assert!(loc.offset + loc.length.unwrap() <= data_len);
            }
        }
        assert!(external > 0, "{graph} has no external initializers");
        assert_eq!(model.opset_import[0].version, Some(17));
        assert_eq!(model.ir_version, Some(8));
    }
}

#[test]
fn special_tokens_come_from_tokenizer_and_generation_config() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = config_copy(tmp.path());
    std::fs::copy(
        golden_checkpoint().join("model.safetensors"),
        ck.join("model.safetensors"),
    )
    .unwrap();
    let tokenizer = serde_json::json!({
        "added_tokens": [
            {"id": 1643, "content": "<|endoftext|>"},
            {"id": 1644, "content": "<|im_start|>"},
            {"id": 1645, "content": "<|im_end|>"},
            {"id": 1652, "content": "<|vision_start|>"},
            {"id": 1653, "content": "<|vision_end|>"},
        ]
    });
    // Without the image pad the tokenizer cannot write image prompts: refused, naming it.
    std::fs::write(ck.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let err = export_err(&ck, &tmp.path().join("bundle"));
    assert!(err.contains("<|image_pad|>"), "{err}");
    let mut tokenizer = tokenizer;
    tokenizer["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"id": 1655, "content": "<|image_pad|>"}));
    std::fs::write(ck.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    std::fs::write(
        ck.join("generation_config.json"),
        r#"{"eos_token_id": [1645, 1643]}"#,
    )
    .unwrap();
    let out = tmp.path().join("bundle");
    let m = export(&ExportOptions::new(&ck, &out)).unwrap().manifest;
    assert_eq!(m.tokens.im_start, Some(1644));
    assert_eq!(m.tokens.im_end, Some(1645));
    assert_eq!(m.tokens.vision_end, Some(1653));
    assert_eq!(m.tokens.eos, vec![1645, 1643]);
    assert_eq!(m.graphs.tokenizer.as_deref(), Some("tokenizer.json"));
    m.verify_files(&out).unwrap();
}

#[test]
fn truncated_checkpoint_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = config_copy(tmp.path());
    let bytes = std::fs::read(golden_checkpoint().join("model.safetensors")).unwrap();
    std::fs::write(ck.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let out = tmp.path().join("bundle");
    let err = export_err(&ck, &out);
    assert!(err.contains("model.safetensors"), "{err}");
    assert_only(tmp.path(), &["ckpt"]);
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = edited_checkpoint(tmp.path(), |w| {
        w.remove("model.layers.1.mlp.up_proj.weight").unwrap();
    });
    let err = export_err(&ck, &tmp.path().join("bundle"));
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
    assert!(err.contains("ckpt"), "{err}");
    // The vision graph had been written when the decoder failed: nothing is left.
    assert_only(tmp.path(), &["ckpt"]);
}

#[test]
fn unused_tensor_is_named_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = edited_checkpoint(tmp.path(), |w| {
        w.insert(
            "model.layers.0.mlp.extra_proj.weight".into(),
            Tensor::f32(vec![2, 2], vec![0.0; 4]),
        );
    });
    let out = tmp.path().join("bundle");
    let err = export_err(&ck, &out);
    assert!(
        err.contains("model.layers.0.mlp.extra_proj.weight"),
        "{err}"
    );
    assert!(err.contains("--allow-unused-tensors"), "{err}");
    assert_only(tmp.path(), &["ckpt"]);

    let mut opts = ExportOptions::new(&ck, &out);
    opts.allow_unused_tensors = true;
    let report = export(&opts).expect("allowed: the extra tensor is left out");
    let plain = export(&ExportOptions::new(
        golden_checkpoint(),
        tmp.path().join("plain"),
    ))
    .unwrap();
    assert_eq!(
        report.tensors, plain.tensors,
        "the model's tensors, not the extra one"
    );
    // The same graphs and embeddings as the golden checkpoint's own (whose copied files,
    // a tokenizer among them, differ from this copy's).
    let weights_files = |m: &Manifest| {
        m.files
            .iter()
            .filter(|f| {
                f.path.ends_with(".onnx")
                    || f.path.ends_with(".data")
                    || f.path.ends_with(".safetensors")
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        weights_files(&report.manifest),
        weights_files(&plain.manifest)
    );
}

#[test]
fn wrong_shape_names_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = edited_checkpoint(tmp.path(), |w| {
        w.insert(
            "visual.blocks.0.mlp.fc1.weight".into(),
            Tensor::f32(vec![64, 128], vec![0.0; 64 * 128]),
        );
    });
    let err = export_err(&ck, &tmp.path().join("bundle"));
    assert!(err.contains("visual.blocks.0.mlp.fc1.weight"), "{err}");
    assert!(
        err.contains("[64, 128]") && err.contains("[128, 64]"),
        "{err}"
    );
}

#[test]
fn unsupported_dtype_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = edited_checkpoint(tmp.path(), |w| {
        w.insert(
            "model.norm.weight".into(),
            Tensor::i64(vec![64], vec![1; 64]),
        );
    });
    let err = export_err(&ck, &tmp.path().join("bundle"));
    assert!(
        err.contains("model.norm.weight") && err.contains("dtype"),
        "{err}"
    );
}

#[test]
fn existing_output_needs_force_and_must_be_a_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bundle");
    // An existing empty directory is fine.
    std::fs::create_dir(&out).unwrap();
    export(&ExportOptions::new(golden_checkpoint(), &out)).unwrap();
    // A bundle is not replaced without --force...
    let err = export_err(&golden_checkpoint(), &out);
    assert!(err.contains("--force"), "{err}");
    // ...and is with it, f16 this time.
    let mut opts = ExportOptions::new(golden_checkpoint(), &out);
    opts.force = true;
    opts.dtype = Dtype::F16;
    export(&opts).unwrap();
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.dtype, "f16");
    m.verify_files(&out).unwrap();
    // A non-empty directory that is not a bundle is never deleted.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("precious.txt"), b"x").unwrap();
    let mut opts = ExportOptions::new(golden_checkpoint(), &other);
    opts.force = true;
    let err = format!("{:#}", export(&opts).unwrap_err());
    assert!(err.contains("not a bundle"), "{err}");
    assert!(other.join("precious.txt").is_file());
    assert_only(tmp.path(), &["bundle", "other"]);
}

/// The released checkpoints are bf16: they export (to f32 weights) and still run.
#[test]
fn bf16_checkpoint_exports() {
    use safetensors::tensor::TensorView;
    let tmp = tempfile::tempdir().unwrap();
    let ck = config_copy(tmp.path());
    let w = read_safetensors(&golden_checkpoint().join("model.safetensors")).unwrap();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(n, t)| {
            let b = t
                .to_f32()
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                .collect();
            (n.clone(), t.shape().to_vec(), b)
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(safetensors::Dtype::BF16, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &ck.join("model.safetensors")).unwrap();
    let out = tmp.path().join("bundle");
    export(&ExportOptions::new(&ck, &out)).unwrap();
    let table = read_safetensors(&out.join("embed_tokens.safetensors")).unwrap();
    let want: Vec<f32> = w["model.embed_tokens.weight"]
        .to_f32()
        .iter()
        .map(|x| half::bf16::from_f32(*x).to_f32())
        .collect();
    assert_eq!(table["embed_tokens"].to_f32(), want);
}

/// A checkpoint whose config.json has `section.hidden_act = act` (golden weights).
fn checkpoint_with_act(dir: &Path, section: &str, act: &str) -> PathBuf {
    let ck = edited_checkpoint(dir, |_| {});
    let path = ck.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg[section]["hidden_act"] = serde_json::Value::String(act.into());
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    ck
}

#[test]
fn unknown_activation_is_refused_with_its_field() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoint_with_act(tmp.path(), "text_config", "relu");
    let err = export_err(&ck, &tmp.path().join("bundle"));
    assert!(err.contains("text_config.hidden_act"), "{err}");
    assert!(err.contains("\"relu\""), "{err}");
    assert_only(tmp.path(), &["ckpt"]);
}

#[test]
fn the_configured_activation_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let graph = |act: &str| {
        let dir = tmp.path().join(act);
        std::fs::create_dir_all(&dir).unwrap();
        let ck = checkpoint_with_act(&dir, "vision_config", act);
        let out = dir.join("bundle");
        export(&ExportOptions::new(&ck, &out)).unwrap();
        std::fs::read(out.join("vision.onnx")).unwrap()
    };
    let (erf, tanh) = (graph("gelu"), graph("gelu_pytorch_tanh"));
    let has = |g: &[u8], op: &[u8]| g.windows(op.len()).any(|w| w == op);
    assert!(has(&erf, b"Erf") && !has(&erf, b"Tanh"));
    assert!(
        has(&tanh, b"Tanh"),
        "gelu_pytorch_tanh exported without a Tanh node"
    );
}
