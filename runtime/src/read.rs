//! Reading a page with a model: the whole page as one image (what large checkpoints are
//! trained to do), or line by line after the layout stage ([`crate::layout`]), each line
//! crop scaled to the text height the model was trained on (what small models read well).
//!
//! A line crop is read by the decoder (each line in its own conversation) or, when the
//! bundle carries one, by the CTC head on the vision encoder ([`ove_core::ctc`]: no decoder
//! step at all). The CTC reader encodes a page's crops in batches ([`crate::line_batch`],
//! one `lines.onnx` call for up to [`MAX_LINE_BATCH`] lines); the decoder reader decodes
//! up to that many lines together ([`Model::generate_batch`]: one decoder call a step for
//! all of them). Either way a line's text does not depend on the other lines.
//!
//! The CTC reader can read each line at several text heights around the trained one
//! ([`ove_core::preprocess::line::read_scales`]) and keep, character by character, what
//! most readings say ([`ove_core::vote`]): each scale makes its own mistakes, the right
//! characters agree. Only doubtful lines are read again: every line is read once at the
//! trained height, and a line whose confidence ([`ove_core::ctc::confidence`]) is below
//! [`ReadMode::reread_below`] is read at the other heights and voted on. On held-out pages
//! that costs 2-5x one reading instead of 7-9x, for most of what voting every line gains.

use std::ops::ControlFlow;

use anyhow::{Context, Result};
use image::RgbImage;
use ove_core::layout_metrics::LineBox;
use ove_core::manifest::{LineReader, PageReading};
use ove_core::preprocess::line::read_scales;
pub use ove_core::preprocess::line_crop;
use ove_core::preprocess::preprocess;
use ove_core::prompt::PromptBuilder;
use ove_core::vote::vote;
use serde::Serialize;

use crate::generate::{BatchPrompt, EncodedImage, GenerateOptions, Generation, Model};
use crate::layout::{find_lines, LayoutOptions};
use crate::line_batch::encode_lines;
pub use crate::line_batch::{MAX_LINE_BATCH, MAX_LINE_PATCHES};

/// The instruction `ove ocr` and `ove serve`'s `/v1/ocr` give with each page or line
/// unless told otherwise.
pub const DEFAULT_OCR_PROMPT: &str = "Read all the text in the image.";

/// One page of `ove ocr --json` (and of `/v1/ocr?format=json`): the file it came from,
/// its 1-based page number, its text and its lines (empty when read whole).
#[derive(Debug, Clone, Serialize)]
pub struct PageRecord {
    pub file: String,
    /// 1-based page number in the file.
    pub page: usize,
    pub text: String,
    pub lines: Vec<LineText>,
}

impl PageRecord {
    /// The record of page `index` (0-based) of `file`.
    pub fn new(file: String, index: usize, read: PageText) -> Self {
        Self {
            file,
            page: index + 1,
            text: read.text,
            lines: read.lines,
        }
    }
}

/// The text `ove ocr` prints for one file's pages: each page's text on its own line(s),
/// pages separated by a form feed.
pub fn pages_text<'a>(pages: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (k, text) in pages.into_iter().enumerate() {
        if k > 0 {
            out.push('\x0c');
        }
        out.push_str(text);
        out.push('\n');
    }
    out
}

/// One line of a page and what the model read in it.
#[derive(Debug, Clone, Serialize)]
pub struct LineText {
    pub bbox: LineBox,
    /// The line's block, in reading order.
    pub block: usize,
    pub text: String,
    /// How sure the CTC reader was of its first reading, at the trained text height
    /// ([`ove_core::ctc::confidence`], 0 to 1): the probability its least sure frame leaves
    /// for the text as read. A line below `--reread-below` was read again and voted
    /// (`readings` > 1). Absent when the decoder read the line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// How many readings the line's text was voted from (1: read once).
    pub readings: usize,
}

