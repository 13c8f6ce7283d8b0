//! `ove serve`: the OpenAI-compatible OCR service (the `ove-serve` crate) over one bundle.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ove_runtime::pages::PageOptions;

use super::run::ModelArgs;

/// Serve a bundle over HTTP with OpenAI's chat completions API, plus an OCR upload endpoint.
///
/// The model is loaded once (GET /health answers 200 when it is ready); requests wait in a
/// bounded queue and those waiting together are decoded together. Endpoints:
/// POST /v1/chat/completions (text and image_url parts as data: URIs, stream, max_tokens,
/// temperature, top_p, seed, stop), POST /v1/ocr (an image or PDF as the body or a
/// multipart `file`; ?format=json for lines and boxes, as `ove ocr --json`), GET /v1/models,
/// GET /health, GET /metrics (Prometheus).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    ove serve                                        (the built-in model on 127.0.0.1:8080)\n  \
    ove serve --bundle bundle/ --host 0.0.0.0 --api-key-file /etc/ove/key\n  \
    curl --data-binary @receipt.png -H 'content-type: image/png' localhost:8080/v1/ocr\n\n\
    From Python: openai.OpenAI(base_url=\"http://127.0.0.1:8080/v1\", api_key=\"KEY or anything\")\n\
    .chat.completions.create(model=\"ove\", messages=[{\"role\": \"user\", \"content\": [\n  \
    {\"type\": \"image_url\", \"image_url\": {\"url\": \"data:image/png;base64,...\"}},\n  \
    {\"type\": \"text\", \"text\": \"Read all the text in the image.\"}]}])")]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Address to listen on. The default answers this machine only; give 0.0.0.0 to serve
    /// the network (and set --api-key-file).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0: any free port; the log says which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// A file holding the API key clients must send (`Authorization: Bearer KEY`); every
    /// route but /health needs it. Default: no key.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Requests served at once: the rows decoded together (default: what the bundle's
    /// decoder takes in one call, at most 16).
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<usize>,

    /// Requests that may wait beyond those; one more is answered 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub queue: usize,

    /// Largest request body, in MB (an upload, or a chat request with its images).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_body_mb: usize,

    /// Longest a request may take, waiting included; past it the answer is 504 (a stream
    /// ends with an error event).
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub timeout_s: u64,

    /// Let chat requests name images as file:// paths inside this directory.
    #[arg(long, value_name = "DIR")]
    pub allow_dir: Option<PathBuf>,

    /// The model name GET /v1/models gives (requests may name any model).
    #[arg(long, value_name = "NAME")]
    pub model_name: Option<String>,

    /// Refuse an uploaded PDF with more pages than this.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_pages: usize,

    /// Resolution uploaded PDF pages are rendered at.
    #[arg(long, value_name = "DPI", default_value_t = PageOptions::default().dpi)]
    pub dpi: f32,

    /// Refuse an image whose header announces more pixels than this (decode bombs).
    #[arg(long, value_name = "N", default_value_t = PageOptions::default().max_image_pixels)]
    pub max_image_pixels: u64,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.queue == 0 {
        bail!("--queue 0: give at least 1");
    }
    if args.max_body_mb == 0 || args.max_body_mb > 4096 {
        bail!("--max-body-mb {}: give 1 to 4096", args.max_body_mb);
    }
    if args.timeout_s == 0 {
        bail!("--timeout-s 0: give at least 1");
    }
    let page = PageOptions {
        dpi: args.dpi,
        max_pages: args.max_pages,
        max_image_pixels: args.max_image_pixels,
        ..PageOptions::default()
    };
    page.validate().context("--dpi")?;
    let api_key = match &args.api_key_file {
        Some(f) => {
            let key = std::fs::read_to_string(f)
                .with_context(|| format!("--api-key-file {}: cannot read it", f.display()))?;
            let key = key.trim().to_string();
            if key.is_empty() {
                bail!("--api-key-file {}: the file is empty", f.display());
            }
            Some(key)
        }
        None => None,
    };
    let allow_dir = match &args.allow_dir {
        Some(d) => Some(
            d.canonicalize()
                .with_context(|| format!("--allow-dir {}: cannot open it", d.display()))?,
        ),
        None => None,
    };
    let most = ove_runtime::read::MAX_LINE_BATCH;
    if let Some(n) = args.max_concurrent {
        if !(1..=most).contains(&n) {
            bail!("--max-concurrent {n}: give 1 to {most}");
        }
    }
    let model_id = match (&args.model_name, &args.model.bundle) {
        (Some(n), _) => n.clone(),
        (None, Some(b)) => b
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "ove".into()),
        (None, None) => "ove-default-ocr".into(),
    };
    let opts = ove_serve::ServeOptions {
        host: args.host,
        port: args.port,
        model_id,
        api_key,
        max_concurrent: args.max_concurrent.unwrap_or(most),
        queue: args.queue,
        max_body_bytes: args.max_body_mb << 20,
        timeout: Duration::from_secs(args.timeout_s),
        allow_dir,
        page,
    };
    let model = args.model;
    ove_serve::run(opts, Box::new(move || model.load()))?;
    Ok(ExitCode::SUCCESS)
}
