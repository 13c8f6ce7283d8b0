//! `tokenizer.json`: loaded as the runtime and the trainer load it, then a prompt with an image encoded,
//! decoded, and the special tokens resolved against the built-in model's config.

use ove_core::prompt::{resolve_token_ids, tokenizer_from_bytes};

use crate::fixtures;

const TEXT: &str =
    "Total: 12.50 EUR <|vision_start|><|image_pad|><|vision_end|> Ünïcødé 日本 \u{1F600}";

pub fn tokenizer(data: &[u8]) {
    let Ok(tok) = tokenizer_from_bytes(data, "tokenizer.json") else {
        return;
    };
    if let Ok(enc) = tok.encode(TEXT, false) {
        let _ = tok.decode(enc.get_ids(), false);
        let _ = tok.decode(enc.get_ids(), true);
    }
    let _ = tok.decode(&[0, 1, u32::MAX], false);
    let fx = fixtures::get();
    let _ = resolve_token_ids(&fx.config, &fx.generation, Some(&tok));
}
