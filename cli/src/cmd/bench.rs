//! `ove bench`: vision encoder time, prefill and decode speed, load time and peak memory;
//! or the layout stage alone (`--layout`), or a whole page read as `ove ocr` reads it
//! (`--page`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use ove_runtime::bench::{bench, BenchOptions};
use ove_runtime::generate::DEFAULT_PREFILL_CHUNK;

use super::run::ModelArgs;

/// Measure a bundle: vision encoder ms per image, prefill and decode tokens/s, load time
/// and peak resident memory.
///
/// The prompt is the image's tokens (when --image is given) plus --text-tokens filler
/// tokens; decode speed is measured over --decode-tokens greedy steps with the KV cache.
/// Everything runs once untimed first, so the numbers are warm.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  ove bench --bundle bundle/ --backend ort --image page.png --json"
)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// An image to encode and put in the prompt (default: text only).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,

    /// Text tokens in the prompt besides the image's.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub text_tokens: usize,

    /// Generated tokens to time.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub decode_tokens: usize,

    /// Timed vision encoder runs (averaged).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub vision_runs: usize,

    /// Prompt tokens per decoder call while prefilling (0: all at once).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PREFILL_CHUNK)]
    pub prefill_chunk: usize,

    /// Also time N text prompts decoded together (one decoder call a step for all rows,
    /// bundle schema 4), reported as their total tokens/s beside the single sequence's.
    /// 1: not measured.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub decode_rows: u16,

    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Time only the layout stage (`ove layout`, no model loaded) on this page image: the
    /// median and best ms per page over --layout-runs runs, on one thread.
    #[arg(long, value_name = "IMAGE", conflicts_with = "image")]
    pub layout: Option<PathBuf>,

    /// Timed layout runs (after one untimed).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub layout_runs: usize,

    /// Repeat the --layout page over a canvas of this size, e.g. 1000x1400 (a full page of
    /// text from a small generated document); default: the page as it is.
    #[arg(long, value_name = "WxH", requires = "layout", value_parser = parse_size)]
    pub layout_tile: Option<(u32, u32)>,

    /// Time reading this page image as `ove ocr` reads it with the bundle's own reading
    /// mode (layout, line crops at the bundle's line height, its line reader; or the whole
    /// page): seconds per page and lines per second, median over --page-runs runs. With the
    /// CTC reader, lines in batches (lines.onnx) and one by one, in alternating runs, and
    /// whether both read the same text.
    #[arg(long, value_name = "IMAGE", conflicts_with_all = ["image", "layout"])]
    pub page: Option<PathBuf>,

    /// Timed page reads (after one untimed).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub page_runs: usize,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?}: want WIDTHxHEIGHT, e.g. 1000x1400"))?;
    let n = |v: &str| {
        v.parse::<u32>()
            .ok()
            .filter(|&n| (1..=20_000).contains(&n))
            .ok_or_else(|| format!("{s:?}: sides must be 1..=20000 pixels"))
    };
    Ok((n(w)?, n(h)?))
}

/// `page` repeated over a `w x h` canvas, row by row.
fn tile(page: &image::RgbImage, (w, h): (u32, u32)) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        *page.get_pixel(x % page.width(), y % page.height())
    })
}

/// What `--layout` measured.
#[derive(serde::Serialize)]
struct LayoutBench {
    image: String,
    width: u32,
    height: u32,
    lines: usize,
    runs: usize,
    median_ms: f64,
    best_ms: f64,
}

fn bench_layout(args: &Args, path: &std::path::Path) -> Result<ExitCode> {
    use ove_runtime::layout::{find_lines, LayoutOptions};
    let (runs, json) = (args.layout_runs, args.json);
    let page = ove_core::preprocess::load_rgb(path, &Default::default())?;
    let page = match args.layout_tile {
        Some(size) => tile(&page, size),
        None => page,
    };
    let opts = LayoutOptions::default();
    let lines = find_lines(&page, &opts).lines.len();
    let mut ms: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = std::time::Instant::now();
            std::hint::black_box(find_lines(&page, &opts));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let r = LayoutBench {
        image: path.display().to_string(),
        width: page.width(),
        height: page.height(),
        lines,
        runs: ms.len(),
        median_ms: ms[ms.len() / 2],
        best_ms: ms[0],
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "layout {}x{} ({} lines): median {:.2} ms, best {:.2} ms over {} runs",
            r.width, r.height, r.lines, r.median_ms, r.best_ms, r.runs
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `--page` measured.
#[derive(serde::Serialize)]
struct PageBench {
    image: String,
    backend: String,
    /// The bundle's reading mode, spelled as in its manifest.
    layout: ove_core::manifest::PageReading,
    reader: ove_core::manifest::LineReader,
    lines: usize,
    runs: usize,
    /// The page read as `ove ocr` reads it (lines in batches when the reader and the
    /// bundle allow).
    batched: PageTiming,
    /// The same lines one by one through vision.onnx (CTC reader only).
    one_by_one: Option<PageTiming>,
    /// Whether the one-by-one reading gave the batched reading's text.
    same_text: Option<bool>,
    /// One timed run of the layout stage alone on the page (it is part of every read).
    layout_ms: f64,
}

#[derive(serde::Serialize)]
struct PageTiming {
    /// Lines per encoder call (1: one by one).
    batch: usize,
    median_s: f64,
    best_s: f64,
    /// Lines read per second at the median (0 for a page read whole).
    lines_per_s: f64,
}

impl std::fmt::Display for PageTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "batch {:>2}: median {:.3} s/page, best {:.3} s, {:.1} lines/s",
            self.batch, self.median_s, self.best_s, self.lines_per_s
        )
    }
}