/// What the model read on one page.
#[derive(Debug, Clone, Serialize)]
pub struct PageText {
    /// The page's text: lines joined by newlines (or the whole-page answer).
    pub text: String,
    /// The lines in reading order (empty when the page was read whole).
    pub lines: Vec<LineText>,
    /// Tokens generated for the page, all lines together.
    pub generated_tokens: usize,
}

/// Preprocesses an in-memory image with the bundle's preprocessor and encodes it as the
/// only image of a prompt.
pub fn encode_rgb(model: &mut Model, img: &RgbImage) -> Result<EncodedImage> {
    let p = preprocess(img, &model.manifest().preprocessor).context("preprocessing the image")?;
    model.encode_image(&p.pixel_values, p.grid_thw)
}

/// Asks `instruction` about one image and returns the answer, special tokens dropped.
pub fn read_image(
    model: &mut Model,
    prompt: &PromptBuilder,
    instruction: &str,
    img: &RgbImage,
    opts: &GenerateOptions,
) -> Result<(String, Generation)> {
    let encoded = encode_rgb(model, img)?;
    let ids = prompt.encode(instruction, &[encoded.tokens])?;
    let g = model.generate(&ids, &[&encoded], opts, |_| ControlFlow::Continue(()))?;
    Ok((answer_text(model, prompt, &g)?, g))
}

/// A generation's text: special tokens dropped, trimmed.
fn answer_text(model: &Model, prompt: &PromptBuilder, g: &Generation) -> Result<String> {
    let eos = model.eos_ids();
    let answer: Vec<i64> = g
        .tokens
        .iter()
        .copied()
        .filter(|t| !eos.contains(t))
        .collect();
    Ok(prompt.decode(&answer)?.trim().to_string())
}

/// Asks `instruction` about each line crop with the decoder, `batch` lines decoded
/// together ([`Model::generate_batch`]); the answers and their generations come back in
/// the order of `crops`.
pub fn read_lines_decoder(
    model: &mut Model,
    prompt: &PromptBuilder,
    instruction: &str,
    crops: impl IntoIterator<Item = RgbImage>,
    batch: usize,
    opts: &GenerateOptions,
) -> Result<Vec<(String, Generation)>> {
    let crops: Vec<RgbImage> = crops.into_iter().collect();
    let mut out = Vec::with_capacity(crops.len());
    for (g, group) in crops.chunks(batch.max(1)).enumerate() {
        let first = g * batch.max(1);
        let encoded = group
            .iter()
            .enumerate()
            .map(|(i, crop)| {
                encode_rgb(model, crop).with_context(|| format!("line {}", first + i + 1))
            })
            .collect::<Result<Vec<_>>>()?;
        let ids = encoded
            .iter()
            .map(|e| prompt.encode(instruction, &[e.tokens]))
            .collect::<Result<Vec<_>>>()?;
        let images: Vec<[&EncodedImage; 1]> = encoded.iter().map(|e| [e]).collect();
        let prompts: Vec<BatchPrompt<'_>> = ids
            .iter()
            .zip(&images)
            .map(|(ids, images)| BatchPrompt { ids, images })
            .collect();
        for g in model.generate_batch(&prompts, opts)? {
            out.push((answer_text(model, prompt, &g)?, g));
        }
    }
    Ok(out)
}

/// Reads one line crop with the bundle's CTC head: the vision encoder alone, its patch
/// columns through the head, greedy CTC decoding.
pub fn read_line_ctc(model: &mut Model, crop: &RgbImage) -> Result<String> {
    let mut texts = read_lines_ctc(model, [crop.clone()], 1)?;
    Ok(texts.pop().unwrap_or_default())
}

/// Reads line crops with the bundle's CTC head, `batch` crops per encoder call (see
/// [`encode_lines`]); the texts come back in the order of `crops`.
pub fn read_lines_ctc(
    model: &mut Model,
    crops: impl IntoIterator<Item = RgbImage>,
    batch: usize,
) -> Result<Vec<String>> {
    Ok(read_lines_ctc_scored(model, crops, batch)?
        .into_iter()
        .map(|(text, _)| text)
        .collect())
}

