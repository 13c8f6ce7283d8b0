//! The model thread: it loads the bundle, then serves the queue, one batch at a time.
//!
//! The model is not shared: one thread owns it and runs every request, so the HTTP side
//! never blocks on it and a slow generation never holds a lock. Chat requests waiting
//! together are decoded together ([`Model::generate_each`]: one decoder call a step for
//! all, each request with its own options); an OCR request reads its pages with the
//! runtime's line batching. Every token is checked against its client: one that went away
//! (its event channel closed) or ran past its deadline stops there, alone.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use ove_core::config::{ModelConfig, PreprocessorConfig};
use ove_core::prompt::{PromptBuilder, DEFAULT_SYSTEM};
use ove_runtime::pages::PageIter;
use ove_runtime::read::{read_page, PageRecord, ReadMode};
use ove_runtime::{
    BatchPrompt, BatchRequest, EncodedImage, FinishReason, GenerateOptions, Model, TextStream,
};
use tokio::sync::{mpsc, oneshot};

use crate::chat::PreparedChat;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::queue::JobQueue;
use crate::stops::StopMatcher;

/// What the HTTP side needs to know of the loaded model.
pub struct ModelInfo {
    /// The name `GET /v1/models` gives.
    pub id: String,
    /// Unix time the model was loaded.
    pub created: u64,
    pub max_context: usize,
    pub config: ModelConfig,
    pub preprocessor: PreprocessorConfig,
    pub prompt: Arc<PromptBuilder>,
    /// The bundle's generation defaults (generation_config.json), before a request's own.
    pub defaults: GenerateOptions,
    /// How `/v1/ocr` reads a page: what the manifest says the model reads best.
    pub read_mode: ReadMode,
}

impl ModelInfo {
    fn of(model: &Model, id: String) -> Result<Self> {
        let m = model.manifest();
        Ok(Self {
            id,
            created: crate::unix_now(),
            max_context: model.max_context(),
            config: m.model.clone(),
            preprocessor: m.preprocessor.clone(),
            prompt: Arc::new(model.prompt_builder(DEFAULT_SYSTEM)?),
            defaults: model.default_options(),
            read_mode: ReadMode::of(model),
        })
    }
}

/// What a chat request's handler hears from the model thread, in order: text pieces, then
/// `Done` or `Failed`.
#[derive(Debug)]
pub enum ChatEvent {
    Text(String),
    Done {
        /// OpenAI's finish_reason: `stop` or `length`.
        finish: &'static str,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(ApiError),
}

pub struct ChatJob {
    pub chat: PreparedChat,
    pub events: mpsc::UnboundedSender<ChatEvent>,
    pub deadline: Instant,
}

pub struct OcrJob {
    pub pages: PageIter,
    pub instruction: String,
    pub reply: oneshot::Sender<Result<Vec<PageRecord>, ApiError>>,
    pub deadline: Instant,
}

pub enum Job {
    Chat(ChatJob),
    Ocr(OcrJob),
}

/// Loads the model on a thread of its own and serves `queue` until it closes. `ready`
/// hears the model's description once it is loaded, or the reason it could not be.
pub fn spawn(
    load: crate::Loader,
    model_id: String,
    queue: Arc<JobQueue<Job>>,
    metrics: Arc<Metrics>,
    max_rows: usize,
    ready: oneshot::Sender<Result<Arc<ModelInfo>, String>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ove-model".into())
        .spawn(move || {
            let loaded = load().and_then(|m| {
                let info = Arc::new(ModelInfo::of(&m, model_id)?);
                Ok((m, info))
            });
            let (mut model, info) = match loaded {
                Ok(x) => x,
                Err(e) => {
                    let _ = ready.send(Err(format!("{e:#}")));
                    return;
                }
            };
            let _ = ready.send(Ok(info.clone()));
            // An unbatched decoder graph (bundle schema <= 3) decodes one request at a
            // time: the others wait in the queue, where they count and can be refused.
            let max_rows = max_rows.min(model.max_decoder_rows()).max(1);
            tracing::info!(rows = max_rows, "requests decoded together at most");
            let both_chat = |a: &Job, b: &Job| matches!((a, b), (Job::Chat(_), Job::Chat(_)));
            while let Some(batch) = queue.next_batch(max_rows, both_chat) {
                // A panic inside the model is this batch's failure, not the server's: its
                // jobs are dropped, so their handlers answer 500, and the next batch runs.
                let served = catch_unwind(AssertUnwindSafe(|| {
                    serve_batch(&mut model, &info, &metrics, batch)
                }));
                if served.is_err() {
                    tracing::error!("the model panicked on a batch; its requests failed");
                }
            }
        })
}

fn serve_batch(model: &mut Model, info: &ModelInfo, metrics: &Metrics, batch: Vec<Job>) {
    let mut chats = Vec::new();
    for job in batch {
        match job {
            Job::Chat(c) => chats.push(c),
            Job::Ocr(o) => serve_ocr(model, info, metrics, o),
        }
    }
    if !chats.is_empty() {
        serve_chats(model, info, metrics, chats);
    }
}

/// Why a row stopped before the model was done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// A stop sequence was generated.
    Stop,
    /// The client went away.
    Gone,
    TimedOut,
}

