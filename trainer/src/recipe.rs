//! The default-model recipe's steps before training: a byte-level BPE tokenizer trained on
//! the ground-truth texts (`ove-train tokenizer`), a randomly initialised checkpoint whose
//! token ids come from that tokenizer (`ove-train init`), and the conversion of docgen's
//! text-level JSONL into the trainer's token-level format (`ove-train prepare`).
//!
//! `scripts/recipe-default-ocr` chains them with docgen, the three stages, the int4 export
//! and the evaluation.

use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};
use tch::nn::VarStore;
use tch::Device;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use ove_core::config::ModelConfig;
use ove_core::prompt::{
    render_chat, DEFAULT_SYSTEM, IMAGE_PAD, IM_END, IM_START, VISION_END, VISION_START,
};

use crate::checkpoint::{save_checkpoint, SaveOptions};
use crate::jsonl::read_jsonl;
use crate::model::LlavaOneVision;

/// End of text (padding and a second end-of-sequence id).
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// The video placeholder (unused by OCR, kept so `video_token_id` names a real token).
pub const VIDEO_PAD: &str = "<|video_pad|>";

/// The special tokens, in id order: they take ids `0..SPECIAL_TOKENS.len()`.
pub const SPECIAL_TOKENS: &[&str] = &[
    ENDOFTEXT,
    IM_START,
    IM_END,
    VISION_START,
    VISION_END,
    IMAGE_PAD,
    VIDEO_PAD,
];

/// The image placeholder in LLaVA-style conversations.
pub const IMAGE_TAG: &str = "<image>";

/// The `ove-train` subcommands of the default-model recipe (flattened into the CLI).
#[derive(Debug, clap::Subcommand)]
pub enum RecipeCommand {
    /// Train a byte-level BPE tokenizer (ChatML special tokens first) on ground-truth texts:
    /// folders (every *.txt in them) and text-level JSONL (docgen's captions.jsonl,
    /// ocr.jsonl, stage2.jsonl). Deterministic.
    Tokenizer {
        /// Folders of NAME.txt and/or text-level JSONL files.
        #[arg(long, num_args = 1.., required = true)]
        data: Vec<PathBuf>,
        /// Vocabulary size, special tokens and the 256 bytes included.
        #[arg(long, default_value_t = 4096)]
        vocab_size: usize,
        /// Pairs seen fewer times than this are not merged.
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// Output tokenizer.json.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a randomly initialised checkpoint: the config template with the token ids and
    /// the vocabulary size taken from the tokenizer, plus tokenizer.json, the template's
    /// preprocessor_config.json and a generation_config.json.
    Init {
        /// config.json template (a preprocessor_config.json next to it is copied).
        #[arg(long)]
        config: PathBuf,
        /// tokenizer.json (from `ove-train tokenizer`).
        #[arg(long)]
        tokenizer: PathBuf,
        /// Output checkpoint directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the initialisation.
        #[arg(long, default_value_t = 0)]
        seed: i64,
    },
    /// Convert text-level JSONL ({"images", "caption"} or LLaVA {"images", "conversations"})
    /// into the trainer's {"prompt_ids", "response_ids", "images"}: the ChatML prompt with
    /// one image placeholder per image, the response = the answer + <|im_end|>.
    Prepare {
        /// Text-level JSONL files (image paths relative to each file).
        #[arg(long, num_args = 1.., required = true)]
        data: Vec<PathBuf>,
        /// tokenizer.json.
        #[arg(long)]
        tokenizer: PathBuf,
        /// config.json (or a checkpoint directory) whose image_token_id must match the
        /// tokenizer's <|image_pad|>.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output token-level JSONL (image paths rewritten relative to it).
        #[arg(long)]
        out: PathBuf,
    },
}

impl RecipeCommand {
    pub fn run(self) -> Result<()> {
        match self {
            RecipeCommand::Tokenizer {
                data,
                vocab_size,
                min_frequency,
                out,
            } => {
                let texts = collect_texts(&data)?;
                let tok = train_tokenizer(&texts, vocab_size, min_frequency)?;
                save_tokenizer(&tok, &out)?;
                println!(
                    "tokenizer: {} texts, vocabulary {} (asked {vocab_size}), written to {}",
                    texts.len(),
                    tok.get_vocab_size(true),
                    out.display()
                );
            }
            RecipeCommand::Init {
                config,
                tokenizer,
                out,
                seed,
            } => {
                let tok = load_tokenizer(&tokenizer)?;
                let (cfg, params) = init_checkpoint(&config, &tok, &tokenizer, &out, seed)?;
                println!(
                    "initialised {} parameters (vocabulary {}, image_token_id {}) in {}",
                    params,
                    cfg.text_config.vocab_size,
                    cfg.image_token_id,
                    out.display()
                );
            }
            RecipeCommand::Prepare {
                data,
                tokenizer,
                config,
                out,
            } => {
                let tok = load_tokenizer(&tokenizer)?;
                if let Some(c) = config {
                    let file = if c.is_dir() { c.join("config.json") } else { c };
                    let cfg = ModelConfig::from_file(&file)?;
                    let pad = special_id(&tok, IMAGE_PAD)?;
                    ensure!(
                        cfg.image_token_id == pad,
                        "{}: image_token_id {} but the tokenizer maps {IMAGE_PAD} to {pad}",
                        file.display(),
                        cfg.image_token_id
                    );
                }
                let s = prepare_files(&data, &tok, &out)?;
                println!(
                    "prepared {} records ({} prompt + {} response tokens) into {}",
                    s.records,
                    s.prompt_tokens,
                    s.response_tokens,
                    out.display()
                );
            }
        }
        Ok(())
    }
}

/// The texts of folders (each `*.txt`, sorted by name) and of text-level JSONL files
/// (captions and every conversation turn, `<image>` tags removed), in a fixed order.
pub fn collect_texts(inputs: &[PathBuf]) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("reading {}", input.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("reading {}", input.display()))?;
            files.retain(|p| {
                p.extension().is_some_and(|e| e == "txt")
                    && !p.to_string_lossy().ends_with(".pred.txt")
            });
            files.sort();
            for f in files {
                texts.push(
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("reading {}", f.display()))?,
                );
            }
        } else {
            for (i, rec) in read_jsonl::<Value>(input)?.into_iter().enumerate() {
                let at = || format!("{}:{}", input.display(), i + 1);
                let conv = Conversation::from_value(&rec).with_context(at)?;
                texts.push(conv.user);
                texts.push(conv.answer);
            }
        }
    }
    // The chat template's own words, so that they get merges too.
    texts.push(render_chat(
        DEFAULT_SYSTEM,
        "Read all the text in the image.",
        0,
    ));
    texts.retain(|t| !t.is_empty());
    Ok(texts)
}

