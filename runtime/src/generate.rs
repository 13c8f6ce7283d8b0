//! A loaded model and what it does: encode images, prefill a prompt, generate tokens.
//!
//! The decoder graph sees only embeddings: the runtime gathers token embeddings, splices
//! each image's merged embeddings over its pads, builds positions and the causal bias,
//! and carries the KV cache from step to step, so the prompt runs exactly once.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ove_core::ctc::CtcHead;
use ove_core::manifest::Manifest;
use ove_core::preprocess::{self, DecodeOptions, Preprocessed};

use crate::backend::{
    self, Backend, BackendKind, BackendOptions, DecoderInputs, Dims, LineBatchInputs, VisionInputs,
};
use crate::bundle::{Bundle, Verify};
use crate::embed::{splice_images, Embeddings};
use crate::gen_config::GenerateOverrides;
use crate::kv::KvCache;
use crate::mask::{causal_bias, position_ids};
use crate::sampling::{Sampler, SamplingOptions};

mod batch;
pub use batch::{BatchPrompt, BatchRequest};

/// How to open a bundle.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub verify: Verify,
    pub backend: BackendOptions,
    /// A context length below the manifest's `max_context` (`ove run --max-context`): the
    /// longest sequence, prompt plus generated tokens, this model runs, and so the largest
    /// KV cache it holds. `None`: the manifest's. Larger than the manifest's: the manifest's.
    pub max_context: Option<usize>,
}

/// One image through vision.onnx: the rows that replace its pads.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedImage {
    /// `(t, h, w)` of the patch grid.
    pub grid_thw: [usize; 3],
    /// `[P, D]`, for tracing.
    pub vision_tokens: Vec<f32>,
    /// `[P / 4, H]`.
    pub image_embeds: Vec<f32>,
    /// LLM tokens (image pads) this image fills: the rows of `image_embeds`.
    pub tokens: usize,
    /// Wall time of the vision.onnx call.
    pub elapsed: Duration,
}

/// The images of one prompt so far, for encoding the next one.
///
/// The reference encodes all images of a prompt as one sequence and drops only the first
/// class token, which shifts each later image's rows (docs/BUNDLE.md, vision.onnx): image
/// `i >= 1` takes the last `i - 1` rows of the earlier images' `vision_states` as `carry`.
/// This holds those rows from one image to the next.
#[derive(Debug, Clone, Default)]
pub struct VisionContext {
    images: usize,
    /// The last rows of the concatenated `vision_states` of the images so far (`D` each).
    tail: Vec<f32>,
}

impl VisionContext {
    /// A new prompt: the next image is its first.
    pub fn new() -> Self {
        Self::default()
    }
    /// Images encoded in this prompt so far.
    pub fn images(&self) -> usize {
        self.images
    }
}

/// The decoding state of one sequence: its KV cache and the ids it holds.
#[derive(Debug)]
pub struct Sequence {
    cache: KvCache,
    ids: Vec<i64>,
}

impl Sequence {
    /// Tokens run so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.cache.len()
    }
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
    /// Every id run so far, prompt and generated.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }
}

/// Which prompt rows get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// Only the last (what generation needs).
    Last,
    /// Every row (tracing).
    All,
}

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingOptions,
    /// Stop at any end-of-turn / eos id of the manifest (the token itself is kept in
    /// [`Generation::tokens`] but not passed to the callback).
    pub stop_at_eos: bool,
    /// Prompt tokens per decoder call during prefill; `None` runs the whole prompt at once.
    /// Chunks bound the attention scratch (`heads x S x T` floats) on long prompts.
    pub prefill_chunk: Option<usize>,
}

/// Greedy, [`crate::gen_config::DEFAULT_MAX_NEW_TOKENS`], stopping at eos: what a bundle
/// without a generation_config.json gets. [`Model::default_options`] reads the bundle's.
impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOverrides::default().resolve(&Default::default())
    }
}

/// Prefill chunk of the CLI: keeps a 4B model's attention scratch near 0.5 GB for a
/// 4k-token page.
pub const DEFAULT_PREFILL_CHUNK: usize = 1024;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An eos / end-of-turn id was generated.
    Eos,
    MaxNewTokens,
    /// The sequence reached [`Model::max_context`] (the bundle's, or a lower one from
    /// [`LoadOptions::max_context`]).
    MaxContext,
    /// The callback asked to stop.
    Stopped,
}

