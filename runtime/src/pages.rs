//! Page images from input files: an image file is one page, a PDF is rendered page by page.
//!
//! `ove ocr` reads documents, and documents come as scans (images) as often as PDFs. The model
//! only sees RGB images, so everything an input file holds becomes [`Page`]s here, in file
//! order, before any preprocessing:
//! - an image (PNG, JPEG, WebP, BMP, TIFF, GIF) is decoded by
//!   [`ove_core::preprocess::load_rgb`], which sniffs the format and refuses decode bombs
//!   ([`PageOptions::max_image_pixels`]);
//! - a PDF (recognised by its first bytes `%PDF-`, never by its extension) is rendered in
//!   pure Rust by [hayro](https://crates.io/crates/hayro) at [`PageOptions::dpi`] on a white
//!   background (behind the cargo feature `pdf`, on by default: a build without it refuses
//!   PDFs with an error that says so).
//!
//! A PDF comes from anywhere, like an image, so rendering is guarded the same way: the page
//! count is checked against [`PageOptions::max_pages`] before anything is rendered, each
//! page's pixel size (page size x dpi) is checked against [`PageOptions::max_page_pixels`]
//! before its pixels are allocated (a larger page is rendered at a lower dpi that fits, with a
//! warning), and a panic inside hayro becomes an error instead of taking the process down.
//! Every error names the file.
//!
//! [`load_pages`] returns all pages at once; [`iter_pages`] renders them one at a time, which
//! is what a caller should use for long PDFs: 200 US Letter pages at 200 dpi are 2.2 GB as RGB.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use ove_core::preprocess::{load_rgb, load_rgb_from_bytes, DecodeOptions, PreprocessError};

/// How input files become pages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageOptions {
    /// Resolution PDF pages are rendered at, in dots per inch (default 200). A PDF page is
    /// measured in points (1/72 inch), so US Letter (612 x 792 pt) at 200 dpi is
    /// 1700 x 2200 pixels. 200 dpi keeps 10-point text about 28 pixels high, which is what
    /// document OCR models are trained on; the model's own `max_pixels` resizes it anyway.
    /// Image files are taken at their own resolution.
    pub dpi: f32,
    /// The most pages one PDF may have (default 200); a longer one is refused before any
    /// page is rendered (the CLI exposes it as `--max-pages`).
    pub max_pages: usize,
    /// The most pixels (width x height) one rendered PDF page may have (default 40 million,
    /// 120 MB as RGB: an A0 poster at 200 dpi is 43 million). A page that would be larger at
    /// [`Self::dpi`] is rendered at the highest dpi that fits, with a `tracing` warning, so
    /// that an odd page size neither exhausts memory nor fails the whole document.
    pub max_page_pixels: u64,
    /// The largest width x height an image file's header may announce (the decode-bomb
    /// limit of [`DecodeOptions::max_pixels`], same default; the CLI's
    /// `--max-image-pixels`). Not applied to rendered PDF pages: they have
    /// [`Self::max_page_pixels`].
    pub max_image_pixels: u64,
}

impl PageOptions {
    /// The default rendering resolution.
    pub const DEFAULT_DPI: f32 = 200.0;
    /// The range of resolutions accepted: below 10 dpi no text survives; above 1200 a
    /// page is gigapixels before [`Self::max_page_pixels`] scales it back.
    pub const MIN_DPI: f32 = 10.0;
    pub const MAX_DPI: f32 = 1200.0;
    /// The default page limit.
    pub const DEFAULT_MAX_PAGES: usize = 200;
    /// The default pixel limit of a rendered page.
    pub const DEFAULT_MAX_PAGE_PIXELS: u64 = 40_000_000;

    /// Refuses options nothing could be rendered with (a dpi that is not a positive number,
    /// a zero pixel limit).
    pub fn validate(&self) -> Result<()> {
        if !(self.dpi.is_finite() && (Self::MIN_DPI..=Self::MAX_DPI).contains(&self.dpi)) {
            bail!(
                "dpi must be between {} and {}, got {}",
                Self::MIN_DPI,
                Self::MAX_DPI,
                self.dpi
            );
        }
        if self.max_page_pixels == 0 {
            bail!("the page pixel limit (max_page_pixels) must be at least 1");
        }
        Ok(())
    }
}

