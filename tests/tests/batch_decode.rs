//! Several prompts decoded together (`Model::generate_batch` on the batched decoder graph,
//! bundle schema 4) generate what each prompt generates alone, on both backends: prompts
//! of different lengths (so rows are padded), with and without an image, a row repeated,
//! rows that stop at different steps (the context bound), and chunked prefill, f32 and
//! int4 (the deployed form). At batch 1 the golden continuation itself.

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use common::*;
use ove_exporter::{export, Dtype, ExportOptions, Int4Options};
use ove_runtime::trace::Case;
use ove_runtime::{
    BackendChoice, BatchPrompt, BatchRequest, EncodedImage, FinishReason, GenerateOptions,
    Generation, Model,
};

const CASE: &str = "one-image";

fn no_eos(max_new_tokens: usize, prefill_chunk: Option<usize>) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        stop_at_eos: false,
        prefill_chunk,
        ..Default::default()
    }
}

/// The case's prompt, a shorter one with the same image, its text part alone (no image)
/// and the first again: lengths 21, 18, 7 and 21.
fn prompts(c: &Case, image_pad: i64) -> Vec<(Vec<i64>, bool)> {
    let ids = &c.input_ids;
    let end = ids.len();
    // The image's pads end with vision_end; the text part follows it.
    let pads_end = ids
        .iter()
        .rposition(|&t| t == image_pad)
        .expect("image pads")
        + 1;
    vec![
        (ids.clone(), true),
        (ids[..end - 3].to_vec(), true),
        (ids[pads_end + 1..].to_vec(), false),
        (ids.clone(), true),
    ]
}

fn alone(
    model: &mut Model,
    prompts: &[(Vec<i64>, bool)],
    img: &EncodedImage,
    opts: &GenerateOptions,
) -> Vec<Generation> {
    prompts
        .iter()
        .map(|(ids, with_image)| {
            let images: &[&EncodedImage] = if *with_image { &[img] } else { &[] };
            model
                .generate(ids, images, opts, |_| ControlFlow::Continue(()))
                .unwrap()
        })
        .collect()
}

fn together(
    model: &mut Model,
    prompts: &[(Vec<i64>, bool)],
    img: &EncodedImage,
    opts: &GenerateOptions,
) -> Vec<Generation> {
    let one = [img];
    let batch: Vec<BatchPrompt<'_>> = prompts
        .iter()
        .map(|(ids, with_image)| BatchPrompt {
            ids,
            images: if *with_image { &one } else { &[] },
        })
        .collect();
    model.generate_batch(&batch, opts).unwrap()
}

fn assert_same(a: &[Generation], b: &[Generation], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.tokens, y.tokens, "{what}: row {i}");
        assert_eq!(x.finish, y.finish, "{what}: row {i}");
        assert_eq!(x.decode_steps, y.decode_steps, "{what}: row {i}");
        assert_eq!(x.prompt_tokens, y.prompt_tokens, "{what}: row {i}");
    }
}

/// Rows decoded together per engine: `(tract, ort)`.
fn check(dir: &Path, max_new_tokens: usize, rows: (usize, usize)) -> Vec<Vec<Generation>> {
    let c = Case::load(&case_dir(CASE)).unwrap();
    let mut runs = Vec::new();
    for (choice, rows) in [(BackendChoice::Tract, rows.0), (BackendChoice::Ort, rows.1)] {
        let mut model = load(dir, choice);
        if choice == BackendChoice::Ort {
            // decoder_ort.onnx, its cache in place; a prefill chunk of several slots in
            // several rows goes row by row (ove_runtime::backend::ort_kv).
            let d = model.describe_backend();
            assert!(d.contains("fused decoder"), "{d}");
        }
        let prompts = prompts(&c, model.manifest().tokens.image_pad);
        assert_eq!(model.max_decoder_rows(), rows, "{choice:?}");
        let img = model.encode_image_file(&c.images[0]).unwrap();
        let want = alone(&mut model, &prompts, &img, &no_eos(max_new_tokens, None));
        for chunk in [None, Some(9)] {
            let got = together(&mut model, &prompts, &img, &no_eos(max_new_tokens, chunk));
            assert_same(&got, &want, &format!("{choice:?}, prefill chunk {chunk:?}"));
        }
        runs.push(want);
    }
    runs
}

#[test]
fn a_batch_generates_what_each_prompt_generates_alone() {
    let golden = ids("generated_ids", &expected(CASE));
    let all = ove_runtime::kv::MAX_DECODER_ROWS;
    let runs = check(&bundle(CASE, Dtype::F32), golden.len(), (all, all));
    for run in &runs {
        // The first row is the golden prompt: its continuation is the reference's.
        assert_eq!(run[0].tokens, golden);
        assert!(run.iter().all(|g| g.finish == FinishReason::MaxNewTokens));
    }
}

#[test]
fn int4_rows_decode_together_as_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("int4");
    let mut opts = ExportOptions::new(case_dir(CASE).join("checkpoint"), &dir);
    // lm_head too: every decoder matmul is int4 (tract's Q4_0 kernels).
    opts.int4 = Some(Int4Options {
        lm_head: true,
        ..Default::default()
    });
    export(&opts).unwrap_or_else(|e| panic!("int4 export: {e:#}"));
    // tract decodes an int4 decoder one row at a time (its Q4_0 matmul is wrong on B*S
    // rows: runtime/src/backend/tract.rs), ONNX Runtime all rows together.
    let runs = check(&dir, 8, (1, ove_runtime::kv::MAX_DECODER_ROWS));
    assert_eq!(runs[0].len(), runs[1].len());
}