/// One chat request being decoded.
struct Row<'a> {
    job: ChatJob,
    text: TextStream<'a>,
    stops: StopMatcher,
    cut: Option<Cut>,
}

impl Row<'_> {
    /// Passes one token's text on; says whether the row goes on.
    fn token(&mut self, id: i64) -> ControlFlow<()> {
        if self.job.events.is_closed() {
            self.cut = Some(Cut::Gone);
            return ControlFlow::Break(());
        }
        if Instant::now() > self.job.deadline {
            self.cut = Some(Cut::TimedOut);
            return ControlFlow::Break(());
        }
        let piece = match self.text.push(id) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("cannot decode token {id}: {e:#}");
                String::new()
            }
        };
        self.send_text(&piece);
        if self.stops.matched() {
            self.cut = Some(Cut::Stop);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn send_text(&mut self, piece: &str) {
        let out = self.stops.push(piece);
        if !out.is_empty() {
            let _ = self.job.events.send(ChatEvent::Text(out));
        }
    }
}

fn serve_chats(model: &mut Model, info: &ModelInfo, metrics: &Metrics, jobs: Vec<ChatJob>) {
    let mut rows = Vec::with_capacity(jobs.len());
    let mut encoded: Vec<Vec<EncodedImage>> = Vec::with_capacity(jobs.len());
    for job in jobs {
        if job.events.is_closed() {
            metrics.cancelled.fetch_add(1, Relaxed);
            continue;
        }
        if Instant::now() > job.deadline {
            let _ = job.events.send(ChatEvent::Failed(ApiError::timeout()));
            continue;
        }
        let images: Vec<(&[f32], [usize; 3])> = job
            .chat
            .images
            .iter()
            .map(|p| (p.pixel_values.as_slice(), p.grid_thw))
            .collect();
        match model.encode_images(&images) {
            Ok(e) => encoded.push(e),
            Err(e) => {
                let _ = job
                    .events
                    .send(ChatEvent::Failed(ApiError::internal(format!(
                        "cannot encode the images: {e:#}"
                    ))));
                continue;
            }
        }
        rows.push(Row {
            text: TextStream::new(&info.prompt),
            stops: StopMatcher::new(job.chat.stops.clone()),
            cut: None,
            job,
        });
    }
    if rows.is_empty() {
        return;
    }
    let refs: Vec<Vec<&EncodedImage>> = encoded.iter().map(|e| e.iter().collect()).collect();
    let owned: Vec<(Vec<i64>, GenerateOptions)> = rows
        .iter()
        .map(|r| (r.job.chat.ids.clone(), r.job.chat.opts.clone()))
        .collect();
    let reqs: Vec<BatchRequest<'_>> = owned
        .iter()
        .zip(&refs)
        .map(|((ids, opts), images)| BatchRequest {
            prompt: BatchPrompt { ids, images },
            opts,
        })
        .collect();
    let n = rows.len() as u64;
    metrics.in_progress.fetch_add(n, Relaxed);
    let result = model.generate_each(&reqs, |i, id| rows[i].token(id));
    metrics.in_progress.fetch_sub(n, Relaxed);
    let gens = match result {
        Ok(g) => g,
        Err(e) => {
            let msg = format!("generation failed: {e:#}");
            tracing::error!("{msg}");
            for r in rows {
                let _ = r
                    .job
                    .events
                    .send(ChatEvent::Failed(ApiError::internal(msg.clone())));
            }
            return;
        }
    };
    let mut tokens = 0;
    let decode = gens.iter().map(|g| g.decode_time).max().unwrap_or_default();
    for (mut row, g) in rows.into_iter().zip(gens) {
        tokens += g.tokens.len();
        metrics
            .generated_tokens
            .fetch_add(g.tokens.len() as u64, Relaxed);
        metrics
            .prompt_tokens
            .fetch_add(g.prompt_tokens as u64, Relaxed);
        let finish = match row.cut {
            Some(Cut::Gone) => {
                metrics.cancelled.fetch_add(1, Relaxed);
                continue;
            }
            Some(Cut::TimedOut) => {
                let _ = row.job.events.send(ChatEvent::Failed(ApiError::timeout()));
                continue;
            }
            Some(Cut::Stop) => "stop",
            None => {
                let rest = row.text.finish().unwrap_or_default();
                row.send_text(&rest);
                if row.stops.matched() {
                    "stop"
                } else {
                    let rest = row.stops.finish();
                    if !rest.is_empty() {
                        let _ = row.job.events.send(ChatEvent::Text(rest));
                    }
                    match g.finish {
                        FinishReason::MaxNewTokens | FinishReason::MaxContext => "length",
                        FinishReason::Eos | FinishReason::Stopped => "stop",
                    }
                }
            }
        };
        let _ = row.job.events.send(ChatEvent::Done {
            finish,
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.tokens.len(),
        });
    }
    metrics.batch(n as usize, tokens, decode);
}

