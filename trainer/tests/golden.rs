//! The tch model against every golden model case: vision tokens, image embeddings and
//! prompt logits within 1e-4 and identical greedy ids when fed the case's own pixels;
//! image embeddings and logits within 1e-3 from the images (our own preprocessing).

mod common;

use ove_core::tensor_file::read_safetensors;
use ove_train::checkpoint::load_model;
use ove_train::trace::{compare, trace_case, PixelSource};
use tch::Device;

const CASES: &[&str] = &["one-image", "two-images", "text-only", "large-image"];

fn check_case(name: &str, source: PixelSource, tol: f32) {
    let case = common::golden().join(name);
    assert!(case.is_dir(), "golden case missing at {}", case.display());
    let loaded = load_model(&case.join("checkpoint"), Device::Cpu).unwrap();
    let traced = trace_case(&loaded, &case, source).unwrap();
    let expected = read_safetensors(&case.join("expected.safetensors")).unwrap();
    let cmp = compare(&expected, &traced).unwrap();
    println!("{name} ({source:?}):\n{cmp}");
    assert!(cmp.missing.is_empty(), "{name}: missing {:?}", cmp.missing);
    let has_images = expected.contains_key("pixel_values");
    let mut checked: Vec<&str> = vec!["logits"];
    if has_images {
        checked.extend(["image_embeds", "vision_tokens"]);
    }
    for t in checked {
        if source == PixelSource::Images && t == "vision_tokens" {
            continue; // the bar from the images is on image_embeds and logits
        }
        let d = cmp.diff(t).unwrap_or_else(|| panic!("{name}: no {t}"));
        assert!(d <= tol, "{name}: {t} max|diff| {d:e} > {tol:e}");
    }
    assert_eq!(cmp.identical("input_ids"), Some(true), "{name}: input_ids");
    if has_images {
        assert_eq!(
            cmp.identical("image_grid_thw"),
            Some(true),
            "{name}: image_grid_thw"
        );
    }
    if source == PixelSource::Expected {
        assert_eq!(
            cmp.identical("generated_ids"),
            Some(true),
            "{name}: generated_ids"
        );
    }
}

#[test]
fn golden_cases_from_case_pixels() {
    for name in CASES {
        check_case(name, PixelSource::Expected, 1e-4);
    }
}

#[test]
fn golden_cases_from_images() {
    for name in CASES {
        check_case(name, PixelSource::Images, 1e-3);
    }
}
