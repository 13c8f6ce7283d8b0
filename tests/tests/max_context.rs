//! `LoadOptions::max_context` (`ove run --max-context N`): a context length below the
//! bundle's bounds the prompt, generation and so the KV cache.

mod common;

use std::ops::ControlFlow;

use common::*;
use ove_exporter::Dtype;
use ove_runtime::trace::Case;
use ove_runtime::{
    BackendChoice, BackendOptions, FinishReason, GenerateOptions, LoadOptions, LogitRows, Model,
};

const CASE: &str = "one-image";

fn opts(max_context: Option<usize>) -> LoadOptions {
    LoadOptions {
        backend: BackendOptions {
            choice: BackendChoice::Tract,
            ..Default::default()
        },
        max_context,
        ..Default::default()
    }
}

fn no_eos(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        stop_at_eos: false,
        ..Default::default()
    }
}

#[test]
fn max_context_is_the_lower_of_the_option_and_the_manifest() {
    let b = bundle(CASE, Dtype::F32);
    let m = Model::load(&b, &opts(None)).unwrap();
    let bundle_max = m.manifest().max_context;
    assert_eq!(m.max_context(), bundle_max);
    let m = Model::load(&b, &opts(Some(7))).unwrap();
    assert_eq!(m.max_context(), 7);
    assert_eq!(m.manifest().max_context, bundle_max, "manifest untouched");
    let m = Model::load(&b, &opts(Some(bundle_max + 100))).unwrap();
    assert_eq!(m.max_context(), bundle_max);
    let Err(err) = Model::load(&b, &opts(Some(0))) else {
        panic!("max context 0 was accepted");
    };
    assert!(format!("{err:#}").contains("max context 0"), "{err:#}");
}

#[test]
fn prompt_longer_than_max_context_is_refused() {
    let c = Case::load(&case_dir(CASE)).unwrap();
    let limit = c.input_ids.len() - 1;
    let mut model = Model::load(&bundle(CASE, Dtype::F32), &opts(Some(limit))).unwrap();
    assert!(limit < model.manifest().max_context);
    let img = model.encode_image_file(&c.images[0]).unwrap();
    let err = model
        .generate(&c.input_ids, &[&img], &no_eos(2), |_| {
            ControlFlow::Continue(())
        })
        .expect_err("prompt over max_context");
    let msg = format!("{err:#}");
    for want in [
        format!("{} tokens", c.input_ids.len()),
        format!("max context of {limit}"),
        format!("bundle allows {}", model.manifest().max_context),
    ] {
        assert!(msg.contains(&want), "{want:?} not in {msg}");
    }
    // The same through prefill; a prompt exactly at the limit runs.
    let mut seq = model.new_sequence();
    assert!(model
        .prefill(&mut seq, &c.input_ids, &[&img], LogitRows::Last, None)
        .is_err());
    assert!(seq.is_empty(), "a refused prompt leaves the sequence empty");
    let mut model = Model::load(&bundle(CASE, Dtype::F32), &opts(Some(limit + 1))).unwrap();
    let mut seq = model.new_sequence();
    model
        .prefill(&mut seq, &c.input_ids, &[&img], LogitRows::Last, None)
        .unwrap();
    assert_eq!(seq.len(), limit + 1);
    let err = model.step(&mut seq, 0).expect_err("step past the context");
    assert!(
        format!("{err:#}").contains(&format!("max context of {}", limit + 1)),
        "{err:#}"
    );
    assert_eq!(seq.len(), limit + 1, "the refused step added nothing");
}

#[test]
fn generation_stops_at_max_context() {
    let c = Case::load(&case_dir(CASE)).unwrap();
    let limit = c.input_ids.len() + 3;
    let mut model = Model::load(&bundle(CASE, Dtype::F32), &opts(Some(limit))).unwrap();
    assert!(limit < model.manifest().max_context);
    let img = model.encode_image_file(&c.images[0]).unwrap();
    let mut streamed = 0;
    let g = model
        .generate(&c.input_ids, &[&img], &no_eos(50), |_| {
            streamed += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(g.finish, FinishReason::MaxContext);
    // 3 tokens fed back fill the context (prompt + 3 = limit); a 4th is predicted from
    // the last position and returned, but never run, so the cache stays within the limit.
    assert_eq!(g.tokens.len(), 4);
    assert_eq!(g.decode_steps, 3);
    assert_eq!(g.prompt_tokens + g.decode_steps, limit);
    assert_eq!(streamed, 4);

    // The tokens are those of an unbounded run (the limit only cuts it short).
    let mut free = Model::load(&bundle(CASE, Dtype::F32), &opts(None)).unwrap();
    let img = free.encode_image_file(&c.images[0]).unwrap();
    let full = free
        .generate(&c.input_ids, &[&img], &no_eos(6), |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(full.finish, FinishReason::MaxNewTokens);
    assert_eq!(&full.tokens[..4], &g.tokens[..]);
}
