//! safetensors: the checkpoint reader's header check, the whole-file reader (CTC head,
//! trainer side files), the runtime's memory-mapped embedding table, and the shard index.

use std::path::Path;

use ove_core::checkpoint::{index_shards, read_header};
use ove_core::tensor_file::parse_safetensors;
use ove_runtime::embed::{Embeddings, EMBED_TENSOR};

use crate::fixtures;

pub fn safetensors(data: &[u8]) {
    let path = Path::new("model.safetensors");
    let mut embedding_table = false;
    if let Ok(infos) = read_header(path, data, 0) {
        embedding_table = infos.iter().any(|i| i.name.starts_with(EMBED_TENSOR));
        for i in &infos {
            // The check multiplied the shape out without overflow; so can a reader.
            let Some(n) = i.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
                panic!("{}: accepted a shape that overflows", i.name);
            };
            assert!(n <= data.len() * 8, "{}: more elements than bits", i.name);
        }
    }
    if let Ok(tensors) = parse_safetensors(path, data) {
        for (name, t) in &tensors {
            let n: usize = t.shape().iter().product();
            assert_eq!(n, t.to_f32().len(), "{name}: elements and shape disagree");
        }
    }
    let fx = fixtures::get();
    // The table is memory-mapped from a file: written out only when the header names it
    // (the write is most of an execution's time otherwise).
    if embedding_table && std::fs::write(&fx.scratch, data).is_ok() {
        let hidden = fx.config.text_config.hidden_size;
        if let Ok(table) = Embeddings::open(&fx.scratch, hidden) {
            assert_eq!(table.hidden(), hidden);
            let last = table.vocab() as i64 - 1;
            for ids in [vec![0], vec![last], vec![last + 1], vec![-1]] {
                let _ = table.gather(&ids);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let index = fx.bundle.join("model.safetensors.index.json");
        if let Ok(files) = index_shards(&fx.bundle, &index, text) {
            for f in files {
                let p = fx
                    .bundle
                    .join(&f)
                    .canonicalize()
                    .expect("an accepted shard exists");
                let root = fx.bundle.canonicalize().expect("the bundle exists");
                assert!(
                    p.starts_with(&root),
                    "shard {f} resolves outside the folder"
                );
            }
        }
    }
}
