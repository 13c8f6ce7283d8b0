//! Prompt building: the ChatML template, the tokenizer, and the expansion of each image
//! into `<|vision_start|> + N x <|image_pad|> + <|vision_end|>`.
//!
//! Token ids come from the checkpoint's files (config, generation config, tokenizer),
//! never from constants: fine-tuned and test models use other ids.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::Tokenizer;

use crate::config::{GenerationConfig, ModelConfig};
use crate::manifest::TokenIds;

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const VISION_START: &str = "<|vision_start|>";
pub const VISION_END: &str = "<|vision_end|>";
pub const IMAGE_PAD: &str = "<|image_pad|>";
pub const ENDOFTEXT: &str = "<|endoftext|>";
pub const DEFAULT_SYSTEM: &str = "You are a helpful assistant.";

/// One piece of a chat message's content, in the order the message gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    Text(&'a str),
    /// One image: a `<|vision_start|><|image_pad|><|vision_end|>` placeholder that
    /// [`expand_image_pads`] widens to the image's token count.
    Image,
}

/// One message of a conversation: its role (`system`, `user`, `assistant`) and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn<'a> {
    pub role: &'a str,
    pub parts: Vec<Part<'a>>,
}

/// The ChatML text of a conversation followed by the assistant's header: each message as
/// `<|im_start|>ROLE\n` + its parts in order + `<|im_end|>\n` (Qwen's chat template).
pub fn render_turns(turns: &[Turn<'_>]) -> String {
    let mut s = String::new();
    for turn in turns {
        s.push_str(IM_START);
        s.push_str(turn.role);
        s.push('\n');
        for part in &turn.parts {
            match part {
                Part::Text(t) => s.push_str(t),
                Part::Image => {
                    s.push_str(VISION_START);
                    s.push_str(IMAGE_PAD);
                    s.push_str(VISION_END);
                }
            }
        }
        s.push_str(IM_END);
        s.push('\n');
    }
    s.push_str(IM_START);
    s.push_str("assistant\n");
    s
}

/// The ChatML text of one user turn followed by the assistant's header. Each image is
/// one `<|vision_start|><|image_pad|><|vision_end|>` placeholder, placed before the text
/// (the reference's usual layout); [`expand_image_pads`] widens each pad afterwards.
pub fn render_chat(system: &str, user_text: &str, n_images: usize) -> String {
    let mut user = vec![Part::Image; n_images];
    user.push(Part::Text(user_text));
    render_turns(&[
        Turn {
            role: "system",
            parts: vec![Part::Text(system)],
        },
        Turn {
            role: "user",
            parts: user,
        },
    ])
}

/// Replaces the i-th single `image_pad` id by `counts[i]` copies. The number of pads must
/// equal the number of images: a mismatch is an error, never a silent truncation.
pub fn expand_image_pads(ids: &[i64], image_pad: i64, counts: &[usize]) -> Result<Vec<i64>> {
    let pads = ids.iter().filter(|&&t| t == image_pad).count();
    if pads != counts.len() {
        bail!(
            "the prompt has {pads} image placeholder(s) but {} image(s) were given",
            counts.len()
        );
    }
    let mut out = Vec::with_capacity(ids.len() + counts.iter().sum::<usize>());
    let mut next = counts.iter();
    for &t in ids {
        if t == image_pad {
            let n = *next.next().expect("counted above");
            out.extend(std::iter::repeat_n(image_pad, n));
        } else {
            out.push(t);
        }
    }
    Ok(out)
}

/// Counts the runs of `image_pad` in an expanded prompt, one run per image.
pub fn image_pad_runs(ids: &[i64], image_pad: i64) -> Vec<usize> {
    let mut runs = Vec::new();
    let mut prev = false;
    for &t in ids {
        let is_pad = t == image_pad;
        if is_pad && !prev {
            runs.push(0);
        }
        if is_pad {
            *runs.last_mut().expect("pushed above") += 1;
        }
        prev = is_pad;
    }
    runs
}

/// Special token ids from the checkpoint's files: the config first, then the tokenizer's
/// added tokens. The one definition the exporter (writing the manifest) and the runtime use.
pub fn resolve_token_ids(
    config: &ModelConfig,
    generation: &GenerationConfig,
    tokenizer: Option<&Tokenizer>,
) -> Result<TokenIds> {
    resolve_token_ids_by(
        config,
        generation,
        tokenizer.map(|t| move |name: &str| t.token_to_id(name).map(i64::from)),
    )
}

/// [`resolve_token_ids`] over any token-to-id lookup (e.g. tokenizer.json's `added_tokens`
/// read without building a tokenizer). The rules:
/// - with a tokenizer, it must contain the image pad, with the config's `image_token_id`;
/// - vision start/end come from the config, else the tokenizer;
/// - end of generation: `<|im_end|>`, then generation_config.json's `eos_token_id`s, and
///   `<|endoftext|>` only when neither names one.
pub fn resolve_token_ids_by(
    config: &ModelConfig,
    generation: &GenerationConfig,
    lookup: Option<impl Fn(&str) -> Option<i64>>,
) -> Result<TokenIds> {
    if let Some(l) = &lookup {
        match l(IMAGE_PAD) {
            Some(pad) if pad == config.image_token_id => {}
            Some(pad) => bail!(
                "config.json says image_token_id {}, tokenizer.json maps {IMAGE_PAD} to {pad}",
                config.image_token_id
            ),
            None => bail!(
                "tokenizer.json has no {IMAGE_PAD} token (config.json's image_token_id is {}): \
                 prompts with images cannot be written",
                config.image_token_id
            ),
        }
    }
    let lookup = |name: &str| lookup.as_ref().and_then(|l| l(name));
    let im_end = lookup(IM_END);
    let mut eos: Vec<i64> = im_end.into_iter().collect();
    for id in generation
        .eos_token_id
        .as_ref()
        .map(|e| e.to_vec())
        .unwrap_or_default()
    {
        if !eos.contains(&id) {
            eos.push(id);
        }
    }
    if eos.is_empty() {
        eos.extend(lookup(ENDOFTEXT));
    }
    Ok(TokenIds {
        image_pad: config.image_token_id,
        vision_start: config
            .vision_start_token_id
            .or_else(|| lookup(VISION_START)),
        vision_end: config.vision_end_token_id.or_else(|| lookup(VISION_END)),
        im_start: lookup(IM_START),
        im_end,
        eos,
    })
}

/// Loads a `tokenizer.json` file; errors name it.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    tokenizer_from_bytes(&bytes, &path.display().to_string())
}