/// [`read_lines_ctc`] with each reading's confidence ([`ove_core::ctc::confidence`]).
pub fn read_lines_ctc_scored(
    model: &mut Model,
    crops: impl IntoIterator<Item = RgbImage>,
    batch: usize,
) -> Result<Vec<(String, f32)>> {
    let cfg = &model.manifest().preprocessor;
    let pre = crops
        .into_iter()
        .enumerate()
        .map(|(i, crop)| {
            preprocess(&crop, cfg).with_context(|| format!("preprocessing line crop {}", i + 1))
        })
        .collect::<Result<Vec<_>>>()?;
    let tokens = encode_lines(model, &pre, batch)?;
    let merge = model.manifest().model.vision_config.spatial_merge_size;
    let head = model
        .ctc_head()
        .context("the bundle carries no CTC head (export with --ctc-head)")?;
    pre.iter()
        .zip(&tokens)
        .enumerate()
        .map(|(i, (p, t))| {
            let (text, confidence) = head
                .read_scored(t, p.grid_thw, merge)
                .with_context(|| format!("line {}", i + 1))?;
            Ok((text.trim().to_string(), confidence))
        })
        .collect()
}

/// Reads the lines `boxes` of `page` with the CTC head: once at `line_height`, then the
/// doubtful ones (confidence below `mode.reread_below`) at the other of `mode.scales` text
/// heights, voting per character over each such line's readings.
fn read_lines_ctc_scaled(
    model: &mut Model,
    page: &RgbImage,
    boxes: &[LineBox],
    line_height: u32,
    mode: ReadMode,
) -> Result<Vec<LineRead>> {
    let first = read_lines_ctc_scored(
        model,
        boxes.iter().map(|&b| line_crop(page, b, Some(line_height))),
        mode.batch,
    )?;
    let scales = read_scales(mode.scales);
    let center = scales.len() / 2;
    let others: Vec<u32> = scales
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != center)
        .map(|(_, s)| ((line_height as f32 * s).round() as u32).max(1))
        .collect();
    let doubtful: Vec<usize> = first
        .iter()
        .enumerate()
        .filter(|(_, (_, confidence))| mode.rereads(*confidence))
        .map(|(i, _)| i)
        .collect();
    let mut reads: Vec<LineRead> = first
        .into_iter()
        .map(|(text, confidence)| LineRead::once(text, Some(confidence)))
        .collect();
    if others.is_empty() || doubtful.is_empty() {
        return Ok(reads);
    }
    // Line-major: the extra readings of the n-th doubtful line are n*(k-1) .. (n+1)*(k-1).
    let crops = doubtful.iter().flat_map(|&i| {
        let b = boxes[i];
        others.iter().map(move |&h| line_crop(page, b, Some(h)))
    });
    let extra = read_lines_ctc(model, crops, mode.batch)?;
    for (&i, more) in doubtful.iter().zip(extra.chunks(others.len())) {
        let voted = {
            let mut readings: Vec<&str> = more.iter().map(String::as_str).collect();
            readings.insert(center, &reads[i].text);
            vote(&readings, center)
        };
        reads[i].text = voted;
        reads[i].readings = more.len() + 1;
    }
    Ok(reads)
}

/// What a line reader made of one line: its text, the CTC reader's confidence in its first
/// reading, and how many readings the text was voted from.
struct LineRead {
    text: String,
    confidence: Option<f32>,
    readings: usize,
}

impl LineRead {
    fn once(text: String, confidence: Option<f32>) -> Self {
        Self {
            text,
            confidence,
            readings: 1,
        }
    }
}

/// How a page is read: whole or line by line, and what reads a line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadMode {
    pub layout: PageReading,
    pub reader: LineReader,
    /// Lines read together: crops encoded per call by the CTC reader (1: one by one
    /// through vision.onnx; more needs the bundle's lines.onnx), lines decoded together by
    /// the decoder reader (more needs a batched decoder graph). Without the graph, lines
    /// go one by one.
    pub batch: usize,
    /// Text heights the CTC reader reads each line at before its per-character vote (1,
    /// 3, 5 or 7; 1 reads once at the trained height). The decoder reader reads once.
    pub scales: usize,
    /// With `scales` > 1: a line is read at the other heights only when its first reading's
    /// confidence ([`ove_core::ctc::confidence`]) is below this; 1 reads every line at
    /// every height, 0 none.
    pub reread_below: f32,
}

