//! The runtime end to end on an exported golden bundle: refusal of damaged or hostile
//! bundles and bad inputs (each a clear error, never a panic), and generation behaviour
//! (KV-cached generation equal to the golden greedy continuation, chunked prefill,
//! streaming, eos, max_context, seeded sampling, backend selection).

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use common::*;
use ove_core::manifest::{file_entry, Manifest};
use ove_core::onnx_proto::ModelProto;
use ove_exporter::Dtype;
use ove_runtime::trace::Case;
use ove_runtime::{
    BackendChoice, BackendKind, BackendOptions, FinishReason, GenerateOptions, LoadOptions, Model,
    OrtOptions, SamplingOptions,
};

const CASE: &str = "one-image";

/// A private, writable copy of the one-image f32 bundle.
fn copy_bundle() -> (tempfile::TempDir, PathBuf) {
    copy_bundle_of(CASE)
}

fn tract_opts() -> LoadOptions {
    LoadOptions {
        backend: BackendOptions {
            choice: BackendChoice::Tract,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The full error chain of a load that must fail.
fn load_error(dir: &Path, opts: &LoadOptions) -> String {
    match Model::load(dir, opts) {
        Ok(_) => panic!("{} loaded, but it must be refused", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_contains(err: &str, needles: &[&str]) {
    for n in needles {
        assert!(err.contains(n), "error does not mention {n:?}: {err}");
    }
    eprintln!("refused as expected: {err}");
}

#[test]
fn flipped_byte_is_a_checksum_error() {
    let (_t, dir) = copy_bundle();
    let p = dir.join("decoder.onnx.data");
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&p, bytes).unwrap();
    let err = load_error(&dir, &tract_opts());
    assert_contains(&err, &["decoder.onnx.data", "sha256", "corrupt"]);
}

#[test]
fn truncated_file_is_a_size_error() {
    let (_t, dir) = copy_bundle();
    let p = dir.join("vision.onnx.data");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_error(&dir, &tract_opts());
    assert_contains(&err, &["vision.onnx.data", "size", "truncated"]);
}

#[test]
fn missing_file_is_named() {
    let (_t, dir) = copy_bundle();
    std::fs::remove_file(dir.join("embed_tokens.safetensors")).unwrap();
    let err = load_error(&dir, &tract_opts());
    assert_contains(&err, &["embed_tokens.safetensors", "missing"]);
}

#[test]
fn newer_schema_is_refused() {
    let (_t, dir) = copy_bundle();
    edit_manifest(&dir, |m| m["schema_version"] = 999.into());
    let err = load_error(&dir, &tract_opts());
    assert_contains(&err, &["newer", "999"]);
}

#[test]
fn not_a_bundle_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_error(tmp.path(), &tract_opts());
    assert_contains(&err, &["manifest.json"]);
}

/// A decoder.onnx whose first external initializer points at `../x`, re-listed in the
/// manifest with its new checksum so that only the location check can catch it.
#[test]
fn external_data_outside_the_bundle_is_refused() {
    let (_t, dir) = copy_bundle();
    let secret = dir.parent().unwrap().join("x");
    std::fs::write(&secret, vec![0u8; 1 << 16]).unwrap();
    let p = dir.join("decoder.onnx");
    let mut model = ModelProto::from_bytes(&std::fs::read(&p).unwrap()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let init = graph
        .initializer
        .iter_mut()
        .find(|t| t.external_location().unwrap().is_some())
        .expect("the exported decoder has external initializers");
    for e in &mut init.external_data {
        if e.key.as_deref() == Some("location") {
            e.value = Some("../x".into());
        }
    }
    std::fs::write(&p, model.to_bytes()).unwrap();
    let mut manifest = Manifest::read(&dir).unwrap();
    for f in &mut manifest.files {
        if f.path == "decoder.onnx" {
            *f = file_entry(&dir, "decoder.onnx").unwrap();
        }
    }
    manifest.write(&dir).unwrap();
    for opts in [tract_opts(), ort_opts()] {
        let err = load_error(&dir, &opts);
        assert_contains(&err, &["decoder.onnx", "../x", "outside the bundle"]);
    }
}

fn ort_opts() -> LoadOptions {
    LoadOptions {
        backend: BackendOptions {
            choice: BackendChoice::Ort,
            threads: None,
            ort: OrtOptions {
                library: Some(ort_library()),
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

fn case() -> Case {
    Case::load(&case_dir(CASE)).unwrap()
}

fn no_eos(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        stop_at_eos: false,
        ..Default::default()
    }
}

#[test]
fn image_count_must_match_the_image_pads() {
    let mut model = Model::load(&bundle(CASE, Dtype::F32), &tract_opts()).unwrap();
    let c = case();
    let err = model
        .generate(&c.input_ids, &[], &no_eos(2), |_| ControlFlow::Continue(()))
        .expect_err("no image for one placeholder");
    assert_contains(&format!("{err:#}"), &["1 image placeholder", "0 image(s)"]);
    let img = model.encode_image_file(&c.images[0]).unwrap();
    let err = model
        .generate(&c.input_ids, &[&img, &img], &no_eos(2), |_| {
            ControlFlow::Continue(())
        })
        .expect_err("two images for one placeholder");
    assert_contains(&format!("{err:#}"), &["2 image(s)"]);
}

#[test]
fn prompt_longer_than_max_context_is_refused() {
    let (_t, dir) = copy_bundle();
    edit_manifest(&dir, |m| m["max_context"] = 10.into());
    let mut model = Model::load(&dir, &tract_opts()).unwrap();
    let c = case();
    let img = model.encode_image_file(&c.images[0]).unwrap();
    let err = model
        .generate(&c.input_ids, &[&img], &no_eos(2), |_| {
            ControlFlow::Continue(())
        })
        .expect_err("prompt over max_context");
    assert_contains(
        &format!("{err:#}"),
        &[
            &format!("{} tokens", c.input_ids.len()),
            "max_context of 10",
        ],
    );
}

#[test]
fn generation_stops_at_max_context() {
    let (_t, dir) = copy_bundle();
    let c = case();
    let limit = c.input_ids.len() + 3;
    edit_manifest(&dir, |m| m["max_context"] = limit.into());
    let mut model = Model::load(&dir, &tract_opts()).unwrap();
    let img = model.encode_image_file(&c.images[0]).unwrap();
    let g = model
        .generate(&c.input_ids, &[&img], &no_eos(8), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(g.finish, FinishReason::MaxContext);
    assert_eq!(
        g.tokens.len(),
        4,
        "3 tokens fed back fill the context, a 4th is predicted"
    );
}

/// `Model::generate` (chunked prefill, KV cache, one step per token) reproduces the golden
/// greedy continuation on both backends.
#[test]
fn generate_with_chunked_prefill_matches_golden() {
    let want = ids("generated_ids", &expected(CASE));
    let c = case();
    let pixels = expected(CASE);
    let px = pixels["pixel_values"].to_f32();
    let grid: Vec<usize> = ids("image_grid_thw", &pixels)
        .iter()
        .map(|&x| x as usize)
        .collect();
    for opts in [tract_opts(), ort_opts()] {
        let mut model = Model::load(&bundle(CASE, Dtype::F32), &opts).unwrap();
        let img = model
            .encode_image(&px, [grid[0], grid[1], grid[2]])
            .unwrap();
        for chunk in [None, Some(5), Some(1)] {
            let mut streamed = Vec::new();
            let g = model
                .generate(
                    &c.input_ids,
                    &[&img],
                    &GenerateOptions {
                        prefill_chunk: chunk,
                        ..no_eos(want.len())
                    },
                    |t| {
                        streamed.push(t);
                        ControlFlow::Continue(())
                    },
                )
                .unwrap();
            assert_eq!(g.tokens, want, "{:?} chunk {chunk:?}", model.backend_kind());
            assert_eq!(streamed, want);
            assert_eq!(g.finish, FinishReason::MaxNewTokens);
            assert_eq!(g.decode_steps, want.len() - 1);
        }
    }
}

#[test]
fn callback_can_stop_generation() {
    let mut model = Model::load(&bundle("text-only", Dtype::F32), &tract_opts()).unwrap();
    let c = Case::load(&case_dir("text-only")).unwrap();
    let mut n = 0;
    let g = model
        .generate(&c.input_ids, &[], &no_eos(8), |_| {
            n += 1;
            if n == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(g.finish, FinishReason::Stopped);
    assert_eq!(g.tokens.len(), 3);
}

#[test]
fn generation_stops_at_an_eos_id_of_the_manifest() {
    let want = ids("generated_ids", &expected("text-only"));
    let (_t, dir) = copy_bundle_of("text-only");
    edit_manifest(&dir, |m| m["tokens"]["eos"] = serde_json::json!([want[2]]));
    let mut model = Model::load(&dir, &tract_opts()).unwrap();
    let c = Case::load(&case_dir("text-only")).unwrap();
    let mut streamed = Vec::new();
    let opts = GenerateOptions {
        max_new_tokens: 8,
        stop_at_eos: true,
        ..Default::default()
    };
    let g = model
        .generate(&c.input_ids, &[], &opts, |t| {
            streamed.push(t);
            ControlFlow::Continue(())
        })
        .unwrap();
    let first = want.iter().position(|&t| t == want[2]).unwrap();
    assert_eq!(g.finish, FinishReason::Eos);
    assert_eq!(g.tokens, want[..=first]);
    assert_eq!(
        streamed,
        want[..first],
        "the eos token itself is not streamed"
    );
    // Disabled, it runs to max_new_tokens.
    let g = model
        .generate(&c.input_ids, &[], &no_eos(8), |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(g.tokens, want);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let mut model = Model::load(&bundle("text-only", Dtype::F32), &tract_opts()).unwrap();
    let c = Case::load(&case_dir("text-only")).unwrap();
    let opts = GenerateOptions {
        sampling: SamplingOptions {
            temperature: 1.5,
            top_k: 50,
            top_p: 0.95,
            seed: Some(11),
            repetition_penalty: 1.0,
        },
        ..no_eos(8)
    };
    let a = model
        .generate(&c.input_ids, &[], &opts, |_| ControlFlow::Continue(()))
        .unwrap();
    let b = model
        .generate(&c.input_ids, &[], &opts, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.tokens.len(), 8);
}

#[test]
fn missing_ort_library_is_an_error_not_a_panic() {
    let bundle = bundle(CASE, Dtype::F32);
    let missing = PathBuf::from("/nonexistent/libonnxruntime.so");
    let opts = LoadOptions {
        backend: BackendOptions {
            choice: BackendChoice::Ort,
            threads: None,
            ort: OrtOptions {
                library: Some(missing.clone()),
                ..Default::default()
            },
        },
        ..Default::default()
    };
    let err = load_error(&bundle, &opts);
    assert_contains(&err, &["/nonexistent/libonnxruntime.so", "does not exist"]);

    // `auto` falls back to tract when the library is missing.
    let auto = LoadOptions {
        backend: BackendOptions {
            choice: BackendChoice::Auto,
            ..opts.backend.clone()
        },
        ..Default::default()
    };
    let model = Model::load(&bundle, &auto).unwrap();
    assert_eq!(model.backend_kind(), BackendKind::Tract);

    // Through ORT_DYLIB_PATH, in a child process (changing the environment of this
    // multi-threaded one would race with the other tests).
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ort_dylib_path_child",
            "--ignored",
            "--nocapture",
        ])
        .env("ORT_DYLIB_PATH", &missing)
        .env("OVE_TEST_CHILD", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {text}");
    assert!(text.contains("child saw: "), "{text}");
}

/// Run by `missing_ort_library_is_an_error_not_a_panic` with ORT_DYLIB_PATH pointing
/// nowhere. (It must not export: the parent's bundles live in this binary's scratch dir.)
#[test]
#[ignore = "run as a child process of missing_ort_library_is_an_error_not_a_panic"]
fn ort_dylib_path_child() {
    if std::env::var_os("OVE_TEST_CHILD").is_none() {
        return;
    }
    let err = ove_runtime::backend::ort::find_library(None).expect_err("must not be found");
    let err = format!("{err:#}");
    assert_contains(&err, &["ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so"]);
    eprintln!("child saw: {err}");
}

/// A word-level `tokenizer.json` covering the golden vocabulary (`w{id}` for every id),
/// with the ChatML specials at the golden case's ids.
fn golden_tokenizer_json() -> serde_json::Value {
    let specials = [
        (1644, "<|im_start|>"),
        (1645, "<|im_end|>"),
        (1652, "<|vision_start|>"),
        (1653, "<|vision_end|>"),
        (1655, "<|image_pad|>"),
    ];
    let words = [
        "system",
        "user",
        "assistant",
        "You",
        "are",
        "a",
        "helpful",
        ".",
        "Read",
        "the",
        "text",
    ];
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    for (i, w) in words.iter().enumerate() {
        vocab.insert(w.to_string(), (i + 1).into());
    }
    for id in words.len() + 1..2048 {
        if let Some((_, s)) = specials.iter().find(|(i, _)| *i == id) {
            vocab.insert(s.to_string(), id.into());
        } else {
            vocab.insert(format!("w{id}"), id.into());
        }
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .map(|(id, s)| {
            serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
}

/// Adds a tokenizer (and the ChatML ids it defines) to a copied golden bundle.
fn add_tokenizer(dir: &Path) {
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_string(&golden_tokenizer_json()).unwrap(),
    )
    .unwrap();
    let entry = file_entry(dir, "tokenizer.json").unwrap();
    edit_manifest(dir, |m| {
        m["graphs"]["tokenizer"] = "tokenizer.json".into();
        m["files"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::to_value(&entry).unwrap());
        m["tokens"]["im_start"] = 1644.into();
        m["tokens"]["im_end"] = 1645.into();
        m["tokens"]["vision_end"] = 1653.into();
        m["tokens"]["eos"] = serde_json::json!([1645]);
    });
}

/// Text prompt -> chat ids -> generation -> streamed text, as `ove run` does it.
#[test]
fn text_prompt_streams_decoded_text() {
    let (_t, dir) = copy_bundle();
    add_tokenizer(&dir);
    let mut model = Model::load(&dir, &tract_opts()).unwrap();
    let tokens = model.manifest().tokens.clone();
    let tok = model
        .bundle()
        .tokenizer_path()
        .unwrap()
        .expect("tokenizer listed");
    let prompt = ove_core::prompt::PromptBuilder::from_file(&tok, tokens.clone()).unwrap();
    let c = case();
    let img = model.encode_image_file(&c.images[0]).unwrap();
    let ids = prompt.encode("Read the text", &[img.tokens]).unwrap();
    assert_eq!(
        ids.iter().filter(|&&t| t == tokens.image_pad).count(),
        img.tokens
    );
    assert_eq!(ids[0], 1644);
    let mut stream = ove_runtime::TextStream::new(&prompt);
    let mut pieces = String::new();
    let g = model
        .generate(&ids, &[&img], &no_eos(6), |t| {
            pieces.push_str(&stream.push(t).unwrap());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(g.tokens.len(), 6);
    assert_eq!(pieces, stream.text().unwrap());
    assert_eq!(pieces, prompt.decode(&g.tokens).unwrap());
    eprintln!("streamed: {pieces:?}");
}