/// Trains a byte-level BPE (GPT-2/Qwen pre-tokenization, no prefix space) with
/// [`SPECIAL_TOKENS`] at ids `0..` as special added tokens.
pub fn train_tokenizer(
    texts: &[String],
    vocab_size: usize,
    min_frequency: u64,
) -> Result<Tokenizer> {
    ensure!(
        vocab_size > 256 + SPECIAL_TOKENS.len(),
        "--vocab-size {vocab_size}: must exceed the 256 bytes plus {} special tokens",
        SPECIAL_TOKENS.len()
    );
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|s| AddedToken::from(s.to_string(), true))
        .collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(min_frequency)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tok.train(&mut trainer, texts.iter())
        .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
    for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
        ensure!(
            tok.token_to_id(s) == Some(i as u32),
            "special token {s} did not get id {i}"
        );
    }
    Ok(tok)
}

pub fn save_tokenizer(tok: &Tokenizer, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = tok
        .to_string(true)
        .map_err(|e| anyhow!("serialising the tokenizer: {e}"))?;
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))
}

pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    ove_core::prompt::load_tokenizer(path)
}

/// The id of a special token, an error when the tokenizer lacks it.
pub fn special_id(tok: &Tokenizer, name: &str) -> Result<i64> {
    tok.token_to_id(name)
        .map(i64::from)
        .with_context(|| format!("the tokenizer has no {name}"))
}