/// Readings a doubtful line gets from the CTC reader unless told otherwise: the seven
/// heights of [`ove_core::preprocess::line::READ_SCALES`].
pub const DEFAULT_READ_SCALES: usize = 7;

/// Lines whose first reading's confidence is below this get the extra readings
/// ([`ReadMode::reread_below`]). Chosen on held-out sets of seed 7171 (README.md): it
/// keeps most of what voting every line gains (paragraphs 0.94% CER against 0.84%, one
/// reading 1.72%) for 25-65% of its time.
pub const DEFAULT_REREAD_BELOW: f32 = 0.9;

impl ReadMode {
    /// What the bundle's manifest says its model reads best, lines in batches of
    /// [`MAX_LINE_BATCH`], [`DEFAULT_READ_SCALES`] readings a line for the CTC reader.
    pub fn of(model: &Model) -> Self {
        let r = model.manifest().reading;
        Self {
            layout: r.layout,
            reader: r.reader,
            batch: MAX_LINE_BATCH,
            scales: DEFAULT_READ_SCALES,
            reread_below: DEFAULT_REREAD_BELOW,
        }
    }

    /// Whether a first reading of this confidence is read again at the other heights.
    pub fn rereads(&self, confidence: f32) -> bool {
        self.reread_below >= 1.0 || confidence < self.reread_below
    }
}

/// Reads one page as `mode` says: whole, or line by line (layout, crop, read each line).
pub fn read_page(
    model: &mut Model,
    prompt: &PromptBuilder,
    instruction: &str,
    page: &RgbImage,
    mode: ReadMode,
    opts: &GenerateOptions,
) -> Result<PageText> {
    let (layout_mode, reader) = (mode.layout, mode.reader);
    if layout_mode == PageReading::Page {
        let (text, g) = read_image(model, prompt, instruction, page, opts)?;
        return Ok(PageText {
            text,
            lines: Vec::new(),
            generated_tokens: g.tokens.len(),
        });
    }
    let line_height = model.manifest().reading.line_height;
    let layout = find_lines(page, &LayoutOptions::default());
    let mut generated_tokens = 0;
    let reads: Vec<LineRead> = match (reader, line_height) {
        (LineReader::Ctc, Some(height)) if mode.scales > 1 => {
            let boxes: Vec<LineBox> = layout.lines.iter().map(|l| l.bbox).collect();
            read_lines_ctc_scaled(model, page, &boxes, height, mode)?
        }
        (LineReader::Ctc, _) => read_lines_ctc_scored(
            model,
            layout
                .lines
                .iter()
                .map(|line| line_crop(page, line.bbox, line_height)),
            mode.batch,
        )?
        .into_iter()
        .map(|(text, confidence)| LineRead::once(text, Some(confidence)))
        .collect(),
        (LineReader::Decoder, _) => {
            let crops = layout
                .lines
                .iter()
                .map(|line| line_crop(page, line.bbox, line_height));
            read_lines_decoder(model, prompt, instruction, crops, mode.batch, opts)?
                .into_iter()
                .map(|(text, g)| {
                    generated_tokens += g.tokens.len();
                    LineRead::once(text, None)
                })
                .collect()
        }
    };
    let lines: Vec<LineText> = layout
        .lines
        .iter()
        .zip(reads)
        .map(|(line, read)| LineText {
            bbox: line.bbox,
            block: line.block,
            text: read.text,
            confidence: read.confidence,
            readings: read.readings,
        })
        .collect();
    let text = lines
        .iter()
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    Ok(PageText {
        text,
        lines,
        generated_tokens,
    })
}