/// Parses the bytes of a `tokenizer.json` (`name` stands for the file in errors). The
/// tokenizers crate panics on some malformed sections (0.22's `decoder`, found by the
/// tokenizer fuzz target): such a file is an error here, not a crash.
pub fn tokenizer_from_bytes(bytes: &[u8], name: &str) -> Result<Tokenizer> {
    let parsed = std::panic::catch_unwind(|| Tokenizer::from_bytes(bytes)).map_err(|payload| {
        let why = crate::panic_message(payload.as_ref());
        anyhow!("{name}: cannot load tokenizer: a malformed section ({why})")
    })?;
    parsed.map_err(|e| anyhow!("{name}: cannot load tokenizer: {e}"))
}

/// A tokenizer plus the ids it needs, turning user text and images into prompt ids.
pub struct PromptBuilder {
    tokenizer: Tokenizer,
    tokens: TokenIds,
    system: String,
}

impl PromptBuilder {
    pub fn new(tokenizer: Tokenizer, tokens: TokenIds) -> Self {
        Self {
            tokenizer,
            tokens,
            system: DEFAULT_SYSTEM.to_string(),
        }
    }

    /// Loads `tokenizer.json` (pure-Rust regex backend, so it cross-compiles).
    pub fn from_file(path: &Path, tokens: TokenIds) -> Result<Self> {
        Ok(Self::new(load_tokenizer(path)?, tokens))
    }