impl Default for PageOptions {
    fn default() -> Self {
        Self {
            dpi: Self::DEFAULT_DPI,
            max_pages: Self::DEFAULT_MAX_PAGES,
            max_page_pixels: Self::DEFAULT_MAX_PAGE_PIXELS,
            max_image_pixels: DecodeOptions::default().max_pixels,
        }
    }
}

/// One page of an input file.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// 0-based page number in the file (always 0 for an image file). Messages for people
    /// count from 1.
    pub index: usize,
    /// The page as 8-bit RGB: a decoded image as is, a PDF page rendered on white.
    pub image: RgbImage,
}

/// The PDF header every PDF file starts with.
const PDF_MAGIC: &[u8] = b"%PDF-";

/// Is this file a PDF (by its first bytes `%PDF-`, not by its extension)?
///
/// The content decides, as for images ([`ove_core::preprocess::load_rgb`] sniffs too): a
/// PDF saved as `scan.png`, or a PNG saved as `doc.pdf`, is still read for what it is.
pub fn is_pdf(bytes: &[u8]) -> bool {
    bytes.starts_with(PDF_MAGIC)
}

/// The pages of one input file: an image file is one page (decoded by
/// [`ove_core::preprocess::load_rgb`], which applies [`PageOptions::max_image_pixels`]), a PDF
/// gives each page rendered at [`PageOptions::dpi`] on a white background.
///
/// All pages are held in memory at once; for long PDFs use [`iter_pages`].
pub fn load_pages(path: &Path, opts: &PageOptions) -> Result<Vec<Page>> {
    iter_pages(path, opts)?.collect()
}

/// [`load_pages`] for a file already in memory (an upload), `name` standing for its path in
/// messages.
pub fn pages_from_bytes(bytes: &[u8], name: &str, opts: &PageOptions) -> Result<Vec<Page>> {
    iter_pages_from_bytes(bytes, name, opts)?.collect()
}

/// Opens one input file and yields its pages one at a time, each PDF page rendered only when
/// it is asked for, so that memory holds one page however long the document.
///
/// Everything that can be checked up front is checked here: the file is readable, a PDF
/// parses, is not password-protected and has between 1 and [`PageOptions::max_pages`] pages;
/// an image file is decoded here. A page can still fail while it renders (a panic inside the
/// renderer): that page's item is an error and the following pages still come.
pub fn iter_pages(path: &Path, opts: &PageOptions) -> Result<PageIter> {
    opts.validate()?;
    let name = path.display().to_string();
    let mut file =
        std::fs::File::open(path).with_context(|| format!("{name}: cannot read the file"))?;
    let meta = file
        .metadata()
        .with_context(|| format!("{name}: cannot read the file"))?;
    if meta.is_dir() {
        bail!("{name}: is a directory, not an image or PDF file");
    }
    let mut head = Vec::with_capacity(PDF_MAGIC.len());
    file.by_ref()
        .take(PDF_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("{name}: cannot read the file"))?;
    if is_pdf(&head) {
        // hayro parses from memory: the whole file is read (a PDF's pages, fonts and images
        // are reached through the cross-reference table at its end).
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        bytes.extend_from_slice(&head);
        file.read_to_end(&mut bytes)
            .with_context(|| format!("{name}: cannot read the file"))?;
        return open_pdf(bytes, name, opts);
    }
    drop(file);
    let decode = DecodeOptions {
        max_pixels: opts.max_image_pixels,
    };
    let image = load_rgb(path, &decode).map_err(|e| image_error(e, &name))?;
    Ok(PageIter::image(name, image))
}

/// [`iter_pages`] for a file already in memory, `name` standing for its path in messages.
pub fn iter_pages_from_bytes(bytes: &[u8], name: &str, opts: &PageOptions) -> Result<PageIter> {
    opts.validate()?;
    if is_pdf(bytes) {
        return open_pdf(bytes.to_vec(), name.to_string(), opts);
    }
    let decode = DecodeOptions {
        max_pixels: opts.max_image_pixels,
    };
    let image = load_rgb_from_bytes(bytes, &decode).map_err(|e| image_error(e, name))?;
    Ok(PageIter::image(name.to_string(), image))
}

/// An image decoding error, named after the file (once: `Io` already names it).
fn image_error(e: PreprocessError, name: &str) -> anyhow::Error {
    match e {
        PreprocessError::Io { .. } => anyhow::Error::new(e),
        PreprocessError::NotAnImage | PreprocessError::Empty => {
            anyhow::Error::new(e).context(format!(
                "{name}: neither a PDF nor a supported image (PNG, JPEG, WebP, BMP, TIFF, GIF)"
            ))
        }
        _ => anyhow::Error::new(e).context(format!("{name}: cannot decode the image")),
    }
}

