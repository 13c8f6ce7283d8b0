//! int4 export (`--int4`): every golden model case exported with int4 decoder weights and
//! run on tract next to its f32 twin (logits max |diff| and top-1 agreement), the manifest's
//! quantization record, the TensorRT layout on a checkpoint whose dims divide the block, and
//! the options that are errors.
//!
//! The golden models are tiny random ones (hidden 64, MLP 160), so their logits move more
//! under int4 than a trained model's would; the bars below are set a little above what was
//! measured (figures printed with `--nocapture`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{golden, run_case};
use ove_core::manifest::Manifest;
use ove_core::onnx_proto::{data_type, ModelProto};
use ove_core::tensor_file::{read_safetensors, write_safetensors, Tensor as OveTensor};
use ove_exporter::{export, ExportOptions, Int4Options, Int4Target};
use ove_runtime::compare::{max_abs_diff, top1_agreement};

// ---- int4 ----

/// Bar on max |logit diff| int4 (sym, block 32, decoder linears) vs f32 on tract. Measured:
/// one-image 0.115, two-images 0.097, text-only 0.117, large-image 0.104.
const LOGITS_TOL: f32 = 0.15;
/// Same with asym + lm_head + vision quantized (measured 0.127 on one-image).
const LOGITS_TOL_ALL: f32 = 0.2;
/// Least fraction of prompt rows whose top-1 token agrees with the f32 bundle. The random
/// golden models have nearly flat logits (many rows win by < 0.05), so int4 flips some:
/// measured 95.2% one-image, 80.6% two-images, 80.0% text-only, 86.3% large-image, 76.2%
/// asym + lm_head + vision.
const TOP1_MIN: f64 = 0.7;

fn export_to(ck: &Path, out: &Path, int4: Option<Int4Options>) -> Manifest {
    let mut opts = ExportOptions::new(ck, out);
    opts.int4 = int4;
    export(&opts)
        .unwrap_or_else(|e| panic!("export of {} failed: {e:#}", ck.display()))
        .manifest
}

fn file_size(bundle: &Path, f: &str) -> u64 {
    std::fs::metadata(bundle.join(f)).unwrap().len()
}

fn decoder_model(bundle: &Path) -> ModelProto {
    ModelProto::from_bytes(&std::fs::read(bundle.join("decoder.onnx")).unwrap()).unwrap()
}

/// Checks the manifest's record of an int4 export made with `q`.
fn check_record(m: &Manifest, q: &Int4Options, expect_tensors: usize) {
    let r = &m.quantization;
    assert_eq!(r.scheme, "int4");
    assert_eq!(r.target.as_deref(), Some(q.target.as_str()));
    assert_eq!(r.block_size, Some(q.block_size()));
    assert_eq!(r.symmetric, Some(q.symmetric));
    assert_eq!(r.parts, q.parts());
    assert_eq!(r.tensors.len(), expect_tensors, "{:?}", r.tensors);
    for t in &r.tensors {
        assert!(
            t.format == q.target.format()
                || (q.target == Int4Target::TensorRt
                    && t.format.starts_with(ove_exporter::int4::TRT_PADDED_FORMAT)),
            "{t:?}"
        );
        assert_eq!(
            (t.bits, t.block_size, t.symmetric),
            (4, q.block_size(), q.symmetric)
        );
        assert!(
            t.rel_frobenius_error > 0.0 && t.rel_frobenius_error < 0.2,
            "{t:?}"
        );
        assert!(
            t.max_abs_error > 0.0 && t.max_abs_error.is_finite(),
            "{t:?}"
        );
    }
}

/// Decoder Linear tensors of a golden model: 7 per layer.
fn decoder_linears(m: &Manifest) -> usize {
    7 * m.model.text_config.num_hidden_layers
}

/// MatMulNBits nodes of the decoder's layers: q/k/v and gate/up are one node each over
/// their weights side by side, so 4 a layer (qkv, o, gate_up, down) for the 7 Linears.
fn decoder_matmuls(m: &Manifest) -> usize {
    4 * m.model.text_config.num_hidden_layers
}

