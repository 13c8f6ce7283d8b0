//! Generating for several prompts at once: one decoder call per step for all of them.
//!
//! The rows share one KV cache of the same number of slots each ([`KvCache::with_rows`]);
//! shorter prompts are padded, and a row that has finished pads its slot of every later
//! step. [`BatchMask`] masks the padding for every real query of its row and gives each row
//! its own positions, so a row generates what it generates alone: the same tokens (its
//! logits differ only by the rounding of sums that now include exact zeros).
//!
//! Rows are decoded in groups of [`Model::max_decoder_rows`] (1 for a bundle whose decoder
//! graph is unbatched, schema <= 3: those run one by one through [`Model::generate`]).
//!
//! [`Model::generate_each`] is the general form: each row has its own options (a service
//! batches requests that asked for different lengths and sampling) and every token is
//! passed to a callback with its row, which can stop that row alone (a client that left).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{EncodedImage, FinishReason, GenerateOptions, Generation, Model};
use crate::backend::DecoderInputs;
use crate::kv::KvCache;
use crate::mask::{BatchMask, BatchStep};
use crate::sampling::Sampler;

/// One prompt of a batch: its ids and the images spliced over its pads, in order.
#[derive(Debug, Clone, Copy)]
pub struct BatchPrompt<'a> {
    pub ids: &'a [i64],
    pub images: &'a [&'a EncodedImage],
}

/// One prompt of a batch with the options it is generated under.
#[derive(Debug, Clone, Copy)]
pub struct BatchRequest<'a> {
    pub prompt: BatchPrompt<'a>,
    pub opts: &'a GenerateOptions,
}

/// The decoding state of one row.
struct Row<'a> {
    opts: &'a GenerateOptions,
    sampler: Sampler,
    gen: Generation,
    /// The logits its next token is picked from.
    logits: Vec<f32>,
    done: bool,
}

impl Model {
    /// The most prompts one decoder call takes (see [`crate::backend::Backend::max_decoder_rows`]).
    pub fn max_decoder_rows(&self) -> usize {
        self.backend.max_decoder_rows().max(1)
    }

