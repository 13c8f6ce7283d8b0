//! `ove serve`'s request handling: raw HTTP/1.1 bytes go through hyper's connection and the
//! real router (API routes, JSON errors, body limits, chat requests with data URIs and
//! `file://` images, `/v1/ocr` uploads raw or multipart, PDFs).
//!
//! The model is never reached: the queue holds no place, so a request that passes every
//! check is answered 429, after everything that reads the request has run. A connection
//! must end within [`CONNECTION_BOUND`], and no answer may be a 500 (an internal error is
//! what a panic on a blocking thread turns into). `OVE_FUZZ_SHOW=1` prints each answer
//! (`ove-fuzz replay serve FILE`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use ove_core::prompt::PromptBuilder;
use ove_runtime::pages::PageOptions;
use ove_runtime::read::ReadMode;
use ove_runtime::GenerateOptions;
use ove_serve::metrics::Metrics;
use ove_serve::queue::JobQueue;
use ove_serve::routes::{router, AppState};
use ove_serve::worker::ModelInfo;
use ove_serve::ServeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{fixtures, MAX_PIXELS};

/// How long one connection (all the requests in one input) may take.
const CONNECTION_BOUND: Duration = Duration::from_secs(10);

struct Server {
    rt: tokio::runtime::Runtime,
    app: Router,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let fx = fixtures::get();
        let m = &fx.manifest;
        let opts = ServeOptions {
            host: "127.0.0.1".into(),
            port: 0,
            model_id: "fuzz".into(),
            api_key: None,
            max_concurrent: 1,
            queue: 0,
            max_body_bytes: 1 << 20,
            timeout: Duration::from_secs(5),
            allow_dir: Some(fx.allowed.clone()),
            page: PageOptions {
                dpi: 24.0,
                max_pages: 3,
                max_page_pixels: 600_000,
                max_image_pixels: MAX_PIXELS,
            },
        };
        let prompt = PromptBuilder::from_file(&fx.tokenizer_path, m.tokens.clone())
            .expect("the built-in tokenizer loads");
        let info = ModelInfo {
            id: "fuzz".into(),
            created: 0,
            max_context: m.max_context,
            config: m.model.clone(),
            preprocessor: m.preprocessor.clone(),
            prompt: Arc::new(prompt),
            defaults: GenerateOptions::default(),
            read_mode: ReadMode {
                layout: m.reading.layout,
                reader: m.reading.reader,
                batch: 1,
                scales: 1,
                reread_below: 0.0,
            },
        };
        let state = Arc::new(AppState::new(
            opts,
            Arc::new(JobQueue::new(0)),
            Arc::new(Metrics::default()),
        ));
        if state.info.set(Arc::new(info)).is_err() {
            unreachable!("a new state has no model yet");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Server {
            rt,
            app: router(state),
        }
    })
}

pub fn serve(data: &[u8]) {
    let s = server();
    let answer = s.rt.block_on(async {
        let (client, server_io) = tokio::io::duplex(64 << 10);
        let conn = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(
                TokioIo::new(server_io),
                TowerToHyperService::new(s.app.clone()),
            );
        let (mut rd, mut wr) = tokio::io::split(client);
        let send = async {
            let _ = wr.write_all(data).await;
            let _ = wr.shutdown().await;
        };
        let receive = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        tokio::time::timeout(CONNECTION_BOUND, async {
            let (_, _, out) = tokio::join!(conn, send, receive);
            out
        })
        .await
    });
    let out =
        answer.unwrap_or_else(|_| panic!("the connection did not end in {CONNECTION_BOUND:?}"));
    if std::env::var_os("OVE_FUZZ_SHOW").is_some() {
        eprintln!("{}", String::from_utf8_lossy(&out));
    }
    // The first answer's status line (later answers of pipelined requests could only be
    // told apart from echoed request text by parsing lengths; the first is enough).
    assert!(
        !out.starts_with(b"HTTP/1.1 500"),
        "an internal server error: {}",
        String::from_utf8_lossy(&out[..out.len().min(400)])
    );
}
