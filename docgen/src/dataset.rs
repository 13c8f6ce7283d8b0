//! Datasets on disk: `NAME.png` + `NAME.txt` (the folder format `ove eval` reads) and JSONL
//! manifests for training.
//!
//! Manifests written next to the images (image paths are relative to the manifest):
//! - `captions.jsonl` — stages 1 / 1.5: `{"images": ["NAME.png"], "caption": TEXT}`
//! - `ocr.jsonl` — one reading conversation per image, LLaVA style:
//!   `{"images": ["NAME.png"], "conversations": [{"from": "human", "value": "<image>\nRead all the text in the image."}, {"from": "gpt", "value": TEXT}]}`
//! - `stage2.jsonl` — the reading conversation with varied instructions, plus one
//!   conversation per question a document answers ("What is the total?" on receipts, "What
//!   is the value of FIELD?" on forms).
//! - `meta.jsonl` — per image: kind, fonts, degradation level, seed and index.
//!
//! The trainer's own format is token level (`prompt_ids`, `response_ids`); these text-level
//! files need the chat template and tokenizer applied before training.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, RgbImage};
use ove_core::layout_metrics::LineBox;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::augment::{degrade_page, map_box};
use crate::fonts::{FontSpec, LoadedFont};
use crate::generate::{generate, Document, Kind};

/// The instruction `ove ocr` uses by default.
pub const READ_PROMPT: &str = "Read all the text in the image.";

const READ_VARIANTS: &[&str] = &[
    READ_PROMPT,
    READ_PROMPT,
    READ_PROMPT,
    "Read all the text.",
    "Transcribe the text in this image, line by line.",
    "What does this document say? Give the exact text.",
    "OCR this image.",
];

/// How much to degrade the pages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Degradation {
    /// As rendered.
    Clean,
    /// Every page at this level (0..=1).
    Level(f32),
    /// Each page at a level drawn uniformly from 0..=1.
    Mixed,
}

impl Degradation {
    /// `clean`, `degraded` (level 0.7), `mixed` or a number in 0..=1.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "clean" => Degradation::Clean,
            "degraded" => Degradation::Level(0.7),
            "mixed" => Degradation::Mixed,
            n => {
                let v: f32 = n.parse().with_context(|| {
                    format!("degradation {n:?}: use clean, degraded, mixed or a level in 0..1")
                })?;
                anyhow::ensure!(
                    (0.0..=1.0).contains(&v),
                    "degradation level {v} is not in 0..1"
                );
                Degradation::Level(v)
            }
        })
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    pub kinds: Vec<Kind>,
    pub seed: u64,
    pub degradation: Degradation,
}

/// One generated image with its ground truth.
pub struct Sample {
    pub name: String,
    pub index: u64,
    pub document: Document,
    pub image: RgbImage,
    /// Exact text: lines top to bottom, joined with newlines.
    pub text: String,
    pub level: f32,
    /// Catalogue names of the fonts drawn with.
    pub fonts: Vec<&'static str>,
    /// The reading instruction chosen for stage 2.
    pub read_prompt: &'static str,
    /// The ink box of each text line in `image` (after the degradation's rotation and
    /// perspective), top to bottom: the layout stage's ground truth.
    pub lines: Vec<LineBox>,
    /// The text of each line of `lines`, in the same order.
    pub line_texts: Vec<String>,
}

/// `NAME.lines.json`, written beside each image: its size and its lines' boxes and texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinesFile {
    pub image: String,
    pub width: u32,
    pub height: u32,
    pub lines: Vec<TruthLine>,
}

/// One ground-truth text line: its box (half-open pixels) and its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthLine {
    pub bbox: LineBox,
    pub text: String,
}

/// Makes sample `index`: depends only on the seed, the index, the kinds and the fonts.
pub fn sample(pool: &[LoadedFont], opts: &Options, index: u64) -> Result<Sample> {
    anyhow::ensure!(!opts.kinds.is_empty(), "no document kinds");
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    rng.set_stream(index);
    let kind = opts.kinds[(index % opts.kinds.len() as u64) as usize];
    let document = generate(kind, pool, &mut rng)?;
    let clean = document.layout.render(pool);
    let level = match opts.degradation {
        Degradation::Clean => 0.0,
        Degradation::Level(l) => l,
        Degradation::Mixed => rng.gen_range(0.0..=1.0),
    };
    let boxes = document.layout.line_boxes(&clean, pool);
    let degraded = degrade_page(&clean, level, document.layout.paper, &mut rng);
    let image = degraded.image;
    let (mut lines, mut line_texts) = (Vec::new(), Vec::new());
    for (b, text) in boxes.into_iter().zip(document.layout.line_texts()) {
        let Some(b) = b else { continue };
        lines.push(match &degraded.warp {
            Some(h) => map_box(h, b, image.width(), image.height()),
            None => b,
        });
        line_texts.push(text);
    }
    let mut fonts: Vec<&'static str> = Vec::new();
    for item in &document.layout.items {
        if let crate::render::Item::Line { segments, .. } = item {
            for s in segments {
                let name = pool[s.font].spec.name;
                if !fonts.contains(&name) {
                    fonts.push(name);
                }
            }
        }
    }
    let read_prompt = READ_VARIANTS[rng.gen_range(0..READ_VARIANTS.len())];
    Ok(Sample {
        name: format!("{}-{index:06}", kind.name()),
        index,
        text: document.text(),
        document,
        image,
        level,
        fonts,
        read_prompt,
        lines,
        line_texts,
    })
}