/// Exports `case` in f32 and with `q`, runs both on tract and returns (max |diff|, top-1).
fn compare_case(case: &str, q: &Int4Options) -> (f32, f64, Manifest, Manifest, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let ck = golden(case).join("checkpoint");
    let (bf, bq) = (tmp.path().join("f32"), tmp.path().join("int4"));
    let mf = export_to(&ck, &bf, None);
    let mq = export_to(&ck, &bq, Some(q.clone()));
    let (lf, _) = run_case(case, &bf, false);
    let (lq, dq) = run_case(case, &bq, false);
    let vocab = mf.model.text_config.vocab_size;
    let diff = max_abs_diff(&lf, &lq);
    let top1 = top1_agreement(&lf, &lq, vocab);
    eprintln!(
        "{case} int4 {} block {} {}: logits max|diff| vs f32 {diff:.4}, top-1 agreement {:.1}% \
         over {} rows; vs golden {:?}; decoder.onnx.data {} B (f32 {} B)",
        q.target.as_str(),
        q.block_size(),
        if q.symmetric { "sym" } else { "asym" },
        top1 * 100.0,
        lf.len() / vocab,
        dq,
        file_size(&bq, "decoder.onnx.data"),
        file_size(&bf, "decoder.onnx.data"),
    );
    (diff, top1, mf, mq, tmp)
}

fn check_ort_case(case: &str) {
    let q = Int4Options::exact();
    let (diff, top1, mf, mq, tmp) = compare_case(case, &q);
    check_record(&mq, &q, decoder_linears(&mf));
    assert!(
        diff < LOGITS_TOL,
        "{case}: int4 logits differ from f32 by {diff}"
    );
    assert!(top1 >= TOP1_MIN, "{case}: top-1 agreement {top1}");
    // Only the decoder is quantized: vision and the embedding table are byte-identical.
    for f in ["vision.onnx.data", "embed_tokens.safetensors"] {
        assert_eq!(
            std::fs::read(tmp.path().join("f32").join(f)).unwrap(),
            std::fs::read(tmp.path().join("int4").join(f)).unwrap(),
            "{f}"
        );
    }
    // MatMulNBits nodes in the com.microsoft domain, opset 1, no float q/k/v/o/mlp weights.
    let model = decoder_model(&tmp.path().join("int4"));
    assert!(model
        .opset_import
        .iter()
        .any(|o| o.domain.as_deref() == Some("com.microsoft") && o.version == Some(1)));
    let graph = model.graph.unwrap();
    let nbits = graph
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("MatMulNBits"))
        .count();
    assert_eq!(nbits, decoder_matmuls(&mf));
    for float in [
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.gate_up_proj.weight",
        "model.layers.0.self_attn.qkv_proj.weight",
    ] {
        assert!(!graph
            .initializer
            .iter()
            .any(|t| t.name.as_deref() == Some(float)));
    }
}

#[test]
fn one_image_int4_ort_close_to_f32() {
    check_ort_case("one-image");
}

#[test]
fn two_images_int4_ort_close_to_f32() {
    check_ort_case("two-images");
}

#[test]
fn text_only_int4_ort_close_to_f32() {
    check_ort_case("text-only");
}

#[test]
fn large_image_int4_ort_close_to_f32() {
    check_ort_case("large-image");
}

/// Asymmetric, with lm_head and the vision encoder quantized too: zero points in the graph,
/// every Linear recorded, and still close to f32.
#[test]
fn asym_with_lm_head_and_vision() {
    let q = Int4Options {
        symmetric: false,
        lm_head: true,
        vision: true,
        ..Int4Options::exact()
    };
    let (diff, top1, mf, mq, tmp) = compare_case("one-image", &q);
    let v = &mf.model.vision_config;
    // Vision: patch embed + 4 per block + 2 merger; decoder: 7 per layer + lm_head.
    let expect = 1 + 4 * v.depth + 2 + decoder_linears(&mf) + 1;
    check_record(&mq, &q, expect);
    assert!(mq
        .quantization
        .tensors
        .iter()
        .any(|t| t.name == "lm_head.weight" || t.name == "model.embed_tokens.weight"));
    assert!(
        diff < LOGITS_TOL_ALL,
        "int4 logits differ from f32 by {diff}"
    );
    assert!(top1 >= TOP1_MIN, "top-1 agreement {top1}");
    let graph = decoder_model(&tmp.path().join("int4")).graph.unwrap();
    let zp = graph
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("MatMulNBits") && n.input.len() == 4)
        .count();
    assert_eq!(zp, decoder_matmuls(&mf) + 1, "zero_points inputs");
}