    /// Generates for every prompt as [`Model::generate`] would for it alone (no streaming
    /// callback), decoding up to [`Model::max_decoder_rows`] prompts together. The
    /// generations come back in the order of `prompts`; their times are their group's.
    pub fn generate_batch(
        &mut self,
        prompts: &[BatchPrompt<'_>],
        opts: &GenerateOptions,
    ) -> Result<Vec<Generation>> {
        let reqs: Vec<BatchRequest<'_>> = prompts
            .iter()
            .map(|&prompt| BatchRequest { prompt, opts })
            .collect();
        self.generate_each(&reqs, |_, _| ControlFlow::Continue(()))
    }

    /// Generates for every request under its own options, as [`Model::generate`] would for
    /// it alone, decoding up to [`Model::max_decoder_rows`] requests together.
    /// `on_token(i, id)` is called with each new id of request `i` (an index into `reqs`)
    /// as it is chosen, eos ids excepted, exactly as `generate`'s callback; `Break` stops
    /// that request alone ([`FinishReason::Stopped`]). The generations come back in the
    /// order of `reqs`; their times are their group's.
    pub fn generate_each(
        &mut self,
        reqs: &[BatchRequest<'_>],
        mut on_token: impl FnMut(usize, i64) -> ControlFlow<()>,
    ) -> Result<Vec<Generation>> {
        for r in reqs {
            r.opts.sampling.validate()?;
        }
        let group = self.max_decoder_rows();
        let mut out = Vec::with_capacity(reqs.len());
        for (g, rows) in reqs.chunks(group).enumerate() {
            let first = g * group;
            if let [r] = rows {
                let gen = self
                    .generate(r.prompt.ids, r.prompt.images, r.opts, |t| {
                        on_token(first, t)
                    })
                    .with_context(|| format!("prompt {}", first + 1))?;
                out.push(gen);
            } else {
                let gens = self
                    .generate_rows(rows, |r, t| on_token(first + r, t))
                    .with_context(|| {
                        format!(
                            "prompts {}..={} decoded together",
                            first + 1,
                            first + rows.len()
                        )
                    })?;
                out.extend(gens);
            }
        }
        Ok(out)
    }

    /// One group: a padded prefill of all rows, then one step a token for the rows still
    /// running.
    fn generate_rows(
        &mut self,
        reqs: &[BatchRequest<'_>],
        mut on_token: impl FnMut(usize, i64) -> ControlFlow<()>,
    ) -> Result<Vec<Generation>> {
        let b = reqs.len();
        let prompts: Vec<BatchPrompt<'_>> = reqs.iter().map(|r| r.prompt).collect();
        let (h, v) = (self.dims.hidden, self.dims.vocab);
        let mut embeds = Vec::with_capacity(b);
        for (i, p) in prompts.iter().enumerate() {
            self.check_prompt(0, p.ids, p.images)
                .with_context(|| format!("row {}", i + 1))?;
            embeds.push(self.prompt_embeds(p.ids, p.images)?);
        }
        let lens: Vec<usize> = prompts.iter().map(|p| p.ids.len()).collect();
        let longest = lens.iter().copied().max().unwrap_or(0);
        let mut rows: Vec<Row> = reqs
            .iter()
            .map(|&BatchRequest { prompt: p, opts }| {
                let mut sampler = Sampler::new(opts.sampling.clone());
                sampler.observe(p.ids);
                Row {
                    opts,
                    sampler,
                    gen: Generation {
                        tokens: Vec::new(),
                        finish: FinishReason::MaxNewTokens,
                        prompt_tokens: p.ids.len(),
                        prefill_time: Duration::ZERO,
                        decode_time: Duration::ZERO,
                        decode_steps: 0,
                    },
                    logits: Vec::new(),
                    done: opts.max_new_tokens == 0,
                }
            })
            .collect();
        let mut cache = KvCache::with_rows(self.dims.kv, b);
        let mut mask = BatchMask::new(b);

        // Prefill in chunks of slots; the attention scratch of a chunk is B times one
        // row's, so a chunk is the single-sequence chunk divided among the rows.
        let t0 = Instant::now();
        // The smallest chunk any row asked for bounds the group's scratch.
        let chunk = reqs
            .iter()
            .filter_map(|r| r.opts.prefill_chunk)
            .min()
            .map_or(longest, |c| (c / b).max(1));
        let mut start = 0;
        while start < longest {
            let end = (start + chunk).min(longest);
            let s = end - start;
            let new: Vec<usize> = lens
                .iter()
                .map(|&n| n.saturating_sub(start).min(s))
                .collect();
            let mut x = vec![0.0f32; b * s * h];
            let (mut index, mut owners) = (Vec::new(), Vec::new());
            for r in 0..b {
                let n = new[r];
                if n > 0 {
                    x[r * s * h..(r * s + n) * h]
                        .copy_from_slice(&embeds[r][start * h..(start + n) * h]);
                }
                // The row's last prompt token is in this chunk: its logits pick token 1.
                if lens[r] > start && lens[r] <= end {
                    index.push((r * s + lens[r] - start - 1) as i64);
                    owners.push(r);
                }
            }
            if index.is_empty() {
                // Only filling the cache; a graph output cannot be empty in tract.
                index.push(0);
            }
            let step = mask.step(&new, s);
            let logits = self.run_rows(&mut cache, &x, &step, &index)?;
            for (k, &r) in owners.iter().enumerate() {
                rows[r].logits = logits[k * v..(k + 1) * v].to_vec();
            }
            start = end;
        }
        let prefill_time = t0.elapsed();

        // Decode: the same checks in the same order as `generate`, row by row.
        let t1 = Instant::now();
        loop {
            let mut next: Vec<Option<i64>> = vec![None; b];
            for (r, row) in rows.iter_mut().enumerate() {
                if row.done {
                    continue;
                }
                let token = row.sampler.pick(&row.logits) as i64;
                row.sampler.observe(&[token]);
                row.gen.tokens.push(token);
                let opts = row.opts;
                let finish = if opts.stop_at_eos && self.eos.contains(&token) {
                    Some(FinishReason::Eos)
                } else if on_token(r, token).is_break() {
                    Some(FinishReason::Stopped)
                } else if row.gen.tokens.len() >= opts.max_new_tokens {
                    Some(FinishReason::MaxNewTokens)
                } else if mask.len(r) >= self.max_context {
                    tracing::warn!(
                        row = r + 1,
                        tokens = mask.len(r),
                        "generation stopped: the context is full ({})",
                        self.context_limit()
                    );
                    Some(FinishReason::MaxContext)
                } else {
                    None
                };
                match finish {
                    Some(f) => {
                        row.gen.finish = f;
                        row.done = true;
                    }
                    None => next[r] = Some(token),
                }
            }
            let active: Vec<usize> = (0..b).filter(|&r| next[r].is_some()).collect();
            if active.is_empty() {
                break;
            }
            let ids: Vec<i64> = active.iter().filter_map(|&r| next[r]).collect();
            let e = self.embeddings.gather(&ids)?;
            let mut x = vec![0.0f32; b * h];
            for (k, &r) in active.iter().enumerate() {
                x[r * h..(r + 1) * h].copy_from_slice(&e[k * h..(k + 1) * h]);
            }
            let new: Vec<usize> = next.iter().map(|t| usize::from(t.is_some())).collect();
            let step = mask.step(&new, 1);
            let index: Vec<i64> = active.iter().map(|&r| r as i64).collect();
            let logits = self.run_rows(&mut cache, &x, &step, &index)?;
            for (k, &r) in active.iter().enumerate() {
                rows[r].logits = logits[k * v..(k + 1) * v].to_vec();
                rows[r].gen.decode_steps += 1;
            }
        }
        let decode_time = t1.elapsed();
        Ok(rows
            .into_iter()
            .map(|r| Generation {
                prefill_time,
                decode_time,
                ..r.gen
            })
            .collect())
    }

    fn run_rows(
        &mut self,
        cache: &mut KvCache,
        embeds: &[f32],
        step: &BatchStep,
        index: &[i64],
    ) -> Result<Vec<f32>> {
        let inputs = DecoderInputs {
            batch: cache.rows(),
            inputs_embeds: embeds,
            position_ids: &step.position_ids,
            attention_bias: &step.attention_bias,
            logits_index: index,
        };
        self.backend.decoder(&inputs, cache)
    }
}