/// The pages of one input file, yielded in file order (see [`iter_pages`]).
pub struct PageIter {
    name: String,
    source: Source,
}

enum Source {
    /// An image file: its one page, until taken.
    Image(Option<RgbImage>),
    #[cfg(feature = "pdf")]
    Pdf(pdf::PdfPages),
}

impl PageIter {
    fn image(name: String, image: RgbImage) -> Self {
        Self {
            name,
            source: Source::Image(Some(image)),
        }
    }

    /// The file's name as messages give it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many pages the file has in all (1 for an image), known before any is rendered.
    pub fn page_count(&self) -> usize {
        match &self.source {
            Source::Image(_) => 1,
            #[cfg(feature = "pdf")]
            Source::Pdf(p) => p.count,
        }
    }
}

impl Iterator for PageIter {
    type Item = Result<Page>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.source {
            Source::Image(image) => image.take().map(|image| Ok(Page { index: 0, image })),
            #[cfg(feature = "pdf")]
            Source::Pdf(p) => p.next_page(&self.name),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = match &self.source {
            Source::Image(image) => usize::from(image.is_some()),
            #[cfg(feature = "pdf")]
            Source::Pdf(p) => p.count - p.next,
        };
        (left, Some(left))
    }
}

impl ExactSizeIterator for PageIter {}

#[cfg(not(feature = "pdf"))]
fn open_pdf(_bytes: Vec<u8>, name: String, _opts: &PageOptions) -> Result<PageIter> {
    bail!(
        "{name}: is a PDF, but this build has no PDF support (ove-runtime was built without \
         its `pdf` feature); convert the pages to images, or use a build with it"
    )
}

#[cfg(feature = "pdf")]
fn open_pdf(bytes: Vec<u8>, name: String, opts: &PageOptions) -> Result<PageIter> {
    let pages = pdf::PdfPages::open(bytes, &name, opts)?;
    Ok(PageIter {
        name,
        source: Source::Pdf(pages),
    })
}

/// The size in pixels a page of `width_pt` x `height_pt` points is rendered at: `dpi` if the
/// result fits in `max_pixels` (and in the renderer's 65535 pixels a side), otherwise the
/// highest resolution that does. Returns (width, height, whether it was scaled down).
#[cfg_attr(not(feature = "pdf"), allow(dead_code))]
fn render_size(width_pt: f64, height_pt: f64, dpi: f64, max_pixels: u64) -> (u32, u32, bool) {
    const MAX_SIDE: f64 = u16::MAX as f64;
    let max = max_pixels.max(1) as f64;
    let (w, h) = (width_pt * dpi / 72.0, height_pt * dpi / 72.0);
    let (pw, ph) = (w.round().max(1.0), h.round().max(1.0));
    if pw * ph <= max && pw <= MAX_SIDE && ph <= MAX_SIDE {
        return (pw as u32, ph as u32, false);
    }
    let f = (max / (w * h)).sqrt().min(MAX_SIDE / w).min(MAX_SIDE / h);
    let pw = (w * f).floor().clamp(1.0, MAX_SIDE);
    let mut ph = (h * f).floor().clamp(1.0, MAX_SIDE);
    // Only for absurd aspect ratios, where one side was raised to 1 pixel.
    if pw * ph > max {
        ph = (max / pw).floor().max(1.0);
    }
    let pw = if pw * ph > max {
        (max / ph).floor().max(1.0)
    } else {
        pw
    };
    (pw as u32, ph as u32, true)
}

#[cfg(feature = "pdf")]
mod pdf {
    //! hayro behind a small fence: parsing and rendering under `catch_unwind`, sizes checked
    //! before anything is allocated for them.

    use std::collections::BTreeMap;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::{Arc, Mutex};

    use anyhow::{anyhow, bail, Result};
    use hayro::hayro_interpret::util::TransformExt;
    use hayro::hayro_interpret::InterpreterSettings;
    use hayro::hayro_syntax::{DecryptionError, LoadPdfError, Pdf};
    use hayro::kurbo::Affine;
    use hayro::vello_cpu::color::palette::css::WHITE;
    use hayro::vello_cpu::{PixmapMut, RasterizerSettings, RenderContext, Resources, TargetInit};
    use hayro::{RenderCache, RenderSettings};
    use image::RgbImage;