    pub fn with_system(mut self, system: impl Into<String>) -> Self {
        self.system = system.into();
        self
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn tokens(&self) -> &TokenIds {
        &self.tokens
    }

    /// Prompt ids for one user turn: `image_token_counts[i]` pads for image i
    /// (from [`crate::config::ModelConfig::tokens_per_image`]).
    pub fn encode(&self, user_text: &str, image_token_counts: &[usize]) -> Result<Vec<i64>> {
        let text = render_chat(&self.system, user_text, image_token_counts.len());
        self.encode_rendered(&text, image_token_counts)
    }

    /// Prompt ids for a conversation (an OpenAI-style message list): the builder's system
    /// message first unless the conversation starts with its own; `image_token_counts[i]`
    /// pads for the i-th [`Part::Image`] in message order.
    pub fn encode_turns(
        &self,
        turns: &[Turn<'_>],
        image_token_counts: &[usize],
    ) -> Result<Vec<i64>> {
        let images = turns
            .iter()
            .flat_map(|t| &t.parts)
            .filter(|p| **p == Part::Image)
            .count();
        if images != image_token_counts.len() {
            bail!(
                "the conversation has {images} image(s) but {} token count(s) were given",
                image_token_counts.len()
            );
        }
        let text = if turns.first().is_some_and(|t| t.role == "system") {
            render_turns(turns)
        } else {
            let mut all = Vec::with_capacity(turns.len() + 1);
            all.push(Turn {
                role: "system",
                parts: vec![Part::Text(&self.system)],
            });
            all.extend(turns.iter().cloned());
            render_turns(&all)
        };
        self.encode_rendered(&text, image_token_counts)
    }

    /// Tokenizes a rendered template and widens its image pads.
    fn encode_rendered(&self, text: &str, image_token_counts: &[usize]) -> Result<Vec<i64>> {
        let ids = self.encode_text(text)?;
        if ids.iter().filter(|&&t| t == self.tokens.image_pad).count() != image_token_counts.len() {
            bail!(
                "the tokenizer does not map {IMAGE_PAD} to a single id {} (or the prompt text contains it)",
                self.tokens.image_pad
            );
        }
        expand_image_pads(&ids, self.tokens.image_pad, image_token_counts)
    }

    /// Tokenizes raw text (special tokens in it are recognised, nothing is added).
    pub fn encode_text(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizing the prompt: {e}"))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Text of generated ids, special tokens skipped.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids = ids
            .iter()
            .map(|&i| u32::try_from(i).with_context(|| format!("token id {i} out of range")))
            .collect::<Result<Vec<u32>>>()?;
        self.tokenizer
            .decode(&ids, true)
            .map_err(|e| anyhow!("decoding tokens: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    use tokenizers::AddedToken;

    /// A small word-level tokenizer with the ChatML specials at ids unlike the released ones.
    fn tiny_tokenizer() -> Tokenizer {
        let words = [
            "[UNK]",
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
            "\n",
        ];
        let vocab: HashMap<String, u32> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i as u32))
            .collect();
        let model = WordLevel::builder()
            .vocab(vocab.into_iter().collect())
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        let mut tok = Tokenizer::new(model);
        tok.with_pre_tokenizer(Some(Whitespace {}));
        tok.add_special_tokens(&[
            AddedToken::from(IM_START, true),
            AddedToken::from(IM_END, true),
            AddedToken::from(VISION_START, true),
            AddedToken::from(VISION_END, true),
            AddedToken::from(IMAGE_PAD, true),
        ]);
        tok
    }

    fn tiny_config(image_token_id: i64) -> ModelConfig {
        let text = format!(
            r#"{{"model_type":"llavaonevision1_5","image_token_id":{image_token_id},
            "vision_config":{{"depth":1,"hidden_size":16,"num_heads":2,"intermediate_size":32,
              "patch_size":14,"spatial_merge_size":2,"text_hidden_size":16}},
            "text_config":{{"hidden_size":16,"num_hidden_layers":1,"num_attention_heads":2,
              "num_key_value_heads":1,"head_dim":8,"intermediate_size":32,"rope_theta":1e4,
              "rms_norm_eps":1e-6,"vocab_size":64}}}}"#
        );
        ModelConfig::from_json(Path::new("config.json"), &text).unwrap()
    }

    fn builder() -> PromptBuilder {
        let tok = tiny_tokenizer();
        let pad = tok.token_to_id(IMAGE_PAD).unwrap() as i64;
        let ids =
            resolve_token_ids(&tiny_config(pad), &GenerationConfig::default(), Some(&tok)).unwrap();
        PromptBuilder::new(tok, ids)
    }

    #[test]
    fn renders_the_reference_template() {
        let s = render_chat(DEFAULT_SYSTEM, "Read the text", 1);
        assert_eq!(
            s,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n\
             <|vision_start|><|image_pad|><|vision_end|>Read the text<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn one_image_expands_to_its_token_count() {
        let b = builder();
        let t = b.tokens().clone();
        let ids = b.encode("Read the text", &[6]).unwrap();
        assert_eq!(image_pad_runs(&ids, t.image_pad), vec![6]);
        let vs = ids.iter().position(|&x| Some(x) == t.vision_start).unwrap();
        assert!(ids[vs + 1..vs + 7].iter().all(|&x| x == t.image_pad));
        assert_eq!(Some(ids[vs + 7]), t.vision_end);
        assert_eq!(Some(ids[0]), t.im_start);
        // The turn ends with "<|im_start|>assistant\n".
        let tail = b.decode(&ids[ids.len() - 2..]).unwrap();
        assert!(tail.contains("assistant"), "{tail:?}");
    }

    #[test]
    fn several_images_keep_their_order() {
        let b = builder();
        let pad = b.tokens().image_pad;
        let ids = b.encode("Read", &[4, 9, 1]).unwrap();
        assert_eq!(image_pad_runs(&ids, pad), vec![4, 9, 1]);
        let text_only = b.encode("Read", &[]).unwrap();
        assert!(image_pad_runs(&text_only, pad).is_empty());
    }

    #[test]
    fn a_conversation_renders_each_message_in_order() {
        let b = builder();
        // One user message with the image first is exactly the one-turn prompt.
        let one = [Turn {
            role: "user",
            parts: vec![Part::Image, Part::Text("Read the text")],
        }];
        assert_eq!(
            b.encode_turns(&one, &[6]).unwrap(),
            b.encode("Read the text", &[6]).unwrap()
        );
        // Its own system message replaces the default; images keep their places.
        let turns = [
            Turn {
                role: "system",
                parts: vec![Part::Text("You are a helpful assistant.")],
            },
            Turn {
                role: "user",
                parts: vec![Part::Text("Read"), Part::Image],
            },
            Turn {
                role: "assistant",
                parts: vec![Part::Text("text")],
            },
            Turn {
                role: "user",
                parts: vec![Part::Image, Part::Text("Read")],
            },
        ];
        let text = render_turns(&turns);
        assert_eq!(text.matches(IM_START).count(), 5);
        assert_eq!(text.matches("system").count(), 1);
        assert!(text.contains("<|im_start|>user\nRead<|vision_start|>"));
        let ids = b.encode_turns(&turns, &[2, 3]).unwrap();
        assert_eq!(image_pad_runs(&ids, b.tokens().image_pad), vec![2, 3]);
        // The token counts must match the images.
        assert!(b.encode_turns(&turns, &[2]).is_err());
    }

    #[test]
    fn pad_count_mismatch_is_an_error() {
        assert!(expand_image_pads(&[1, 5, 2], 5, &[3, 4]).is_err());
        assert!(expand_image_pads(&[1, 5, 2, 5], 5, &[3]).is_err());
        assert_eq!(
            expand_image_pads(&[1, 5, 2, 5], 5, &[2, 1]).unwrap(),
            vec![1, 5, 5, 2, 5]
        );
    }

    #[test]
    fn token_ids_come_from_the_files() {
        let tok = tiny_tokenizer();
        let pad = tok.token_to_id(IMAGE_PAD).unwrap() as i64;
        let gen = GenerationConfig {
            eos_token_id: Some(crate::config::OneOrMany::Many(vec![42])),
            ..Default::default()
        };
        let ids = resolve_token_ids(&tiny_config(pad), &gen, Some(&tok)).unwrap();
        assert_eq!(ids.im_end, tok.token_to_id(IM_END).map(i64::from));
        assert_eq!(ids.eos[0], ids.im_end.unwrap());
        assert!(ids.eos.contains(&42));
        assert_eq!(
            ids.vision_start,
            tok.token_to_id(VISION_START).map(i64::from)
        );
        // The config and the tokenizer disagreeing on the image pad is refused.
        assert!(resolve_token_ids(&tiny_config(pad + 1), &gen, Some(&tok)).is_err());
        // A tokenizer without the image pad is refused, naming it.
        let no_pad = |name: &str| (name != IMAGE_PAD).then_some(7);
        let err = resolve_token_ids_by(&tiny_config(pad), &gen, Some(no_pad)).unwrap_err();
        assert!(format!("{err}").contains(IMAGE_PAD), "{err}");
        // Without a tokenizer: the config's ids, and generation_config's eos only.
        let bare =
            resolve_token_ids_by(&tiny_config(pad), &gen, None::<fn(&str) -> Option<i64>>).unwrap();
        assert_eq!((bare.image_pad, bare.eos.as_slice()), (pad, &[42][..]));
    }
}