/// The golden MLP has K = 160 and the patch embedding K = 588, which no TensorRT block
/// size (64, 128) divides: K is zero-padded to whole blocks (weight rows and a `Pad` on the
/// activation), every Linear is quantized, and the manifest names the padding.
#[test]
fn tensorrt_pads_k_to_whole_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let q = Int4Options {
        target: Int4Target::TensorRt,
        block_size: Some(64),
        vision: true,
        ..Int4Options::exact()
    };
    let m = export_to(
        &golden("one-image").join("checkpoint"),
        &out,
        Some(q.clone()),
    );
    m.verify_files(&out).unwrap();
    let layers = m.model.text_config.num_hidden_layers;
    let vision_linears = 4 * m.model.vision_config.depth + 3;
    check_record(&m, &q, decoder_linears(&m) + vision_linears);
    let format = |name: &str| {
        m.quantization
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} not recorded"))
            .format
            .clone()
    };
    assert_eq!(
        format("model.layers.0.mlp.down_proj.weight"),
        "dequantizelinear-int4-kpad160to192"
    );
    assert_eq!(
        format("visual.patch_embed.proj.weight"),
        "dequantizelinear-int4-kpad588to640"
    );
    assert_eq!(
        format("model.layers.0.mlp.up_proj.weight"),
        "dequantizelinear-int4"
    );
    let graph = decoder_model(&out).graph.unwrap();
    let int4 = graph
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some("model.layers.0.mlp.down_proj.weight.int4"))
        .expect("INT4 initializer");
    assert_eq!(int4.dims[0], 192);
    let pads = graph
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Pad"))
        .count();
    assert_eq!(pads, layers, "one Pad per down_proj");
}

/// The golden one-image checkpoint with the text MLP cut to 128 so every decoder K divides 64.
fn divisible_checkpoint(dir: &Path) -> PathBuf {
    let src = golden("one-image").join("checkpoint");
    let ck = dir.join("ckpt128");
    std::fs::create_dir_all(&ck).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && name != "config.json" {
            std::fs::copy(e.path(), ck.join(&name)).unwrap();
        }
    }
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    let old = cfg["text_config"]["intermediate_size"].as_u64().unwrap() as usize;
    let new = 128;
    cfg["text_config"]["intermediate_size"] = new.into();
    std::fs::write(ck.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let mut w: BTreeMap<String, OveTensor> =
        read_safetensors(&src.join("model.safetensors")).unwrap();
    for (name, t) in w.iter_mut() {
        if !name.starts_with("model.layers.") {
            continue;
        }
        let (shape, data) = (t.shape().to_vec(), t.to_f32());
        if name.ends_with("gate_proj.weight") || name.ends_with("up_proj.weight") {
            assert_eq!(shape[0], old);
            *t = OveTensor::f32(vec![new, shape[1]], data[..new * shape[1]].to_vec());
        } else if name.ends_with("down_proj.weight") {
            assert_eq!(shape[1], old);
            let rows: Vec<f32> = data.chunks(old).flat_map(|r| r[..new].to_vec()).collect();
            *t = OveTensor::f32(vec![shape[0], new], rows);
        }
    }
    write_safetensors(&ck.join("model.safetensors"), &w).unwrap();
    ck
}

