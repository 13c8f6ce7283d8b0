//! The KV cache: a prompt fed in chunks (the second chunk attends to the cached first one
//! through an explicit mask) gives the logits of one full forward.

use std::path::Path;

use ove_core::tensor_file::read_safetensors;
use ove_train::checkpoint::load_model;
use ove_train::model::Images;
use ove_train::{AttentionMask, KvCache};
use tch::{Device, Tensor};

#[test]
fn chunked_prefill_matches_one_forward() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/one-image");
    assert!(case.is_dir(), "golden data missing at {}", case.display());
    let l = load_model(&case.join("checkpoint"), Device::Cpu).unwrap();
    let e = read_safetensors(&case.join("expected.safetensors")).unwrap();
    let ids = Tensor::from_slice(&e["input_ids"].to_i64().unwrap()).unsqueeze(0);
    let pv = Tensor::from_slice(&e["pixel_values"].to_f32()).reshape([-1, 588]);
    let g = e["image_grid_thw"].to_i64().unwrap();
    let grids = [[g[0] as usize, g[1] as usize, g[2] as usize]];
    let _guard = tch::no_grad_guard();
    let m = &l.model;
    let embeds = m
        .encode_images(&Images::new(&pv, &grids))
        .unwrap()
        .image_embeds;

    let full = m
        .forward_with_image_embeds(&ids, Some(&embeds), None, &AttentionMask::Causal)
        .unwrap();

    // Chunks [0, 5) (text only), [5, 16) (all image pads), [16, T).
    let t = ids.size()[1];
    let pads = embeds.size()[0];
    let mut cache = KvCache::new(m.decoder.layers.len());
    let mut parts = Vec::new();
    let mut used = 0;
    for (start, end) in [(0, 5), (5, 16), (16, t)] {
        let chunk = ids.narrow(1, start, end - start);
        let n_pads = chunk
            .eq(m.config.image_token_id)
            .sum(tch::Kind::Int64)
            .int64_value(&[]);
        let img = (n_pads > 0).then(|| embeds.narrow(0, used, n_pads));
        used += n_pads;
        let h = m
            .hidden_states(
                &chunk,
                img.as_ref(),
                None,
                &AttentionMask::Causal,
                Some(&mut cache),
            )
            .unwrap();
        parts.push(m.decoder.logits(&h));
    }
    assert_eq!(used, pads);
    assert_eq!(cache.seq_len(), t);
    let chunked = Tensor::cat(&parts, 1);
    let d = (&chunked - &full).abs().max().double_value(&[]);
    println!("chunked prefill vs one forward: max|diff| {d:.2e}");
    assert!(d <= 1e-5, "{d:e}");
}