fn serve_ocr(model: &mut Model, info: &ModelInfo, metrics: &Metrics, job: OcrJob) {
    let OcrJob {
        pages,
        instruction,
        reply,
        deadline,
    } = job;
    metrics.in_progress.fetch_add(1, Relaxed);
    let name = pages.name().to_string();
    let mut records = Vec::new();
    let mut outcome = Ok(());
    for page in pages {
        if reply.is_closed() {
            metrics.cancelled.fetch_add(1, Relaxed);
            outcome = Err(None);
            break;
        }
        if Instant::now() > deadline {
            outcome = Err(Some(ApiError::timeout()));
            break;
        }
        let read = page
            .map_err(|e| ApiError::bad_request(format!("{e:#}")))
            .and_then(|page| {
                read_page(
                    model,
                    &info.prompt,
                    &instruction,
                    &page.image,
                    info.read_mode,
                    &info.defaults,
                )
                .map(|r| (page.index, r))
                .map_err(|e| ApiError::internal(format!("{name}: page {}: {e:#}", page.index + 1)))
            });
        match read {
            Ok((index, r)) => {
                metrics
                    .generated_tokens
                    .fetch_add(r.generated_tokens as u64, Relaxed);
                records.push(PageRecord::new(name.clone(), index, r));
            }
            Err(e) => {
                outcome = Err(Some(e));
                break;
            }
        }
    }
    metrics.in_progress.fetch_sub(1, Relaxed);
    match outcome {
        Ok(()) => {
            let _ = reply.send(Ok(records));
        }
        Err(Some(e)) => {
            let _ = reply.send(Err(e));
        }
        Err(None) => {}
    }
}
