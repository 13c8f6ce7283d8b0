//! The checkpoint's JSON configs: parsed, validated, their derived quantities computed,
//! and written back and read again as the same value.

use std::path::Path;

use ove_core::config::{GenerationConfig, ModelConfig, PreprocessorConfig};
use ove_core::preprocess::patch_grid;
use ove_runtime::GenerateOverrides;

/// Image sizes (height, width) whose patch grid every accepted preprocessor must give.
const SIZES: [(usize, usize); 5] = [(1, 1), (28, 28), (37, 1000), (1400, 1000), (20000, 100)];

pub fn configs(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    model(text);
    preprocessor(text);
    generation(text);
}

fn model(text: &str) {
    let file = Path::new("config.json");
    let Ok(c) = ModelConfig::from_json(file, text) else {
        return;
    };
    let (v, t) = (&c.vision_config, &c.text_config);
    let _ = (v.head_dim(), v.patch_dim(), v.merge_unit());
    let _ = (v.merger_hidden(), v.rotary_freqs());
    let _ = (t.head_dim(), t.gqa_groups(), t.q_dim(), t.kv_dim());
    let _ = c.tokens_per_image([1, 2 * v.spatial_merge_size, 3 * v.spatial_merge_size]);
    let again = serde_json::to_string(&c).expect("a parsed config serializes");
    let back = ModelConfig::from_json(file, &again)
        .unwrap_or_else(|e| panic!("config.json written back does not read: {e}\n{again}"));
    assert_eq!(c, back, "config.json changed in a write and read");
}

fn preprocessor(text: &str) {
    let file = Path::new("preprocessor_config.json");
    let Ok(p) = PreprocessorConfig::from_json(file, text) else {
        return;
    };
    let _ = (p.min_pixels(), p.max_pixels());
    for (h, w) in SIZES {
        if let Ok([t, gh, gw]) = patch_grid(h, w, &p) {
            assert!(t >= 1, "an empty temporal grid for {h}x{w}");
            let _ = (gh, gw);
        }
    }
    let again = serde_json::to_string(&p).expect("a parsed config serializes");
    let back = PreprocessorConfig::from_json(file, &again).unwrap_or_else(|e| {
        panic!("preprocessor_config.json written back does not read: {e}\n{again}")
    });
    assert_eq!(
        p, back,
        "preprocessor_config.json changed in a write and read"
    );
}

fn generation(text: &str) {
    let file = Path::new("generation_config.json");
    let Ok(g) = GenerationConfig::from_json(file, text) else {
        return;
    };
    let _ = GenerateOverrides::default().resolve(&g);
    let again = serde_json::to_string(&g).expect("a parsed config serializes");
    let back = GenerationConfig::from_json(file, &again).unwrap_or_else(|e| {
        panic!("generation_config.json written back does not read: {e}\n{again}")
    });
    assert_eq!(
        g, back,
        "generation_config.json changed in a write and read"
    );
}
