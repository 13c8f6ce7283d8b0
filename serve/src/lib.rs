//! `ove-serve`: an OpenAI-compatible OCR service over one loaded bundle (`ove serve`).
//!
//! Programs on a device (a scanner app, a document pipeline) already speak the API of
//! llama.cpp's `llama-server`, Ollama and vLLM; this crate serves the same shapes:
//! - `POST /v1/chat/completions`: messages with text and `image_url` parts (`data:` URIs;
//!   `file://` paths only under `--allow-dir`), `stream: true` as server-sent events,
//!   `max_tokens`, `temperature`, `top_p`, `seed`, `stop`, `usage` counts;
//! - `POST /v1/ocr`: an image or PDF upload read as `ove ocr` reads it (text, or with
//!   `?format=json` the pages and lines with their boxes, as `ove ocr --json`);
//! - `GET /v1/models`, `GET /health` (200 only once the model is loaded), `GET /metrics`
//!   (Prometheus text).
//!
//! The pieces: [`routes`] (HTTP: checks, limits, the API key, logs), [`chat`] (the chat
//! request and its prompt), [`queue`] (bounded: a full queue is a 429 at once),
//! [`worker`] (the thread that owns the model and decodes waiting requests together),
//! [`stops`] (stop sequences on streamed text), [`metrics`], [`error`] (JSON errors).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ove_runtime::pages::PageOptions;
use ove_runtime::Model;

pub mod chat;
pub mod error;
pub mod metrics;
pub mod queue;
pub mod routes;
pub mod stops;
pub mod worker;

/// Loads the model; runs on the model thread.
pub type Loader = Box<dyn FnOnce() -> Result<Model> + Send>;

/// How the service runs (the flags of `ove serve`).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    /// 0 picks a free port (the log says which).
    pub port: u16,
    /// The name `GET /v1/models` gives the model.
    pub model_id: String,
    /// Requests must carry `Authorization: Bearer KEY` (all but `/health`).
    pub api_key: Option<String>,
    /// Requests served at once: the rows of one decoder batch.
    pub max_concurrent: usize,
    /// Requests that may wait beyond those; one more is a 429.
    pub queue: usize,
    pub max_body_bytes: usize,
    /// From a request's arrival to the end of its answer.
    pub timeout: Duration,
    /// Where `file://` image URLs may point (canonicalised); `None` refuses them.
    pub allow_dir: Option<PathBuf>,
    /// Page limits of uploads: pixels of an image, pages and dpi of a PDF.
    pub page: PageOptions,
}

/// Binds, loads the model on its own thread and serves until SIGINT or SIGTERM. Fails when
/// the address cannot be bound or the model cannot be loaded (the error says which).
pub fn run(opts: ServeOptions, load: Loader) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ove-http")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(opts, load))
}

async fn serve(opts: ServeOptions, load: Loader) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", opts.host, opts.port))?;
    let addr: SocketAddr = listener.local_addr()?;
    let queue = Arc::new(queue::JobQueue::new(opts.queue));
    let metrics = Arc::new(metrics::Metrics::default());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let state = Arc::new(routes::AppState::new(
        opts.clone(),
        queue.clone(),
        metrics.clone(),
    ));
    worker::spawn(
        load,
        opts.model_id.clone(),
        queue.clone(),
        metrics,
        opts.max_concurrent,
        ready_tx,
    )
    .context("cannot start the model thread")?;
    // Serving starts before the model is loaded: /health answers 503 until it is.
    tracing::info!("listening on http://{addr} (loading the model)");
    let app = routes::router(state.clone());
    let stop = Arc::new(tokio::sync::Notify::new());
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing the requests in progress");
            stop.notify_one();
        }
    });
    let loaded = async {
        match ready_rx.await {
            Ok(Ok(info)) => {
                tracing::info!(model = %info.id, context = info.max_context, "model loaded: ready on http://{addr}");
                let _ = state.info.set(info);
                std::future::pending::<Result<()>>().await
            }
            Ok(Err(e)) => Err(anyhow::anyhow!("cannot load the model: {e}")),
            Err(_) => Err(anyhow::anyhow!("the model thread ended while loading")),
        }
    };
    // After a signal, requests in progress get a bounded time to finish.
    let grace = async {
        stop.notified().await;
        queue.close();
        tokio::time::sleep(Duration::from_secs(10)).await;
        tracing::warn!("requests still running after 10 s: stopping anyway");
    };
    tokio::select! {
        r = server => r.context("the HTTP server failed")?,
        r = loaded => r?,
        () = grace => {}
    }
    queue.close();
    Ok(())
}

/// Seconds since the Unix epoch (OpenAI's `created` fields).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
