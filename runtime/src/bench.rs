//! `ove bench`: the numbers that decide whether a bundle is usable on a device: vision
//! encoder time per image, prefill and decode throughput, load time and peak memory.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::generate::{
    BatchPrompt, EncodedImage, GenerateOptions, LogitRows, Model, DEFAULT_PREFILL_CHUNK,
};
use crate::sampling::{argmax, SamplingOptions};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Image to encode and put in the prompt; `None` benchmarks text only.
    pub image: Option<std::path::PathBuf>,
    /// Text tokens in the prompt besides the image's.
    pub text_tokens: usize,
    /// Generated tokens timed for decode speed.
    pub decode_tokens: usize,
    /// Timed vision encoder runs (after one untimed warm-up).
    pub vision_runs: usize,
    pub prefill_chunk: Option<usize>,
    /// Rows of the batched decode measurement: that many text prompts decoded together
    /// ([`Model::generate_batch`]), timed beside the single sequence. 1: not measured.
    pub decode_rows: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            image: None,
            text_tokens: 32,
            decode_tokens: 32,
            vision_runs: 3,
            prefill_chunk: Some(DEFAULT_PREFILL_CHUNK),
            decode_rows: 1,
        }
    }
}

/// Results; `ove bench --json` prints this.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub backend: String,
    pub backend_detail: String,
    pub bundle_dtype: String,
    pub load_ms: f64,
    pub image_patches: Option<usize>,
    pub image_tokens: Option<usize>,
    pub vision_ms_per_image: Option<f64>,
    pub prefill_tokens: usize,
    pub prefill_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens: usize,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
    /// Several sequences decoded together, when asked for (`decode_rows` > 1).
    pub batch_decode: Option<BatchDecodeReport>,
    /// `VmHWM` of the process (Linux), MiB.
    pub peak_rss_mib: Option<f64>,
}

/// `rows` text prompts of the benchmark's length decoded together: the decode steps of
/// all rows over the time of the group's steps (each step one decoder call for all rows;
/// with an unbatched graph the rows run one after another).
#[derive(Debug, Clone, Serialize)]
pub struct BatchDecodeReport {
    pub rows: usize,
    /// Rows one decoder call took ([`Model::max_decoder_rows`]).
    pub rows_per_call: usize,
    pub tokens: usize,
    pub ms: f64,
    pub tokens_per_s: f64,
}

/// Peak resident set size of this process in bytes (`VmHWM` in /proc/self/status).
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kb| kb * 1024)
}

