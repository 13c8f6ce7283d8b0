//! The HTTP side: routes, the API-key check, request logs and metrics, body limits.
//!
//! Handlers never run the model: they check a request, push it on the queue and wait for
//! the model thread's answer (or stream it). Every error is a JSON body
//! ([`ApiError`]), including the ones axum would answer in plain text (an unknown route, a
//! wrong method, a bad query).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use ove_runtime::pages::{iter_pages_from_bytes, PageOptions};
use ove_runtime::read::{pages_text, DEFAULT_OCR_PROMPT};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::chat::{self, Limits};
use crate::error::ApiError;
use crate::metrics::{Gauges, Metrics};
use crate::queue::{JobQueue, Refused};
use crate::worker::{ChatEvent, ChatJob, Job, ModelInfo, OcrJob};
use crate::ServeOptions;

/// Extra time a handler waits past a request's deadline for the model thread to say so
/// itself (it checks between tokens).
const DEADLINE_GRACE: Duration = Duration::from_secs(5);

/// What every handler shares.
pub struct AppState {
    pub opts: ServeOptions,
    /// Set once the model is loaded.
    pub info: OnceLock<Arc<ModelInfo>>,
    pub queue: Arc<JobQueue<Job>>,
    pub metrics: Arc<Metrics>,
    /// sha256 of the API key, when one is set.
    key: Option<[u8; 32]>,
    next_id: AtomicU64,
    /// Makes ids differ between runs of the server.
    salt: u64,
}

impl AppState {
    pub fn new(opts: ServeOptions, queue: Arc<JobQueue<Job>>, metrics: Arc<Metrics>) -> Self {
        let key = opts.api_key.as_deref().map(digest);
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            opts,
            info: OnceLock::new(),
            queue,
            metrics,
            key,
            next_id: AtomicU64::new(1),
            salt,
        }
    }

    fn ready(&self) -> Result<Arc<ModelInfo>, ApiError> {
        self.info.get().cloned().ok_or_else(ApiError::loading)
    }

    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Relaxed);
        format!("{:06x}{n:06x}", self.salt & 0xff_ffff)
    }

    fn limits(&self) -> Limits {
        Limits {
            max_image_pixels: self.opts.page.max_image_pixels,
            max_image_bytes: self.opts.max_body_bytes,
            allow_dir: self.opts.allow_dir.clone(),
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.opts.timeout
    }

    fn push(&self, job: Job) -> Result<(), ApiError> {
        self.queue.try_push(job).map_err(|r| match r {
            Refused::Full(_) => ApiError::busy(self.queue.capacity(), 1),
            Refused::Closed(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the server is shutting down",
            ),
        })
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Compares the request's bearer token with the key in constant time: both are hashed
/// first, so neither the length nor the first differing byte of the key leaks.
fn authorized(headers: &HeaderMap, key: &[u8; 32]) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| digest(t.trim()));
    match given {
        Some(g) => g.iter().zip(key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0,
        None => false,
    }
}

/// The route a path belongs to, as logs and metrics name it.
fn endpoint(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat",
        "/v1/ocr" => "ocr",
        "/v1/models" => "models",
        "/health" => "health",
        "/metrics" => "metrics",
        _ => "other",
    }
}

/// Marks a streamed answer: its stream logs and counts it when it ends.
#[derive(Clone, Copy)]
struct Streamed;

/// Tokens of an answer, for its log line.
#[derive(Clone, Copy)]
struct Tokens(usize);

/// The request's id (`x-request-id`, and the completion's id).
#[derive(Clone)]
struct RequestId(String);

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/ocr", post(ocr))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Checks the API key, then logs one line per request and counts it (streamed answers do
/// both when their stream ends).
async fn observe(State(s): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let ep = endpoint(req.uri().path());
    let id = s.new_id();
    let method = req.method().clone();
    let open = matches!(ep, "health");
    let mut resp = match &s.key {
        Some(key) if !open && !authorized(req.headers(), key) => {
            ApiError::unauthorized().into_response()
        }
        _ => {
            req.extensions_mut().insert(RequestId(id.clone()));
            next.run(req).await
        }
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if resp.extensions().get::<Streamed>().is_none() {
        let status = resp.status().as_u16();
        let tokens = resp.extensions().get::<Tokens>().map_or(0, |t| t.0);
        let ms = t0.elapsed().as_millis();
        s.metrics.request(ep, status, t0.elapsed());
        tracing::info!(id = %id, %method, endpoint = ep, status, tokens, ms, "request");
    }
    resp
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!(
            "no route {} {}: the server has POST /v1/chat/completions, POST /v1/ocr, \
             GET /v1/models, GET /health and GET /metrics",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("method {method} is not allowed on this route"),
    )
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    match s.info.get() {
        Some(info) => Json(json!({"status": "ok", "model": info.id})).into_response(),
        None => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "loading"})),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(5));
            r
        }
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let text = s.metrics.render(&Gauges {
        queue_depth: s.queue.len(),
        queue_capacity: s.queue.capacity(),
        ready: s.info.get().is_some(),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn models(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let info = s.ready()?;
    Ok(Json(json!({
        "object": "list",
        "data": [{"id": info.id, "object": "model", "created": info.created, "owned_by": "ove"}],
    }))
    .into_response())
}

/// The media type of a request, lower case, parameters dropped.
fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// The whole body, refused with 413 past `limit` (at once when Content-Length says so).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    match to_bytes(body, limit).await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => {
            // to_bytes' error is the limit or the connection failing mid-body.
            let source = std::error::Error::source(&e).map(|s| s.to_string());
            if format!("{e} {source:?}").contains("length limit") {
                Err(ApiError::too_large(limit))
            } else {
                Err(ApiError::bad_request(format!(
                    "cannot read the request body: {e}"
                )))
            }
        }
    }
}