/// The result of [`Model::generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<i64>,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    pub prefill_time: Duration,
    /// Time of the single-token decoder steps (one fewer than the tokens, at most).
    pub decode_time: Duration,
    pub decode_steps: usize,
}

/// A bundle loaded on a backend.
pub struct Model {
    bundle: Bundle,
    backend: Box<dyn Backend>,
    embeddings: Embeddings,
    dims: Dims,
    eos: Vec<i64>,
    /// `min(LoadOptions::max_context, manifest max_context)`.
    max_context: usize,
    /// The CTC line reader's head, when the bundle carries one (`graphs.ctc_head`).
    ctc_head: Option<CtcHead>,
    load_time: Duration,
}

impl Model {
    /// Opens and verifies the bundle, then starts the backend on it.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let start = Instant::now();
        let bundle = Bundle::open(dir, opts.verify)?;
        let max_context = match opts.max_context {
            Some(0) => bail!("max context 0: a sequence needs at least one token"),
            Some(n) if n > bundle.manifest().max_context => {
                tracing::warn!(
                    requested = n,
                    bundle = bundle.manifest().max_context,
                    "max context above the bundle's max_context; using the bundle's"
                );
                bundle.manifest().max_context
            }
            Some(n) => n,
            None => bundle.manifest().max_context,
        };
        let dims = Dims::from_manifest(bundle.manifest());
        let embeddings = Embeddings::open(&bundle.embeddings_path()?, dims.hidden)?;
        if embeddings.vocab() < dims.vocab {
            tracing::debug!(
                "embedding table has {} rows, vocabulary {}",
                embeddings.vocab(),
                dims.vocab
            );
        }
        let ctc_head = match &bundle.manifest().graphs.ctc_head {
            Some(rel) => {
                let path = bundle.manifest().path_of(bundle.dir(), rel)?;
                let head = CtcHead::load(&path)?;
                if head.d != dims.vision_hidden {
                    bail!(
                        "{}: the CTC head reads {}-wide tokens, the vision encoder gives {}",
                        path.display(),
                        head.d,
                        dims.vision_hidden
                    );
                }
                Some(head)
            }
            None => None,
        };
        let backend = backend::create(&bundle, &opts.backend)?;
        let t = &bundle.manifest().tokens;
        let mut eos = t.eos.clone();
        if let Some(end) = t.im_end {
            if !eos.contains(&end) {
                eos.push(end);
            }
        }
        Ok(Self {
            bundle,
            backend,
            embeddings,
            dims,
            eos,
            max_context,
            ctc_head,
            load_time: start.elapsed(),
        })
    }

    /// The bundle's CTC line-reader head, if it carries one.
    pub fn ctc_head(&self) -> Option<&CtcHead> {
        self.ctc_head.as_ref()
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }
    pub fn manifest(&self) -> &Manifest {
        self.bundle.manifest()
    }
    /// The bundle's generation_config.json as options (see [`crate::gen_config`]); put a
    /// caller's values over it with [`GenerateOverrides::resolve`].
    /// The bundle's tokenizer and token ids as a prompt builder with `system` as the system
    /// message; an error names the bundle when it has no tokenizer.json.
    pub fn prompt_builder(&self, system: &str) -> Result<ove_core::prompt::PromptBuilder> {
        let Some(path) = self.bundle.tokenizer_path()? else {
            anyhow::bail!(
                "bundle {} has no tokenizer.json (its checkpoint had none), so text prompts \
                 cannot be encoded; `ove trace` runs token ids directly",
                self.bundle.dir().display()
            );
        };
        Ok(
            ove_core::prompt::PromptBuilder::from_file(&path, self.manifest().tokens.clone())?
                .with_system(system),
        )
    }

    pub fn default_options(&self) -> GenerateOptions {
        GenerateOverrides::default().resolve(&self.manifest().generation)
    }
    pub fn backend_kind(&self) -> BackendKind {
        self.backend.kind()
    }
    pub fn describe_backend(&self) -> String {
        self.backend.describe()
    }
    /// Time [`Model::load`] took: verification, parsing and both graphs.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
    /// The longest sequence (prompt plus generated tokens) this model runs: the manifest's
    /// `max_context`, or [`LoadOptions::max_context`] where that is lower.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// Where the [`Model::max_context`] limit comes from, for messages.
    fn context_limit(&self) -> String {
        if self.max_context < self.manifest().max_context {
            format!(
                "the max context of {} this model was loaded with (the bundle allows {})",
                self.max_context,
                self.manifest().max_context
            )
        } else {
            format!("the bundle's max_context of {}", self.max_context)
        }
    }
    pub fn vocab(&self) -> usize {
        self.dims.vocab
    }
    pub fn hidden(&self) -> usize {
        self.dims.hidden
    }
    /// The ids generation stops at: the manifest's eos list plus end of turn.
    pub fn eos_ids(&self) -> &[i64] {
        &self.eos
    }

    /// Decodes and preprocesses an image file with the bundle's preprocessor config.
    pub fn preprocess_image(&self, path: &Path) -> Result<Preprocessed> {
        preprocess::preprocess_file(
            path,
            &self.manifest().preprocessor,
            &DecodeOptions::default(),
        )
        // The preprocessing error names the file already.
        .context("cannot preprocess the image")
    }

    /// Runs vision.onnx on the only (or first) image of a prompt (`[P, 588]` in reference
    /// patch order).
    pub fn encode_image(
        &mut self,
        pixel_values: &[f32],
        grid_thw: [usize; 3],
    ) -> Result<EncodedImage> {
        self.encode_image_in(&mut VisionContext::new(), pixel_values, grid_thw)
    }

    /// Runs vision.onnx on the next image of a prompt whose earlier images went through
    /// `ctx` (images must be encoded in prompt order, see [`VisionContext`]).
    pub fn encode_image_in(
        &mut self,
        ctx: &mut VisionContext,
        pixel_values: &[f32],
        grid_thw: [usize; 3],
    ) -> Result<EncodedImage> {
        let merge = self.manifest().model.vision_config.spatial_merge_size;
        let [t, h, w] = grid_thw;
        if t == 0 || h == 0 || w == 0 || !h.is_multiple_of(merge) || !w.is_multiple_of(merge) {
            bail!("image grid {grid_thw:?} is not a positive multiple of the merge size {merge}");
        }
        let patches = t * h * w;
        if pixel_values.len() != patches * self.dims.patch_dim {
            bail!(
                "pixel_values has {} values; grid {grid_thw:?} needs {patches} x {}",
                pixel_values.len(),
                self.dims.patch_dim
            );
        }
        let pos: Vec<i64> = preprocess::patch_positions(grid_thw, merge)
            .into_iter()
            .flatten()
            .collect();
        let d = self.dims.vision_hidden;
        let i = ctx.images;
        let (carry, window): (&[f32], Vec<i64>) = if i == 0 {
            (&[], (1..=patches as i64).collect())
        } else {
            let rows = i - 1;
            (
                &ctx.tail[ctx.tail.len() - rows * d..],
                (0..patches as i64).collect(),
            )
        };
        let start = Instant::now();
        let out = self.backend.vision(&VisionInputs {
            pixel_values,
            patch_pos: &pos,
            carry,
            window_index: &window,
        })?;
        let elapsed = start.elapsed();
        // The next image needs the last `i` rows of everything so far.
        ctx.tail.extend_from_slice(&out.vision_states);
        let keep = (i + 1) * d;
        if ctx.tail.len() > keep {
            ctx.tail.drain(..ctx.tail.len() - keep);
        }
        ctx.images += 1;
        Ok(EncodedImage {
            grid_thw,
            tokens: out.image_embeds.len() / self.dims.hidden,
            vision_tokens: out.vision_tokens,
            image_embeds: out.image_embeds,
            elapsed,
        })
    }

    /// Runs lines.onnx on a batch of line crops ([`crate::line_batch`] packs them).
    pub fn encode_line_batch(&mut self, x: &LineBatchInputs<'_>) -> Result<Vec<f32>> {
        self.backend.lines(x)
    }

    /// Encodes the images of one prompt, in prompt order.
    pub fn encode_images(&mut self, images: &[(&[f32], [usize; 3])]) -> Result<Vec<EncodedImage>> {
        let mut ctx = VisionContext::new();
        images
            .iter()
            .enumerate()
            .map(|(i, (px, grid))| {
                self.encode_image_in(&mut ctx, px, *grid)
                    .with_context(|| format!("image {}", i + 1))
            })
            .collect()
    }

    /// Preprocesses and encodes the only (or first) image of a prompt.
    pub fn encode_image_file(&mut self, path: &Path) -> Result<EncodedImage> {
        self.encode_image_file_in(&mut VisionContext::new(), path)
    }

    /// Preprocesses and encodes the next image of a prompt.
    pub fn encode_image_file_in(
        &mut self,
        ctx: &mut VisionContext,
        path: &Path,
    ) -> Result<EncodedImage> {
        let p = self.preprocess_image(path)?;
        self.encode_image_in(ctx, &p.pixel_values, p.grid_thw)
            .with_context(|| format!("encoding {}", path.display()))
    }

    /// An empty sequence.
    pub fn new_sequence(&self) -> Sequence {
        Sequence {
            cache: KvCache::new(self.dims.kv),
            ids: Vec::new(),
        }
    }

    /// Runs prompt ids through the decoder, appending them to `seq`; each image's
    /// embeddings replace one run of image pads, in order. Returns the logits of the
    /// requested rows, `[rows, V]`.
    pub fn prefill(
        &mut self,
        seq: &mut Sequence,
        ids: &[i64],
        images: &[&EncodedImage],
        rows: LogitRows,
        chunk: Option<usize>,
    ) -> Result<Vec<f32>> {
        self.check_prompt(seq.len(), ids, images)?;
        let h = self.dims.hidden;
        let embeds = self.prompt_embeds(ids, images)?;

        let chunk = chunk.unwrap_or(ids.len()).max(1);
        let mut logits = Vec::new();
        let mut start = 0;
        while start < ids.len() {
            let end = (start + chunk).min(ids.len());
            let s = end - start;
            let last_chunk = end == ids.len();
            let index: Vec<i64> = match rows {
                LogitRows::All => (0..s as i64).collect(),
                LogitRows::Last if last_chunk => vec![s as i64 - 1],
                // Earlier chunks of a generation prefill only fill the cache; one row of
                // logits is still asked for, since a graph output cannot be empty in tract.
                LogitRows::Last => vec![s as i64 - 1],
            };
            let out = self.run_decoder(&mut seq.cache, &embeds[start * h..end * h], &index)?;
            if rows == LogitRows::All || last_chunk {
                logits.extend_from_slice(&out);
            }
            seq.ids.extend_from_slice(&ids[start..end]);
            start = end;
        }
        Ok(logits)
    }

    /// Runs one generated token; returns its logits `[V]`.
    pub fn step(&mut self, seq: &mut Sequence, token: i64) -> Result<Vec<f32>> {
        if seq.len() + 1 > self.max_context() {
            bail!("the sequence has reached {}", self.context_limit());
        }
        let embeds = self.embeddings.gather(&[token])?;
        let logits = self.run_decoder(&mut seq.cache, &embeds, &[0])?;
        seq.ids.push(token);
        Ok(logits)
    }

    /// Refuses a prompt that does not fit the context after `cached` tokens.
    fn check_prompt(&self, cached: usize, ids: &[i64], images: &[&EncodedImage]) -> Result<()> {
        if ids.is_empty() {
            bail!("empty prompt");
        }
        let total = cached + ids.len();
        if total > self.max_context() {
            let image_tokens: usize = images.iter().map(|i| i.tokens).sum();
            bail!(
                "the prompt is {} tokens ({image_tokens} of them image tokens){}, more than \
                 {}; use a shorter prompt, fewer or smaller images, or a larger --max-context \
                 (re-export the bundle with one beyond its own)",
                ids.len(),
                if cached == 0 {
                    String::new()
                } else {
                    format!(" after {cached} earlier tokens")
                },
                self.context_limit()
            );
        }
        Ok(())
    }

    /// The decoder's input rows of a prompt `[len, H]`: token embeddings, each image's
    /// merged embeddings over its run of pads.
    fn prompt_embeds(&self, ids: &[i64], images: &[&EncodedImage]) -> Result<Vec<f32>> {
        let mut embeds = self.embeddings.gather(ids)?;
        let rows_of: Vec<&[f32]> = images.iter().map(|i| i.image_embeds.as_slice()).collect();
        splice_images(
            ids,
            &mut embeds,
            self.dims.hidden,
            self.manifest().tokens.image_pad,
            &rows_of,
        )?;
        Ok(embeds)
    }

    fn run_decoder(
        &mut self,
        cache: &mut KvCache,
        embeds: &[f32],
        index: &[i64],
    ) -> Result<Vec<f32>> {
        let past = cache.len();
        let s = embeds.len() / self.dims.hidden;
        let pos = position_ids(past, s);
        let bias = causal_bias(past, s);
        let inputs = DecoderInputs {
            batch: 1,
            inputs_embeds: embeds,
            position_ids: &pos,
            attention_bias: &bias,
            logits_index: index,
        };
        self.backend.decoder(&inputs, cache)
    }

    /// Prefills `ids` (with `images` spliced in) and generates up to `max_new_tokens`,
    /// calling `on_token` with each new id as it is chosen; the callback can stop early.
    pub fn generate(
        &mut self,
        ids: &[i64],
        images: &[&EncodedImage],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(i64) -> ControlFlow<()>,
    ) -> Result<Generation> {
        opts.sampling.validate()?;
        let mut sampler = Sampler::new(opts.sampling.clone());
        sampler.observe(ids);
        let mut seq = self.new_sequence();
        let t0 = Instant::now();
        let mut logits =
            self.prefill(&mut seq, ids, images, LogitRows::Last, opts.prefill_chunk)?;
        let prefill_time = t0.elapsed();
        let mut gen = Generation {
            tokens: Vec::new(),
            finish: FinishReason::MaxNewTokens,
            prompt_tokens: ids.len(),
            prefill_time,
            decode_time: Duration::ZERO,
            decode_steps: 0,
        };
        if opts.max_new_tokens == 0 {
            return Ok(gen);
        }
        let t1 = Instant::now();
        loop {
            let token = sampler.pick(&logits) as i64;
            sampler.observe(&[token]);
            gen.tokens.push(token);
            if opts.stop_at_eos && self.eos.contains(&token) {
                gen.finish = FinishReason::Eos;
                break;
            }
            if on_token(token).is_break() {
                gen.finish = FinishReason::Stopped;
                break;
            }
            if gen.tokens.len() >= opts.max_new_tokens {
                gen.finish = FinishReason::MaxNewTokens;
                break;
            }
            if seq.len() >= self.max_context() {
                // The chosen token is kept but never run: its KV entry would be past the limit.
                tracing::warn!(
                    tokens = seq.len(),
                    generated = gen.tokens.len(),
                    "generation stopped: the context is full ({})",
                    self.context_limit()
                );
                gen.finish = FinishReason::MaxContext;
                break;
            }
            logits = self.step(&mut seq, token)?;
            gen.decode_steps += 1;
        }
        gen.decode_time = t1.elapsed();
        Ok(gen)
    }
}