    use ove_core::panic_message;

    use super::{render_size, Page, PageOptions};

    /// A parsed PDF and the next page to render.
    pub(super) struct PdfPages {
        pdf: Pdf,
        pub(super) count: usize,
        pub(super) next: usize,
        dpi: f64,
        max_page_pixels: u64,
    }

    impl PdfPages {
        pub(super) fn open(bytes: Vec<u8>, name: &str, opts: &PageOptions) -> Result<Self> {
            let pdf = match catch_unwind(AssertUnwindSafe(|| Pdf::new(bytes))) {
                Ok(Ok(pdf)) => pdf,
                Ok(Err(LoadPdfError::Decryption(e))) => bail!("{name}: {}", decryption_message(e)),
                Ok(Err(LoadPdfError::Invalid)) => bail!(
                    "{name}: broken PDF: no readable page tree or cross-reference table \
                     (truncated, damaged or not really a PDF)"
                ),
                Err(panic) => bail!(
                    "{name}: broken PDF: the PDF reader failed on it ({})",
                    panic_message(panic.as_ref())
                ),
            };
            let count = catch_unwind(AssertUnwindSafe(|| pdf.pages().len())).map_err(|panic| {
                anyhow!(
                    "{name}: broken PDF: the PDF reader failed on its pages ({})",
                    panic_message(panic.as_ref())
                )
            })?;
            if count == 0 {
                bail!("{name}: the PDF has no pages");
            }
            if count > opts.max_pages {
                bail!(
                    "{name}: the PDF has {count} pages, over the limit of {} \
                     (raise it with --max-pages)",
                    opts.max_pages
                );
            }
            Ok(Self {
                pdf,
                count,
                next: 0,
                dpi: f64::from(opts.dpi),
                max_page_pixels: opts.max_page_pixels,
            })
        }

        pub(super) fn next_page(&mut self, name: &str) -> Option<Result<Page>> {
            if self.next >= self.count {
                return None;
            }
            let index = self.next;
            self.next += 1;
            let rendered = catch_unwind(AssertUnwindSafe(|| self.render(index, name)))
                .unwrap_or_else(|panic| {
                    Err(anyhow!(
                        "the PDF renderer failed on it ({})",
                        panic_message(panic.as_ref())
                    ))
                });
            Some(
                rendered.map(|image| Page { index, image }).map_err(|e| {
                    e.context(format!("{name}: page {} of {}", index + 1, self.count))
                }),
            )
        }

        /// Renders page `index` on white, at the dpi or the highest that fits the pixel limit.
        fn render(&self, index: usize, name: &str) -> Result<RgbImage> {
            let page = &self.pdf.pages()[index];
            let (width_pt, height_pt) = page.render_dimensions();
            let (width_pt, height_pt) = (f64::from(width_pt), f64::from(height_pt));
            if !(width_pt.is_finite() && height_pt.is_finite() && width_pt > 0.0 && height_pt > 0.0)
            {
                bail!("invalid page size {width_pt} x {height_pt} pt");
            }
            let (w, h, scaled) = render_size(width_pt, height_pt, self.dpi, self.max_page_pixels);
            if scaled {
                tracing::warn!(
                    "{name}: page {} of {}: {width_pt:.0} x {height_pt:.0} pt at {} dpi would be \
                     over the limit of {} pixels a page; rendered at {:.0} dpi ({w} x {h})",
                    index + 1,
                    self.count,
                    self.dpi,
                    self.max_page_pixels,
                    f64::from(w) / width_pt * 72.0,
                );
            }
            // `render_size` keeps both sides within 1..=65535.
            let (w16, h16) = (w as u16, h as u16);

            let warnings: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
            let sink = warnings.clone();
            let settings = InterpreterSettings {
                warning_sink: Arc::new(move |w| {
                    if let Ok(mut m) = sink.lock() {
                        *m.entry(format!("{w:?}")).or_default() += 1;
                    }
                }),
                ..Default::default()
            };
            let cache = RenderCache::new();
            let mut ctx = RenderContext::new(w16, h16);
            // Points to pixels (each axis exactly onto the rounded size), after the page's own
            // transform (y down, rotation, crop box offset).
            let transform =
                Affine::scale_non_uniform(f64::from(w) / width_pt, f64::from(h) / height_pt)
                    * page.initial_transform(true).to_kurbo();
            hayro::render_into(
                page,
                &cache,
                &settings,
                &RenderSettings::default(),
                &mut ctx,
                transform,
            );
            ctx.flush();

            // The only full-size buffer besides the result: premultiplied RGBA, made RGB in place.
            let mut buf = vec![0u8; w as usize * h as usize * 4];
            let target = PixmapMut::new(w16, h16, &mut buf)
                .ok_or_else(|| anyhow!("pixel buffer does not match {w} x {h}"))?;
            ctx.render_with(
                target,
                &mut Resources::default(),
                RasterizerSettings {
                    target_init: TargetInit::Clear(WHITE),
                    ..Default::default()
                },
            );
            drop(ctx);
            let image = rgba_premul_to_rgb_on_white(buf, w, h)?;

            let warnings = warnings.lock().map(|m| m.clone()).unwrap_or_default();
            if !warnings.is_empty() {
                let list: Vec<String> = warnings.iter().map(|(k, n)| format!("{k} x{n}")).collect();
                tracing::warn!(
                    "{name}: page {} of {}: the PDF renderer reported problems, the page may be \
                     incomplete: {}",
                    index + 1,
                    self.count,
                    list.join(", ")
                );
            }
            Ok(image)
        }
    }