async fn chat_completions(
    State(s): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let info = s.ready()?;
    let id = req
        .extensions()
        .get::<RequestId>()
        .map_or_else(|| s.new_id(), |r| r.0.clone());
    let (parts, body) = req.into_parts();
    let ct = content_type(&parts.headers);
    if ct != "application/json" {
        return Err(ApiError::unsupported_type(&ct, "application/json"));
    }
    let body = read_body(&parts.headers, body, s.opts.max_body_bytes).await?;
    let request = chat::parse(&body)?;
    drop(body);
    let limits = s.limits();
    let info2 = info.clone();
    let prepared = tokio::task::spawn_blocking(move || chat::prepare(request, &info2, &limits))
        .await
        .map_err(|e| ApiError::internal(format!("preparing the request failed: {e}")))??;
    let stream = prepared.stream;
    let include_usage = prepared.include_usage;
    let (tx, rx) = mpsc::unbounded_channel();
    let deadline = s.deadline();
    s.push(Job::Chat(ChatJob {
        chat: prepared,
        events: tx,
        deadline,
    }))?;
    let completion = Completion {
        id: format!("chatcmpl-{id}"),
        created: crate::unix_now(),
        model: info.id.clone(),
    };
    if stream {
        return Ok(stream_chat(
            s.clone(),
            completion,
            rx,
            include_usage,
            deadline,
        ));
    }
    let mut rx = rx;
    let mut text = String::new();
    let until = tokio::time::Instant::from_std(deadline + DEADLINE_GRACE);
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(ChatEvent::Text(t))) => text.push_str(&t),
            Ok(Some(ChatEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            })) => {
                let body = json!({
                    "id": completion.id,
                    "object": "chat.completion",
                    "created": completion.created,
                    "model": completion.model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null,
                        "finish_reason": finish,
                    }],
                    "usage": usage(prompt_tokens, completion_tokens),
                });
                let mut r = Json(body).into_response();
                r.extensions_mut().insert(Tokens(completion_tokens));
                return Ok(r);
            }
            Ok(Some(ChatEvent::Failed(e))) => return Err(e),
            Ok(None) => return Err(ApiError::internal("the model failed on this request")),
            Err(_) => return Err(ApiError::timeout()),
        }
    }
}

fn usage(prompt: usize, completion: usize) -> serde_json::Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The fields every chunk of one completion repeats.
#[derive(Clone)]
struct Completion {
    id: String,
    created: u64,
    model: String,
}

impl Completion {
    fn chunk(&self, delta: serde_json::Value, finish: Option<&str>) -> Event {
        let body = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        Event::default().data(body.to_string())
    }
}

/// Logs and counts a streamed answer when its stream ends, or is dropped because the
/// client left.
struct StreamLog {
    state: Arc<AppState>,
    id: String,
    t0: Instant,
    tokens: usize,
    status: u16,
    finished: bool,
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        let ms = self.t0.elapsed().as_millis();
        self.state
            .metrics
            .request("chat", self.status, self.t0.elapsed());
        let (id, status, tokens) = (&self.id, self.status, self.tokens);
        if self.finished {
            tracing::info!(id = %id, method = "POST", endpoint = "chat", status, tokens, ms, stream = true, "request");
        } else {
            tracing::info!(id = %id, method = "POST", endpoint = "chat", status, tokens, ms, stream = true, "request: the client left mid-stream");
        }
    }
}

