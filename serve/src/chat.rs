//! `POST /v1/chat/completions`: OpenAI's request shape, checked and turned into what the
//! model thread runs ([`PreparedChat`]: prompt ids, preprocessed images, options).
//!
//! Everything that can be refused is refused here, before the request takes a queue place:
//! malformed messages, images that are not images or announce too many pixels, URLs the
//! server will not fetch, a prompt plus `max_tokens` over the model's context, sampling
//! values without meaning. Fields this server does not know are ignored, as OpenAI's API
//! ignores them; known ones it cannot honour (`n` > 1) are errors.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use ove_core::preprocess::{load_rgb_from_bytes, preprocess, DecodeOptions, Preprocessed};
use ove_core::prompt::{Part, Turn};
use ove_runtime::GenerateOptions;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::worker::ModelInfo;

/// The request body (the fields this server reads; others are ignored).
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Any name is accepted: the server runs one model (`GET /v1/models` names it).
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// OpenAI's newer name for `max_tokens`; wins when both are given.
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    /// vLLM's and llama.cpp's extension.
    #[serde(default)]
    pub top_k: Option<u64>,
    /// vLLM's extension (Hugging Face's repetition penalty).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub n: Option<u64>,
    /// vLLM's extension: keep generating past the end of turn (up to `max_tokens`).
    #[serde(default)]
    pub ignore_eos: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    /// A string, a list of content parts, or null (an assistant turn).
    #[serde(default)]
    pub content: Value,
}

/// The most stop sequences a request may give (OpenAI's limit).
pub const MAX_STOPS: usize = 4;

/// What the checks need besides the model.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The decode-bomb limit on an image's announced width x height.
    pub max_image_pixels: u64,
    /// The largest image a request may carry (decoded from base64, or read from a file).
    pub max_image_bytes: usize,
    /// Where `file://` image URLs may point (canonical); `None` refuses them.
    pub allow_dir: Option<PathBuf>,
}

/// A checked request, ready for the model thread.
#[derive(Debug)]
pub struct PreparedChat {
    pub ids: Vec<i64>,
    pub images: Vec<Preprocessed>,
    pub opts: GenerateOptions,
    pub stops: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Parses the body of a chat request.
pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid chat request: {e}")))
}