    /// Premultiplied RGBA (as the rasterizer writes it) composited over white, as RGB, in the
    /// same allocation. The background is already opaque white, so this is a copy unless the
    /// page left something translucent.
    fn rgba_premul_to_rgb_on_white(mut buf: Vec<u8>, w: u32, h: u32) -> Result<RgbImage> {
        let n = w as usize * h as usize;
        for i in 0..n {
            let (r, g, b, a) = (buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]);
            let white = 255 - a;
            // Writes at 3i..3i+3 never pass the read position 4i.
            buf[3 * i] = r.saturating_add(white);
            buf[3 * i + 1] = g.saturating_add(white);
            buf[3 * i + 2] = b.saturating_add(white);
        }
        buf.truncate(3 * n);
        buf.shrink_to_fit();
        RgbImage::from_raw(w, h, buf)
            .ok_or_else(|| anyhow!("pixel buffer does not match {w} x {h}"))
    }

    fn decryption_message(e: DecryptionError) -> &'static str {
        match e {
            DecryptionError::PasswordProtected => {
                "the PDF is password-protected; remove the password first (e.g. `qpdf --decrypt \
                 --password=... in.pdf out.pdf`)"
            }
            DecryptionError::UnsupportedAlgorithm => {
                "the PDF is encrypted with an algorithm the PDF reader does not support; \
                 decrypt it first (e.g. `qpdf --decrypt in.pdf out.pdf`)"
            }
            DecryptionError::InvalidEncryption | DecryptionError::MissingIDEntry => {
                "the PDF is encrypted and its encryption data is broken"
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn premultiplied_rgba_composites_over_white() {
            // Opaque black, transparent, half-transparent premultiplied red.
            let buf = vec![0, 0, 0, 255, 0, 0, 0, 0, 128, 0, 0, 128];
            let img = rgba_premul_to_rgb_on_white(buf, 3, 1).unwrap();
            assert_eq!(img.as_raw(), &[0, 0, 0, 255, 255, 255, 255, 127, 127]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_is_sniffed_by_its_first_bytes() {
        assert!(is_pdf(b"%PDF-1.7\n"));
        assert!(is_pdf(b"%PDF-"));
        assert!(!is_pdf(b"%PDF"));
        assert!(!is_pdf(b""));
        assert!(!is_pdf(b"\x89PNG\r\n\x1a\n"));
        assert!(!is_pdf(b" %PDF-1.4"));
    }

    #[test]
    fn defaults() {
        let o = PageOptions::default();
        assert_eq!(o.dpi, 200.0);
        assert_eq!(o.max_pages, 200);
        assert_eq!(o.max_page_pixels, 40_000_000);
        assert_eq!(o.max_image_pixels, DecodeOptions::default().max_pixels);
        o.validate().unwrap();
    }

    #[test]
    fn bad_options_are_refused() {
        for dpi in [0.0, -72.0, f32::NAN, f32::INFINITY] {
            let o = PageOptions {
                dpi,
                ..Default::default()
            };
            assert!(o.validate().is_err(), "{dpi}");
        }
        let o = PageOptions {
            max_page_pixels: 0,
            ..Default::default()
        };
        assert!(o.validate().is_err());
    }

    #[test]
    fn render_size_at_the_dpi_when_it_fits() {
        // US Letter and A4 at 200 dpi; 72 dpi is one pixel a point.
        assert_eq!(
            render_size(612.0, 792.0, 200.0, 40_000_000),
            (1700, 2200, false)
        );
        assert_eq!(
            render_size(595.0, 842.0, 200.0, 40_000_000),
            (1653, 2339, false)
        );
        assert_eq!(
            render_size(612.0, 792.0, 72.0, 40_000_000),
            (612, 792, false)
        );
        // Exactly at the limit still fits.
        assert_eq!(
            render_size(612.0, 792.0, 72.0, 612 * 792),
            (612, 792, false)
        );
    }

    #[test]
    fn render_size_scales_down_to_the_limit() {
        let (w, h, scaled) = render_size(612.0, 792.0, 200.0, 1_000_000);
        assert!(scaled);
        assert!(u64::from(w) * u64::from(h) <= 1_000_000);
        // The aspect ratio is kept, and little of the budget is lost.
        assert!((f64::from(w) / f64::from(h) - 612.0 / 792.0).abs() < 0.002);
        assert!(u64::from(w) * u64::from(h) > 990_000);
        // A 200-inch-square page (the PDF maximum) at 200 dpi.
        let (w, h, scaled) = render_size(14_400.0, 14_400.0, 200.0, 40_000_000);
        assert!(scaled && w == h && u64::from(w) * u64::from(h) <= 40_000_000);
    }

    #[test]
    fn render_size_keeps_each_side_within_the_renderer() {
        // A long strip: few pixels, but over 65535 wide.
        let (w, h, scaled) = render_size(100_000.0, 10.0, 72.0, 40_000_000);
        assert!(scaled);
        assert!(w <= 65_535 && h >= 1);
        // Absurd sizes never give a zero side or pass the limit.
        for (wpt, hpt) in [(1e30, 1.0), (1.0, 1e30), (1e30, 1e30), (1e-30, 1e-30)] {
            let (w, h, _) = render_size(wpt, hpt, 200.0, 40_000_000);
            assert!(
                w >= 1 && h >= 1 && w <= 65_535 && h <= 65_535,
                "{wpt} {hpt}"
            );
            assert!(u64::from(w) * u64::from(h) <= 40_000_000, "{wpt} {hpt}");
        }
    }

    #[test]
    fn image_bytes_are_one_page() {
        let img = RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]));
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let pages = pages_from_bytes(&png, "upload.png", &PageOptions::default()).unwrap();
        assert_eq!(
            pages,
            vec![Page {
                index: 0,
                image: img
            }]
        );
        let it = iter_pages_from_bytes(&png, "upload.png", &PageOptions::default()).unwrap();
        assert_eq!((it.page_count(), it.len(), it.name()), (1, 1, "upload.png"));
    }

    #[test]
    fn non_image_bytes_are_an_error_naming_the_upload() {
        let err =
            pages_from_bytes(b"hello, world", "notes.txt", &PageOptions::default()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("notes.txt: neither a PDF nor"), "{msg}");
        let err = pages_from_bytes(b"", "empty.bin", &PageOptions::default()).unwrap_err();
        assert!(format!("{err}").starts_with("empty.bin: "), "{err:#}");
    }

    #[cfg(not(feature = "pdf"))]
    #[test]
    fn pdf_without_the_feature_is_a_clear_error() {
        let err = pages_from_bytes(b"%PDF-1.4\n", "doc.pdf", &PageOptions::default()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("doc.pdf") && msg.contains("no PDF support"),
            "{msg}"
        );
    }

    #[cfg(feature = "pdf")]
    #[test]
    fn garbage_pdf_is_an_error_not_a_panic() {
        for bytes in [
            &b"%PDF-1.4\n"[..],
            b"%PDF-1.4\ngarbage \x00\xff junk 1 0 obj << /Type /Pages",
            b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n",
        ] {
            let err = pages_from_bytes(bytes, "bad.pdf", &PageOptions::default()).unwrap_err();
            assert!(format!("{err}").starts_with("bad.pdf: "), "{err:#}");
        }
    }
}