/// decoder_ort.onnx with an f16 cache: rows together decode as alone, the chunked
/// prefill's row-by-row path included (its copies move f16 slots).
#[test]
fn f16_kv_cache_rows_decode_together_as_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("f16-kv");
    let mut opts = ExportOptions::new(case_dir(CASE).join("checkpoint"), &dir);
    opts.ort_kv_f16 = true;
    export(&opts).unwrap_or_else(|e| panic!("f16 KV export: {e:#}"));
    let all = ove_runtime::kv::MAX_DECODER_ROWS;
    check(&dir, 8, (all, all));
}

#[test]
fn rows_that_reach_the_context_bound_stop_alone() {
    let (_tmp, dir) = copy_bundle_of(CASE);
    // 24 tokens: the 21-token rows stop after 4 tokens, the 18-token row after 7, the
    // 7-token row runs its 12.
    edit_manifest(&dir, |m| m["max_context"] = 24.into());
    let all = ove_runtime::kv::MAX_DECODER_ROWS;
    for run in check(&dir, 12, (all, all)) {
        let lens: Vec<usize> = run.iter().map(|g| g.tokens.len()).collect();
        assert_eq!(lens, [4, 7, 12, 4]);
        assert_eq!(run[0].finish, FinishReason::MaxContext);
        assert_eq!(run[2].finish, FinishReason::MaxNewTokens);
    }
}

/// The built-in model's rows decode as they would one at a time, whatever number of rows
/// each backend takes in one decoder call: ORT takes [`ove_runtime::kv::MAX_DECODER_ROWS`]
/// since the model is schema 5 (batched decoder graph); tract takes one, because the
/// model's decoder matmuls are int4 `MatMulNBits`, which tract 0.23.9 computes wrongly for
/// more than one row (so it plans them for one).
#[test]
fn the_built_in_models_rows_decode_as_alone_on_both_backends() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default-ocr");
    let prompts: Vec<(Vec<i64>, bool)> =
        vec![((20..32).collect(), false), ((40..45).collect(), false)];
    for choice in [BackendChoice::Tract, BackendChoice::Ort] {
        let mut model = load(&dir, choice);
        let m = model.manifest();
        let batched = m.graphs.decoder_batch;
        assert_eq!(batched, m.schema_version >= 4);
        let int4 = m.quantization.scheme == "int4";
        let rows = match choice {
            BackendChoice::Tract if int4 => 1,
            _ if batched => ove_runtime::kv::MAX_DECODER_ROWS,
            _ => 1,
        };
        assert_eq!(model.max_decoder_rows(), rows, "{choice:?}");
        let opts = no_eos(4, None);
        let ids: Vec<BatchPrompt<'_>> = prompts
            .iter()
            .map(|(ids, _)| BatchPrompt { ids, images: &[] })
            .collect();
        let together = model.generate_batch(&ids, &opts).unwrap();
        let alone: Vec<Generation> = prompts
            .iter()
            .map(|(ids, _)| {
                model
                    .generate(ids, &[], &opts, |_| ControlFlow::Continue(()))
                    .unwrap()
            })
            .collect();
        assert_same(&together, &alone, &format!("{choice:?}"));
    }
}

/// Rows under their own options (as `ove serve` batches requests) decode as each would
/// alone: different lengths and sampling per row, one row stopped by the callback after
/// three tokens, and every token passed to the callback with its row.
#[test]
fn rows_with_their_own_options_and_a_stopped_row_decode_as_alone() {
    let c = Case::load(&case_dir(CASE)).unwrap();
    let dir = bundle(CASE, Dtype::F32);
    for choice in [BackendChoice::Tract, BackendChoice::Ort] {
        let mut model = load(&dir, choice);
        let prompts = prompts(&c, model.manifest().tokens.image_pad);
        let img = model.encode_image_file(&c.images[0]).unwrap();
        let mut sampled = no_eos(6, None);
        sampled.sampling.temperature = 0.8;
        sampled.sampling.seed = Some(7);
        let opts = [no_eos(5, None), sampled, no_eos(9, None), no_eos(8, None)];
        // Row 3 is stopped by its callback after its third token.
        let stop_row = 3;
        let alone: Vec<Generation> = prompts
            .iter()
            .zip(&opts)
            .enumerate()
            .map(|(r, ((ids, with_image), o))| {
                let images: &[&EncodedImage] = if *with_image { &[&img] } else { &[] };
                let mut n = 0;
                model
                    .generate(ids, images, o, |_| {
                        n += 1;
                        if r == stop_row && n == 3 {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    })
                    .unwrap()
            })
            .collect();
        let one = [&img];
        let reqs: Vec<BatchRequest<'_>> = prompts
            .iter()
            .zip(&opts)
            .map(|((ids, with_image), o)| BatchRequest {
                prompt: BatchPrompt {
                    ids,
                    images: if *with_image { &one } else { &[] },
                },
                opts: o,
            })
            .collect();
        let mut seen = vec![Vec::new(); reqs.len()];
        let together = model
            .generate_each(&reqs, |r, t| {
                seen[r].push(t);
                if r == stop_row && seen[r].len() == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_same(&together, &alone, &format!("{choice:?}"));
        assert_eq!(together[stop_row].finish, FinishReason::Stopped);
        assert_eq!(together[1].tokens.len(), 6);
        for (r, g) in together.iter().enumerate() {
            assert_eq!(seen[r], g.tokens, "{choice:?}: row {r}'s callback");
        }
    }
}