/// PNG bytes (best compression; the same image gives the same bytes).
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    PngEncoder::new_with_quality(&mut buf, CompressionType::Best, FilterType::Adaptive)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .context("encoding PNG")?;
    Ok(buf)
}

fn conversation(image: &str, question: &str, answer: &str) -> serde_json::Value {
    json!({
        "images": [image],
        "conversations": [
            {"from": "human", "value": format!("<image>\n{question}")},
            {"from": "gpt", "value": answer},
        ]
    })
}

/// What [`write_set`] wrote.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub images: usize,
    pub stage2_records: usize,
}

/// Samples `indices` with their PNG bytes, in index order, made on up to `threads` threads.
fn render(
    pool: &[LoadedFont],
    opts: &Options,
    indices: std::ops::Range<u64>,
    threads: u64,
) -> Result<Vec<(Sample, Vec<u8>)>> {
    let per = (indices.end - indices.start).div_ceil(threads).max(1);
    let end = indices.end;
    std::thread::scope(|scope| {
        let handles: Vec<_> = indices
            .step_by(per as usize)
            .map(|from| {
                scope.spawn(move || {
                    (from..(from + per).min(end))
                        .map(|i| {
                            let s = sample(pool, opts, i)?;
                            let png = png_bytes(&s.image)?;
                            Ok((s, png))
                        })
                        .collect::<Vec<Result<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("document thread panicked"))
            .collect()
    })
}

/// Writes samples `start..start + count` to `out`: images, ground-truth text files and the
/// manifests (appending to nothing: each manifest is rewritten).
pub fn write_set(
    out: &Path,
    specs: &[FontSpec],
    opts: &Options,
    start: u64,
    count: u64,
    manifests: bool,
) -> Result<Summary> {
    let pool = crate::fonts::load_all(specs)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Each manifest with its path, for errors that name the file.
    let open = |name: &str| -> Result<Option<(PathBuf, BufWriter<File>)>> {
        if !manifests {
            return Ok(None);
        }
        let p = out.join(name);
        let w =
            BufWriter::new(File::create(&p).with_context(|| format!("creating {}", p.display()))?);
        Ok(Some((p, w)))
    };
    let mut captions = open("captions.jsonl")?;
    let mut ocr = open("ocr.jsonl")?;
    let mut stage2 = open("stage2.jsonl")?;
    let mut meta = open("meta.jsonl")?;
    let mut summary = Summary::default();
    // Rendering and PNG encoding run on every core, a chunk of indices at a time; a sample
    // depends only on its index, and everything is written in index order, so the output
    // does not depend on the thread count.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let chunk = threads * 8;
    let end = start + count;
    for first in (start..end).step_by(chunk as usize) {
        for (s, bytes) in render(&pool, opts, first..(first + chunk).min(end), threads)? {
            let png = format!("{}.png", s.name);
            let path = out.join(&png);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            let txt = out.join(format!("{}.txt", s.name));
            std::fs::write(&txt, format!("{}\n", s.text))
                .with_context(|| format!("writing {}", txt.display()))?;
            let boxes = out.join(format!("{}.lines.json", s.name));
            let file = LinesFile {
                image: png.clone(),
                width: s.image.width(),
                height: s.image.height(),
                lines: (s.lines.iter().zip(&s.line_texts))
                    .map(|(b, t)| TruthLine {
                        bbox: *b,
                        text: t.clone(),
                    })
                    .collect(),
            };
            std::fs::write(&boxes, serde_json::to_string(&file)? + "\n")
                .with_context(|| format!("writing {}", boxes.display()))?;
            summary.images += 1;
            let line =
                |w: &mut Option<(PathBuf, BufWriter<File>)>, v: serde_json::Value| -> Result<()> {
                    if let Some((p, w)) = w {
                        writeln!(w, "{v}").with_context(|| format!("writing {}", p.display()))?;
                    }
                    Ok(())
                };
            line(&mut captions, json!({"images": [&png], "caption": &s.text}))?;
            line(&mut ocr, conversation(&png, READ_PROMPT, &s.text))?;
            line(&mut stage2, conversation(&png, s.read_prompt, &s.text))?;
            summary.stage2_records += 1;
            for (q, a) in &s.document.questions {
                line(&mut stage2, conversation(&png, q, a))?;
                summary.stage2_records += 1;
            }
            line(
                &mut meta,
                json!({
                    "image": &png,
                    "kind": s.document.kind,
                    "fonts": &s.fonts,
                    "level": s.level,
                    "seed": opts.seed,
                    "index": s.index,
                    "lines": s.document.layout.line_count(),
                }),
            )?;
        }
    }
    for (p, w) in [&mut captions, &mut ocr, &mut stage2, &mut meta]
        .into_iter()
        .flatten()
    {
        w.flush()
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(summary)
}