/// Turns a growing list of generated ids into text pieces for printing as they come.
///
/// Each call decodes everything generated so far and returns what is new; text that ends
/// in an incomplete UTF-8 sequence (a byte-level token splitting a character) is held back
/// until the next token completes it.
pub struct TextStream<'a> {
    prompt: &'a ove_core::prompt::PromptBuilder,
    ids: Vec<i64>,
    shown: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(prompt: &'a ove_core::prompt::PromptBuilder) -> Self {
        Self {
            prompt,
            ids: Vec::new(),
            shown: 0,
        }
    }

    /// Adds a token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: i64) -> Result<String> {
        self.ids.push(id);
        let text = self.prompt.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}')
            || text.len() < self.shown
            || !text.is_char_boundary(self.shown)
        {
            return Ok(String::new());
        }
        let piece = text[self.shown..].to_string();
        self.shown = text.len();
        Ok(piece)
    }

    /// What [`Self::push`] has not returned yet, at the end of generation: text held back
    /// for a character the last tokens left incomplete (shown as U+FFFD).
    pub fn finish(&mut self) -> Result<String> {
        let text = self.prompt.decode(&self.ids)?;
        let rest = text.get(self.shown..).unwrap_or_default().to_string();
        self.shown = text.len();
        Ok(rest)
    }

    /// All text so far.
    pub fn text(&self) -> Result<String> {
        self.prompt.decode(&self.ids)
    }
}