/// Server-sent events: a role chunk, a chunk per text piece, a chunk with the finish
/// reason, a usage chunk when asked for, then `data: [DONE]`. An error after the first
/// chunk is sent as an `{"error": ...}` event (OpenAI clients raise it) and ends the stream.
fn stream_chat(
    state: Arc<AppState>,
    c: Completion,
    rx: mpsc::UnboundedReceiver<ChatEvent>,
    include_usage: bool,
    deadline: Instant,
) -> Response {
    let log = StreamLog {
        id: c.id.clone(),
        state,
        t0: Instant::now(),
        tokens: 0,
        status: 200,
        finished: false,
    };
    let first = c.chunk(json!({"role": "assistant", "content": ""}), None);
    let until = tokio::time::Instant::from_std(deadline + DEADLINE_GRACE);
    let events = futures_util::stream::unfold(
        (rx, log, c, false),
        move |(mut rx, mut log, c, done)| async move {
            if done {
                return None;
            }
            let failure = match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(ChatEvent::Text(t))) => {
                    let ev = vec![c.chunk(json!({"content": t}), None)];
                    return Some((ev, (rx, log, c, false)));
                }
                Ok(Some(ChatEvent::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                })) => {
                    log.tokens = completion_tokens;
                    log.finished = true;
                    let mut ev = vec![c.chunk(json!({}), Some(finish))];
                    if include_usage {
                        let body = json!({
                            "id": c.id, "object": "chat.completion.chunk", "created": c.created,
                            "model": c.model, "choices": [],
                            "usage": usage(prompt_tokens, completion_tokens),
                        });
                        ev.push(Event::default().data(body.to_string()));
                    }
                    ev.push(Event::default().data("[DONE]"));
                    return Some((ev, (rx, log, c, true)));
                }
                Ok(Some(ChatEvent::Failed(e))) => e,
                Ok(None) => ApiError::internal("the model failed on this request"),
                Err(_) => ApiError::timeout(),
            };
            // One error event, and the stream ends.
            log.status = failure.status.as_u16();
            log.finished = true;
            let ev = vec![Event::default().data(failure.body().to_string())];
            Some((ev, (rx, log, c, true)))
        },
    );
    let stream = futures_util::stream::once(async move { vec![first] })
        .chain(events)
        .flat_map(|v| {
            futures_util::stream::iter(v.into_iter().map(Ok::<_, std::convert::Infallible>))
        });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    r.extensions_mut().insert(Streamed);
    r
}

/// `/v1/ocr`'s query.
#[derive(Debug, Default, Deserialize)]
struct OcrQuery {
    /// `text` (the default: what `ove ocr` prints) or `json` (what `ove ocr --json` prints).
    #[serde(default)]
    format: Option<String>,
    /// The instruction for each page or line (the default OCR prompt).
    #[serde(default)]
    prompt: Option<String>,
}

async fn ocr(
    State(s): State<Arc<AppState>>,
    query: Result<Query<OcrQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("bad query: {e}")))?;
    let json_out = match q.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format={other:?}: give text or json"
            )))
        }
    };
    s.ready()?;
    let limit = s.opts.max_body_bytes;
    let ct = content_type(req.headers());
    let (name, bytes) = if ct == "multipart/form-data" {
        upload_from_multipart(req, limit).await?
    } else if ct.starts_with("image/")
        || ct == "application/pdf"
        || ct == "application/octet-stream"
    {
        let (parts, body) = req.into_parts();
        (
            "upload".to_string(),
            read_body(&parts.headers, body, limit).await?,
        )
    } else {
        return Err(ApiError::unsupported_type(
            &ct,
            "an image or PDF as the body (image/*, application/pdf, application/octet-stream) \
             or multipart/form-data with a file",
        ));
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the upload is empty"));
    }
    let page_opts: PageOptions = s.opts.page;
    let pages =
        tokio::task::spawn_blocking(move || iter_pages_from_bytes(&bytes, &name, &page_opts))
            .await
            .map_err(|e| ApiError::internal(format!("reading the upload failed: {e}")))?
            .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let (tx, rx) = oneshot::channel();
    let deadline = s.deadline();
    s.push(Job::Ocr(OcrJob {
        pages,
        instruction: q.prompt.unwrap_or_else(|| DEFAULT_OCR_PROMPT.to_string()),
        reply: tx,
        deadline,
    }))?;
    let until = tokio::time::Instant::from_std(deadline + DEADLINE_GRACE);
    let records = match tokio::time::timeout_at(until, rx).await {
        Ok(Ok(r)) => r?,
        Ok(Err(_)) => return Err(ApiError::internal("the model failed on this request")),
        Err(_) => return Err(ApiError::timeout()),
    };
    let r = if json_out {
        Json(&records).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            pages_text(records.iter().map(|p| p.text.as_str())),
        )
            .into_response()
    };
    Ok(r)
}

/// The first file of a multipart upload (a part with a file name, else the part named
/// `file`), within `limit` bytes in all.
async fn upload_from_multipart(req: Request, limit: usize) -> Result<(String, Vec<u8>), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(&parts.headers, body, limit).await?;
    let req = Request::from_parts(parts, Body::from(bytes));
    let mut form = axum::extract::Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("bad multipart body: {e}")))?;
    loop {
        let field = form
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("bad multipart body: {e}")))?;
        let Some(field) = field else {
            return Err(ApiError::bad_request(
                "the multipart body has no file: send the image or PDF as a part named `file`",
            ));
        };
        let name = field.file_name().map(str::to_string);
        if name.is_some() || field.name() == Some("file") {
            let data = field
                .bytes()
                .await
                .map_err(|e| ApiError::bad_request(format!("bad multipart body: {e}")))?;
            return Ok((name.unwrap_or_else(|| "upload".into()), data.to_vec()));
        }
    }
}