/// Checks a request and builds its prompt. Runs on a blocking thread: it decodes images.
pub fn prepare(
    req: ChatRequest,
    info: &ModelInfo,
    limits: &Limits,
) -> Result<PreparedChat, ApiError> {
    fn bad(m: impl Into<String>) -> ApiError {
        ApiError::bad_request(m)
    }
    if let Some(n) = req.n {
        if n != 1 {
            return Err(bad(format!(
                "n = {n}: this server returns one choice (n = 1)"
            )));
        }
    }
    if req.messages.is_empty() {
        return Err(bad("messages is empty: give at least one user message"));
    }
    let mut turns = Vec::with_capacity(req.messages.len());
    let mut images = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let at = |what: &str| format!("messages[{i}]: {what}");
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(bad(at(&format!(
                    "role {other:?} is not supported (system, developer, user, assistant)"
                ))))
            }
        };
        let mut parts = Vec::new();
        match &m.content {
            Value::Null if role == "assistant" => {}
            Value::String(s) => parts.push(Part::Text(s.as_str())),
            Value::Array(items) => {
                for (k, item) in items.iter().enumerate() {
                    let at = |what: &str| format!("messages[{i}].content[{k}]: {what}");
                    let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
                    match kind {
                        "text" => {
                            let t = item
                                .get("text")
                                .and_then(Value::as_str)
                                .ok_or_else(|| bad(at("a text part needs a string `text`")))?;
                            parts.push(Part::Text(t));
                        }
                        "image_url" => {
                            if role != "user" {
                                return Err(bad(at("images are accepted in user messages only")));
                            }
                            let url = match item.get("image_url") {
                                Some(Value::String(u)) => u.as_str(),
                                Some(obj) => {
                                    obj.get("url").and_then(Value::as_str).ok_or_else(|| {
                                        bad(at("an image_url part needs `image_url.url`"))
                                    })?
                                }
                                None => return Err(bad(at("an image_url part needs `image_url`"))),
                            };
                            let img = load_image(url, limits).map_err(|e| bad(at(&e)))?;
                            let p = preprocess(&img, &info.preprocessor).map_err(|e| {
                                bad(at(&format!("cannot preprocess the image: {e}")))
                            })?;
                            images.push(p);
                            parts.push(Part::Image);
                        }
                        "" => return Err(bad(at("a content part needs a `type`"))),
                        other => {
                            return Err(bad(at(&format!(
                                "content part type {other:?} is not supported (text, image_url)"
                            ))))
                        }
                    }
                }
            }
            _ => {
                return Err(bad(at(
                    "content must be a string or a list of content parts",
                )))
            }
        }
        turns.push(Turn { role, parts });
    }
    let counts: Vec<usize> = images
        .iter()
        .map(|p| info.config.tokens_per_image(p.grid_thw))
        .collect();
    let ids = info
        .prompt
        .encode_turns(&turns, &counts)
        .map_err(|e| bad(format!("cannot build the prompt: {e:#}")))?;

    let ctx = info.max_context;
    if ids.len() >= ctx {
        return Err(context_error(format!(
            "the prompt is {} tokens (images included) and the model's context is {ctx}: \
             send smaller or fewer images, or less text",
            ids.len()
        )));
    }
    let room = ctx - ids.len();
    let mut opts = info.defaults.clone();
    opts.max_new_tokens = match req.max_completion_tokens.or(req.max_tokens) {
        Some(0) => return Err(bad("max_tokens must be at least 1")),
        Some(n) if n > room as u64 => {
            return Err(context_error(format!(
                "the prompt is {} tokens and max_tokens is {n}: together over the model's \
                 context of {ctx} tokens (at most {room} can be generated)",
                ids.len()
            )))
        }
        Some(n) => n as usize,
        None => opts.max_new_tokens.min(room),
    };
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(bad(format!("temperature must be between 0 and 2, got {t}")));
        }
        opts.sampling.temperature = t;
    }
    if let Some(p) = req.top_p {
        opts.sampling.top_p = p;
    }
    if let Some(k) = req.top_k {
        opts.sampling.top_k = k as usize;
    }
    if let Some(r) = req.repetition_penalty {
        opts.sampling.repetition_penalty = r;
    }
    if let Some(s) = req.seed {
        // OpenAI's seed is any integer; negative ones keep their bits.
        opts.sampling.seed = Some(s as u64);
    }
    opts.sampling
        .validate()
        .map_err(|e| bad(format!("{e:#}")))?;
    if req.ignore_eos == Some(true) {
        opts.stop_at_eos = false;
    }
    let stops = match req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stops.len() > MAX_STOPS {
        return Err(bad(format!(
            "stop has {} sequences: at most {MAX_STOPS}",
            stops.len()
        )));
    }
    if stops.iter().any(String::is_empty) {
        return Err(bad("stop sequences must not be empty"));
    }
    Ok(PreparedChat {
        ids,
        images,
        opts,
        stops,
        stream: req.stream.unwrap_or(false),
        include_usage: req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

/// OpenAI's `context_length_exceeded` error.
fn context_error(message: String) -> ApiError {
    ApiError::bad_request(message).with_code("context_length_exceeded")
}

/// base64 as clients write it: standard alphabet, with or without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The image an `image_url` names: a `data:` URI, or a `file://` path under `--allow-dir`.
/// Remote URLs are refused: the server runs offline and fetches nothing.
fn load_image(url: &str, limits: &Limits) -> Result<image::RgbImage, String> {
    let bytes = if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or("a data: URI needs a comma before its data")?;
        if !meta.ends_with(";base64") {
            return Err("the data: URI must be base64 (data:image/png;base64,...)".into());
        }
        let media = &meta[..meta.len() - ";base64".len()];
        if media.eq_ignore_ascii_case("application/pdf") {
            return Err("PDFs are read by POST /v1/ocr, not as chat images".into());
        }
        // A base64 text of n bytes decodes to at most 3n/4: refuse before decoding.
        if data.len() / 4 * 3 > limits.max_image_bytes {
            return Err(format!(
                "the image is over {} bytes",
                limits.max_image_bytes
            ));
        }
        BASE64
            .decode(data.trim())
            .map_err(|e| format!("the data: URI is not valid base64: {e}"))?
    } else if let Some(path) = url.strip_prefix("file://") {
        read_allowed(Path::new(path), limits)?
    } else if url.starts_with("http://") || url.starts_with("https://") {
        return Err(
            "the server does not fetch URLs (it runs offline): send the image inline as a \
             data: URI (data:image/png;base64,...)"
                .into(),
        );
    } else {
        return Err(
            "image_url.url must be a data: URI (or a file:// path under --allow-dir)".into(),
        );
    };
    let decode = DecodeOptions {
        max_pixels: limits.max_image_pixels,
    };
    load_rgb_from_bytes(&bytes, &decode).map_err(|e| format!("cannot read the image: {e}"))
}

/// Reads `path` when it resolves (links followed) to a file inside `--allow-dir`.
fn read_allowed(path: &Path, limits: &Limits) -> Result<Vec<u8>, String> {
    let Some(dir) = &limits.allow_dir else {
        return Err("file:// image URLs are off: start ove serve with --allow-dir DIR".into());
    };
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if !real.starts_with(dir) {
        return Err(format!(
            "{} is outside the allowed directory",
            path.display()
        ));
    }
    let meta =
        std::fs::metadata(&real).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if meta.len() > limits.max_image_bytes as u64 {
        return Err(format!(
            "{} is over {} bytes",
            path.display(),
            limits.max_image_bytes
        ));
    }
    std::fs::read(&real).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(dir: Option<&Path>) -> Limits {
        Limits {
            max_image_pixels: 1 << 20,
            max_image_bytes: 1 << 20,
            allow_dir: dir.map(|d| d.canonicalize().unwrap()),
        }
    }

    #[test]
    fn file_urls_are_read_only_inside_the_allowed_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let allowed = tmp.path().join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(allowed.join("in.png"), b"inside").unwrap();
        std::fs::write(tmp.path().join("out.png"), b"outside").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("out.png"), allowed.join("link.png")).unwrap();
        let l = limits(Some(&allowed));
        assert_eq!(
            read_allowed(&allowed.join("in.png"), &l).unwrap(),
            b"inside"
        );
        let escapes = [
            tmp.path().join("out.png"),
            allowed.join("../out.png"),
            allowed.join("link.png"),
        ];
        for p in escapes {
            let e = read_allowed(&p, &l).unwrap_err();
            assert!(e.contains("outside the allowed directory"), "{p:?}: {e}");
        }
        assert!(read_allowed(&allowed.join("in.png"), &limits(None))
            .unwrap_err()
            .contains("--allow-dir"));
        let small = Limits {
            max_image_bytes: 3,
            ..l
        };
        assert!(read_allowed(&allowed.join("in.png"), &small)
            .unwrap_err()
            .contains("over 3 bytes"));
    }

    #[test]
    fn data_uris_decode_with_or_without_padding() {
        let l = limits(None);
        for uri in ["data:image/png;base64,aGk", "data:image/png;base64,aGk="] {
            // Two bytes are no image: the error comes from the decoder, after base64.
            let e = load_image(uri, &l).unwrap_err();
            assert!(e.contains("cannot read the image"), "{uri}: {e}");
        }
        assert!(load_image("data:image/png,hi", &l)
            .unwrap_err()
            .contains("base64"));
        assert!(load_image("data:application/pdf;base64,aGk=", &l)
            .unwrap_err()
            .contains("/v1/ocr"));
        assert!(load_image("ftp://x", &l).unwrap_err().contains("data: URI"));
    }
}