/// Writes a randomly initialised checkpoint to `out` (see [`RecipeCommand::Init`]);
/// returns its config and parameter count.
pub fn init_checkpoint(
    template: &Path,
    tok: &Tokenizer,
    tokenizer_file: &Path,
    out: &Path,
    seed: i64,
) -> Result<(ModelConfig, i64)> {
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("reading {}", template.display()))?;
    let mut raw: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", template.display()))?;
    let vocab = tok.get_vocab_size(true).div_ceil(64) * 64;
    let ids = [
        ("image_token_id", special_id(tok, IMAGE_PAD)?),
        ("video_token_id", special_id(tok, VIDEO_PAD)?),
        ("vision_start_token_id", special_id(tok, VISION_START)?),
        ("vision_end_token_id", special_id(tok, VISION_END)?),
    ];
    let obj = raw
        .as_object_mut()
        .with_context(|| format!("{}: not a JSON object", template.display()))?;
    for (k, v) in ids {
        obj.insert(k.into(), json!(v));
    }
    obj.insert("vocab_size".into(), json!(vocab));
    let eos = special_id(tok, IM_END)?;
    let pad = special_id(tok, ENDOFTEXT)?;
    if let Some(t) = obj.get_mut("text_config").and_then(Value::as_object_mut) {
        t.insert("vocab_size".into(), json!(vocab));
        t.insert("image_token_id".into(), json!(ids[0].1));
        t.insert("video_token_id".into(), json!(ids[1].1));
        t.insert("eos_token_id".into(), json!(eos));
        t.insert("pad_token_id".into(), json!(pad));
    }
    let config_text = serde_json::to_string_pretty(&raw)?;
    let cfg = ModelConfig::from_json(template, &config_text)?;

    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let _model = LlavaOneVision::new(&vs.root(), &cfg)?;
    save_checkpoint(&vs, &cfg, None, out, &SaveOptions::default())?;
    // The template's extra keys (dtype, initializer_range, ...) kept.
    let config_path = out.join("config.json");
    std::fs::write(&config_path, config_text)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let tokenizer_out = out.join("tokenizer.json");
    std::fs::copy(tokenizer_file, &tokenizer_out).with_context(|| {
        format!(
            "copying {} to {}",
            tokenizer_file.display(),
            tokenizer_out.display()
        )
    })?;
    let pre = template.with_file_name("preprocessor_config.json");
    if pre.is_file() {
        let pre_out = out.join("preprocessor_config.json");
        std::fs::copy(&pre, &pre_out)
            .with_context(|| format!("copying {} to {}", pre.display(), pre_out.display()))?;
    }
    let generation = json!({
        "eos_token_id": [eos, pad],
        "pad_token_id": pad,
        "do_sample": false,
        "max_new_tokens": 512,
    });
    let generation_path = out.join("generation_config.json");
    std::fs::write(&generation_path, serde_json::to_string_pretty(&generation)?)
        .with_context(|| format!("writing {}", generation_path.display()))?;
    let params = vs.variables().values().map(|t| t.numel() as i64).sum();
    Ok((cfg, params))
}

/// One text-level record: the user's text (image tags removed), the answer, the images.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    pub images: Vec<String>,
    pub user: String,
    pub answer: String,
}

impl Conversation {
    /// `{"images", "caption"}` (the user turn is empty) or `{"images", "conversations":
    /// [{"from": "human", ...}, {"from": "gpt", ...}]}` (one exchange).
    pub fn from_value(v: &Value) -> Result<Self> {
        let images: Vec<String> = match v.get("images") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .context("images: expected strings")
                })
                .collect::<Result<_>>()?,
            Some(_) => bail!("images: expected a list"),
        };
        if let Some(c) = v.get("caption") {
            let answer = c
                .as_str()
                .context("caption: expected a string")?
                .to_string();
            return Ok(Self {
                images,
                user: String::new(),
                answer,
            });
        }
        let turns = v
            .get("conversations")
            .and_then(Value::as_array)
            .context("expected \"caption\" or \"conversations\"")?;
        ensure!(
            turns.len() == 2,
            "conversations: expected one human and one gpt turn, found {} turns",
            turns.len()
        );
        let turn = |i: usize, want: &str| -> Result<String> {
            let t = &turns[i];
            let from = t.get("from").and_then(Value::as_str).unwrap_or("");
            ensure!(
                from == want,
                "conversations[{i}].from: expected {want:?}, found {from:?}"
            );
            Ok(t.get("value")
                .and_then(Value::as_str)
                .with_context(|| format!("conversations[{i}].value: expected a string"))?
                .to_string())
        };
        let human = turn(0, "human")?;
        let answer = turn(1, "gpt")?;
        let tags = human.matches(IMAGE_TAG).count();
        ensure!(
            tags == images.len(),
            "the human turn has {tags} {IMAGE_TAG} tag(s) for {} image(s)",
            images.len()
        );
        let user = human.replace(IMAGE_TAG, "");
        let user = user.trim_start_matches('\n').to_string();
        Ok(Self {
            images,
            user,
            answer,
        })
    }
}