fn bench_page(args: &Args, path: &std::path::Path) -> Result<ExitCode> {
    use ove_core::manifest::{LineReader, PageReading};
    use ove_core::prompt::DEFAULT_SYSTEM;
    use ove_runtime::layout::{find_lines, LayoutOptions};
    use ove_runtime::read::{read_page, ReadMode};
    use ove_runtime::GenerateOptions;

    let page = ove_core::preprocess::load_rgb(path, &Default::default())?;
    let mut model = args.model.load()?;
    let mode = ReadMode::of(&model);
    let prompt = model.prompt_builder(DEFAULT_SYSTEM)?;
    let opts = GenerateOptions {
        prefill_chunk: (args.prefill_chunk > 0).then_some(args.prefill_chunk),
        ..model.default_options()
    };
    let instruction = super::ocr::DEFAULT_OCR_PROMPT;
    let spinner = super::run::spinner("benchmarking a page".into());
    // Batches exist only for the CTC reader on a bundle with lines.onnx; otherwise the
    // lines go one by one and there is nothing to compare.
    let ctc_lines = mode.layout == PageReading::Lines
        && mode.reader == LineReader::Ctc
        && model.bundle().lines().is_some();
    let modes: Vec<ReadMode> = if ctc_lines {
        vec![mode, ReadMode { batch: 1, ..mode }]
    } else {
        vec![mode]
    };
    let mut read = |m: ReadMode| read_page(&mut model, &prompt, instruction, &page, m, &opts);
    // One untimed read of each, then the timed runs alternate between them.
    let firsts = modes.iter().map(|&m| read(m)).collect::<Result<Vec<_>>>()?;
    let runs = args.page_runs.max(1);
    let mut secs = vec![Vec::with_capacity(runs); modes.len()];
    for _ in 0..runs {
        for (m, s) in modes.iter().zip(&mut secs) {
            let t = std::time::Instant::now();
            std::hint::black_box(read(*m)?);
            s.push(t.elapsed().as_secs_f64());
        }
    }
    let t = std::time::Instant::now();
    std::hint::black_box(find_lines(&page, &LayoutOptions::default()));
    let layout_ms = t.elapsed().as_secs_f64() * 1e3;
    spinner.finish_and_clear();
    let lines = firsts[0].lines.len();
    let mut timings = modes.iter().zip(secs).map(|(m, mut s)| {
        s.sort_by(f64::total_cmp);
        let median_s = s[s.len() / 2];
        PageTiming {
            batch: if ctc_lines { m.batch } else { 1 },
            median_s,
            best_s: s[0],
            lines_per_s: lines as f64 / median_s,
        }
    });
    let r = PageBench {
        image: path.display().to_string(),
        backend: model.backend_kind().to_string(),
        layout: mode.layout,
        reader: mode.reader,
        lines,
        runs,
        batched: timings.next().expect("one mode at least"),
        one_by_one: timings.next(),
        same_text: firsts.get(1).map(|one| one.text == firsts[0].text),
        layout_ms,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "page {} ({} lines, layout {:?}, reader {:?}, {}), over {} runs; layout {:.1} ms",
            r.image, r.lines, r.layout, r.reader, r.backend, r.runs, r.layout_ms
        );
        println!("  {}", r.batched);
        if let Some(one) = &r.one_by_one {
            println!(
                "  {one} ({:.2}x the batched time; same text: {})",
                one.median_s / r.batched.median_s,
                if r.same_text == Some(true) {
                    "yes"
                } else {
                    "NO"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: Args) -> Result<ExitCode> {
    if let Some(page) = &args.layout {
        return bench_layout(&args, page);
    }
    if let Some(page) = &args.page {
        return bench_page(&args, page);
    }
    let mut model = args.model.load()?;
    let spinner = super::run::spinner("benchmarking".into());
    let report = bench(
        &mut model,
        &BenchOptions {
            image: args.image.clone(),
            text_tokens: args.text_tokens,
            decode_tokens: args.decode_tokens,
            vision_runs: args.vision_runs,
            prefill_chunk: (args.prefill_chunk > 0).then_some(args.prefill_chunk),
            decode_rows: usize::from(args.decode_rows),
        },
    );
    spinner.finish_and_clear();
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}