/// A `KEY: N kB` field of /proc/self/status (Linux), in KiB; `key` includes the colon.
pub(crate) fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Filler prompt ids that are ordinary tokens: spread over the vocabulary, avoiding the
/// special ids (which sit at the top of the released vocabulary and of the test ones).
fn filler(n: usize, vocab: usize, avoid: &[i64]) -> Vec<i64> {
    let range = (vocab as i64 * 3 / 4).max(1);
    (0..n as i64)
        .map(|i| (i * 7919 + 13) % range)
        .map(|t| {
            if avoid.contains(&t) {
                (t + 1) % range
            } else {
                t
            }
        })
        .collect()
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the measurements on a loaded model.
pub fn bench(model: &mut Model, opts: &BenchOptions) -> Result<BenchReport> {
    let tokens = model.manifest().tokens.clone();
    let avoid: Vec<i64> = [
        Some(tokens.image_pad),
        tokens.vision_start,
        tokens.vision_end,
        tokens.im_start,
        tokens.im_end,
    ]
    .into_iter()
    .flatten()
    .chain(tokens.eos.iter().copied())
    .collect();

    let mut image: Option<EncodedImage> = None;
    let mut vision_ms = None;
    let mut patches = None;
    if let Some(path) = &opts.image {
        let pre = model.preprocess_image(path)?;
        patches = Some(pre.grid_thw.iter().product::<usize>());
        // Warm-up: the first call pays for allocations and (ORT) kernel selection.
        let first = model.encode_image(&pre.pixel_values, pre.grid_thw)?;
        let runs = opts.vision_runs.max(1);
        let mut total = 0.0;
        for _ in 0..runs {
            total += ms(model.encode_image(&pre.pixel_values, pre.grid_thw)?.elapsed);
        }
        vision_ms = Some(total / runs as f64);
        image = Some(first);
    }

    let mut ids = Vec::new();
    if let Some(img) = &image {
        ids.extend(tokens.vision_start);
        ids.extend(std::iter::repeat_n(tokens.image_pad, img.tokens));
        ids.extend(tokens.vision_end);
    }
    ids.extend(filler(opts.text_tokens.max(1), model.vocab(), &avoid));
    let images: Vec<&EncodedImage> = image.iter().collect();

    // Warm up the decoder on a short prompt and two steps.
    {
        let warm = filler(8, model.vocab(), &avoid);
        let mut seq = model.new_sequence();
        let l = model.prefill(&mut seq, &warm, &[], LogitRows::Last, None)?;
        let l = model.step(&mut seq, argmax(&l) as i64)?;
        model.step(&mut seq, argmax(&l) as i64)?;
    }

    let mut seq = model.new_sequence();
    let t0 = Instant::now();
    let mut logits = model.prefill(&mut seq, &ids, &images, LogitRows::Last, opts.prefill_chunk)?;
    let prefill = t0.elapsed();

    let steps = opts
        .decode_tokens
        .min(model.max_context().saturating_sub(seq.len()));
    let t1 = Instant::now();
    for _ in 0..steps {
        let token = argmax(&logits) as i64;
        logits = model.step(&mut seq, token)?;
    }
    let decode = t1.elapsed();

    let batch_decode = if opts.decode_rows > 1 && steps > 0 {
        let text = filler(opts.text_tokens.max(1), model.vocab(), &avoid);
        let prompts: Vec<BatchPrompt<'_>> = (0..opts.decode_rows)
            .map(|_| BatchPrompt {
                ids: &text,
                images: &[],
            })
            .collect();
        let gen = GenerateOptions {
            max_new_tokens: steps + 1,
            stop_at_eos: false,
            sampling: SamplingOptions::greedy(),
            prefill_chunk: opts.prefill_chunk,
        };
        let gens = model.generate_batch(&prompts, &gen)?;
        let tokens: usize = gens.iter().map(|g| g.decode_steps).sum();
        // Groups run one after another; each row reports its group's time.
        let mut ms_total = 0.0;
        for group in gens.chunks(model.max_decoder_rows()) {
            ms_total += ms(group[0].decode_time);
        }
        Some(BatchDecodeReport {
            rows: opts.decode_rows,
            rows_per_call: model.max_decoder_rows(),
            tokens,
            ms: ms_total,
            tokens_per_s: tokens as f64 / (ms_total / 1e3),
        })
    } else {
        None
    };

    Ok(BenchReport {
        backend: model.backend_kind().to_string(),
        backend_detail: model.describe_backend(),
        bundle_dtype: model.manifest().dtype.clone(),
        load_ms: ms(model.load_time()),
        image_patches: patches,
        image_tokens: image.as_ref().map(|i| i.tokens),
        vision_ms_per_image: vision_ms,
        prefill_tokens: ids.len(),
        prefill_ms: ms(prefill),
        prefill_tokens_per_s: ids.len() as f64 / prefill.as_secs_f64(),
        decode_tokens: steps,
        decode_ms: ms(decode),
        decode_tokens_per_s: if steps == 0 {
            0.0
        } else {
            steps as f64 / decode.as_secs_f64()
        },
        batch_decode,
        peak_rss_mib: peak_rss_bytes().map(|b| b as f64 / (1024.0 * 1024.0)),
    })
}

impl BenchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("backend".into(), self.backend_detail.clone()),
            ("bundle dtype".into(), self.bundle_dtype.clone()),
            ("load".into(), format!("{:.1} ms", self.load_ms)),
        ];
        if let (Some(ms), Some(p), Some(t)) = (
            self.vision_ms_per_image,
            self.image_patches,
            self.image_tokens,
        ) {
            rows.push((
                "vision encoder".into(),
                format!("{ms:.1} ms/image ({p} patches -> {t} tokens)"),
            ));
        }
        rows.push((
            "prefill".into(),
            format!(
                "{:.1} tokens/s ({} tokens in {:.1} ms)",
                self.prefill_tokens_per_s, self.prefill_tokens, self.prefill_ms
            ),
        ));
        rows.push((
            "decode".into(),
            format!(
                "{:.1} tokens/s ({} tokens in {:.1} ms)",
                self.decode_tokens_per_s, self.decode_tokens, self.decode_ms
            ),
        ));
        if let Some(b) = &self.batch_decode {
            rows.push((
                format!("decode x{}", b.rows),
                format!(
                    "{:.1} tokens/s ({} tokens in {:.1} ms, {} rows a call)",
                    b.tokens_per_s, b.tokens, b.ms, b.rows_per_call
                ),
            ));
        }
        rows.push((
            "peak RSS".into(),
            self.peak_rss_mib
                .map(|m| format!("{m:.1} MiB"))
                .unwrap_or_else(|| "n/a".into()),
        ));
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<w$}  {v}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 0);
        }
    }

    #[test]
    fn filler_avoids_special_ids() {
        let f = filler(1000, 2048, &[13, 1655]);
        assert!(f
            .iter()
            .all(|&t| t != 13 && t != 1655 && (0..1536).contains(&t)));
    }
}