/// The trainer's record of one conversation: the ChatML prompt (system, the user turn with
/// one `<|vision_start|><|image_pad|><|vision_end|>` per image, the assistant header) and
/// the response (the answer and `<|im_end|>`).
pub fn tokenize_conversation(tok: &Tokenizer, conv: &Conversation) -> Result<(Vec<i64>, Vec<i64>)> {
    for (name, text) in [("user text", &conv.user), ("answer", &conv.answer)] {
        if let Some(s) = SPECIAL_TOKENS.iter().find(|s| text.contains(**s)) {
            bail!("the {name} contains the special token {s}");
        }
    }
    let encode = |text: &str| -> Result<Vec<i64>> {
        let enc = tok
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    };
    let prompt = encode(&render_chat(DEFAULT_SYSTEM, &conv.user, conv.images.len()))?;
    let pad = special_id(tok, IMAGE_PAD)?;
    let pads = prompt.iter().filter(|&&t| t == pad).count();
    ensure!(
        pads == conv.images.len(),
        "the prompt has {pads} image pads for {} images",
        conv.images.len()
    );
    let response = encode(&format!("{}{IM_END}", conv.answer))?;
    Ok((prompt, response))
}

/// Decodes ids with the special tokens kept (the inverse of the tokenization).
pub fn decode(tok: &Tokenizer, ids: &[i64]) -> Result<String> {
    let ids: Vec<u32> = ids
        .iter()
        .map(|&i| u32::try_from(i).with_context(|| format!("token id {i} out of range")))
        .collect::<Result<_>>()?;
    tok.decode(&ids, false)
        .map_err(|e| anyhow!("decoding: {e}"))
}

/// What [`prepare_files`] wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct PrepareSummary {
    pub records: usize,
    pub prompt_tokens: usize,
    pub response_tokens: usize,
}

/// Converts text-level JSONL files into one token-level file `out`.
pub fn prepare_files(inputs: &[PathBuf], tok: &Tokenizer, out: &Path) -> Result<PrepareSummary> {
    let out_dir = absolute(out.parent().unwrap_or(Path::new("")))?;
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut w = BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    let mut s = PrepareSummary::default();
    for input in inputs {
        let in_dir = absolute(input.parent().unwrap_or(Path::new("")))?;
        for (i, rec) in read_jsonl::<Value>(input)?.into_iter().enumerate() {
            let at = || format!("{}:{}", input.display(), i + 1);
            let conv = Conversation::from_value(&rec).with_context(at)?;
            let (prompt, response) = tokenize_conversation(tok, &conv).with_context(at)?;
            let images: Vec<String> = conv
                .images
                .iter()
                .map(|img| relative_to(&in_dir.join(img), &out_dir))
                .collect();
            s.records += 1;
            s.prompt_tokens += prompt.len();
            s.response_tokens += response.len();
            writeln!(
                w,
                "{}",
                json!({"prompt_ids": prompt, "response_ids": response, "images": images})
            )
            .with_context(|| format!("writing {}", out.display()))?;
        }
    }
    w.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(s)
}

/// `path` made absolute and lexically normalised (`.` and `..` resolved).
fn absolute(path: &Path) -> Result<PathBuf> {
    let p = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// `path` (absolute) relative to the folder `base` (absolute), with `..` where needed.
fn relative_to(path: &Path, base: &Path) -> String {
    let path = absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..b.len() {
        rel.push("..");
    }
    for c in &p[common..] {
        rel.push(c);
    }
    rel.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_to(Path::new("/a/b/c.png"), Path::new("/a/b")),
            "c.png"
        );
        assert_eq!(
            relative_to(Path::new("/a/b/c.png"), Path::new("/a/d")),
            "../b/c.png"
        );
    }

    #[test]
    fn conversations_parse() {
        let v: Value = serde_json::from_str(
            r#"{"images":["x.png"],"conversations":[{"from":"human","value":"<image>\nRead it."},{"from":"gpt","value":"A\nB"}]}"#,
        )
        .unwrap();
        let c = Conversation::from_value(&v).unwrap();
        assert_eq!(c.user, "Read it.");
        assert_eq!(c.answer, "A\nB");
        let v: Value = serde_json::from_str(r#"{"images":["x.png"],"caption":"hi"}"#).unwrap();
        let c = Conversation::from_value(&v).unwrap();
        assert_eq!((c.user.as_str(), c.answer.as_str()), ("", "hi"));
    }
}
