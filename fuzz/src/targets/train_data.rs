//! The trainer's data: a WebDataset tar shard and a JSONL manifest, each record turned into
//! a sample (image-free ones: image bytes are the preprocess target's).

use std::io::Cursor;
use std::path::Path;

use ove_train::train::data::{build_sample, parse_records};
use ove_train::train::shards::read_shard_from;

use crate::fixtures;

pub fn train_data(data: &[u8]) {
    let fx = fixtures::get();
    let sample = |prompt: &[i64], response: &[i64]| {
        let _ = build_sample(prompt, response, &[], &fx.config, Some(&fx.preprocessor));
    };
    if let Ok(samples) = read_shard_from(Cursor::new(data), Path::new("fuzz.tar")) {
        for s in samples.iter().filter(|s| s.images.is_empty()) {
            sample(&s.record.prompt_ids, &s.record.response_ids);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(records) = parse_records(Path::new("fuzz.jsonl"), text) {
            for (_, r) in records.iter().filter(|(_, r)| r.images.is_empty()) {
                sample(&r.prompt_ids, &r.response_ids);
            }
        }
    }
}