/// TensorRT layout: INT4 initializers [K, N], f32 scales [K/64, N], DequantizeLinear with
/// axis 0 and block_size, opset 21 in the decoder; the vision graph stays at opset 17.
#[test]
fn tensorrt_block64_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = divisible_checkpoint(tmp.path());
    let out = tmp.path().join("trt");
    let q = Int4Options {
        target: Int4Target::TensorRt,
        block_size: Some(64),
        ..Int4Options::exact()
    };
    let m = export_to(&ck, &out, Some(q.clone()));
    check_record(&m, &q, decoder_linears(&m));
    m.verify_files(&out).unwrap();
    let model = decoder_model(&out);
    let opset = |model: &ModelProto| {
        model
            .opset_import
            .iter()
            .find(|o| o.domain.as_deref().unwrap_or("").is_empty())
            .and_then(|o| o.version)
    };
    assert_eq!(opset(&model), Some(21));
    let vision = ModelProto::from_bytes(&std::fs::read(out.join("vision.onnx")).unwrap()).unwrap();
    assert_eq!(opset(&vision), Some(17));
    let graph = model.graph.unwrap();
    let int4 = graph
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some("model.layers.0.mlp.down_proj.weight.int4"))
        .expect("INT4 initializer");
    assert_eq!(int4.data_type, Some(data_type::INT4));
    assert_eq!(int4.dims, vec![128, 64]);
    let scales = graph
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some("model.layers.0.mlp.down_proj.weight.scales"))
        .unwrap();
    assert_eq!(scales.dims, vec![2, 64]);
    let dq: Vec<_> = graph
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("DequantizeLinear"))
        .collect();
    assert_eq!(dq.len(), decoder_linears(&m));
    for n in dq {
        let attr = |k: &str| {
            n.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some(k))
                .and_then(|a| a.i)
        };
        assert_eq!((attr("axis"), attr("block_size")), (Some(0), Some(64)));
    }
    // Opset 18+ ReduceMean takes its axes as an input.
    assert!(graph
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("ReduceMean"))
        .all(|n| n.input.len() == 2
            && n.attribute
                .iter()
                .all(|a| a.name.as_deref() != Some("axes"))));
    // No Pad where every K divides the block.
    assert!(!graph
        .node
        .iter()
        .any(|n| n.op_type.as_deref() == Some("Pad")));
}

#[test]
fn invalid_int4_options_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = golden("one-image").join("checkpoint");
    let cases = [
        (
            Int4Options {
                target: Int4Target::TensorRt,
                symmetric: false,
                block_size: Some(64),
                ..Int4Options::exact()
            },
            "symmetric",
        ),
        (
            Int4Options {
                target: Int4Target::TensorRt,
                block_size: Some(32),
                ..Int4Options::exact()
            },
            "64 or 128",
        ),
        (
            Int4Options {
                block_size: Some(48),
                ..Int4Options::exact()
            },
            "power of two",
        ),
        (
            Int4Options {
                accuracy_level: 5,
                ..Int4Options::exact()
            },
            "0 to 4",
        ),
        (
            Int4Options {
                target: Int4Target::TensorRt,
                block_size: Some(64),
                accuracy_level: 4,
                ..Int4Options::exact()
            },
            "--target ort only",
        ),
    ];
    for (i, (q, want)) in cases.into_iter().enumerate() {
        let mut opts = ExportOptions::new(&ck, tmp.path().join(format!("b{i}")));
        opts.int4 = Some(q);
        let err = format!("{:#}", export(&opts).unwrap_err());
        assert!(err.contains(want), "{err}");
    }
}

/// Accuracy level 4 (the `--int4` default) writes MatMulNBits' `accuracy_level` on every
/// node, lm_head's included; the exact path (0) writes none.
#[test]
fn accuracy_level_attribute() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = golden("text-only").join("checkpoint");
    let levels = |q: Int4Options, dir: &str| -> Vec<Option<i64>> {
        let out = tmp.path().join(dir);
        export_to(&ck, &out, Some(q));
        decoder_model(&out)
            .graph
            .unwrap()
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("MatMulNBits"))
            .map(|n| {
                n.attribute
                    .iter()
                    .find(|a| a.name.as_deref() == Some("accuracy_level"))
                    .and_then(|a| a.i)
            })
            .collect()
    };
    let fast = levels(Int4Options::default(), "fast");
    assert!(
        !fast.is_empty() && fast.iter().all(|l| *l == Some(4)),
        "{fast:?}"
    );
    let exact = levels(Int4Options::exact(), "exact");
    assert!(exact.iter().all(Option::is_none), "{exact:?}");
    // lm_head is the one MatMulNBits more.
    assert_eq!(fast.len(), exact.len() + 1);
}
