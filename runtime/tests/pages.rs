//! Input files to pages (`ove_runtime::pages`): PDFs rendered, images decoded, bad files refused
//! with their name. The PDFs are written here by a tiny generator (objects, then an xref table
//! with their byte offsets), so each fixture is readable code.

use std::path::{Path, PathBuf};

use image::RgbImage;
use ove_runtime::pages::{is_pdf, iter_pages, load_pages, pages_from_bytes, PageOptions};

/// A minimal PDF writer: numbered objects, then a correct cross-reference table and trailer.
#[derive(Default)]
struct PdfWriter {
    /// Object `i + 1`'s body (what goes between `N 0 obj` and `endobj`).
    objects: Vec<Vec<u8>>,
    /// Extra trailer entries (e.g. `/Encrypt`).
    trailer_extra: String,
}

impl PdfWriter {
    /// Sets object `num` (1-based) to `body`.
    fn set(&mut self, num: usize, body: impl Into<Vec<u8>>) {
        if self.objects.len() < num {
            self.objects.resize(num, Vec::new());
        }
        self.objects[num - 1] = body.into();
    }

    /// Sets object `num` to a stream with `data` (uncompressed).
    fn set_stream(&mut self, num: usize, data: &[u8]) {
        let mut body = format!("<< /Length {} >>\nstream\n", data.len()).into_bytes();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\nendstream");
        self.set(num, body);
    }

    /// The file: header, objects, xref table (byte offsets), trailer with `/Root 1 0 R`.
    fn finish(&self) -> Vec<u8> {
        let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
        let mut offsets = Vec::new();
        for (i, body) in self.objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        }
        let xref = out.len();
        out.extend_from_slice(format!("xref\n0 {}\n", self.objects.len() + 1).as_bytes());
        // Each entry is exactly 20 bytes: 10-digit offset, 5-digit generation, type, EOL.
        out.extend_from_slice(b"0000000000 65535 f \n");
        for off in offsets {
            out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R{} >>\nstartxref\n{xref}\n%%EOF\n",
                self.objects.len() + 1,
                self.trailer_extra
            )
            .as_bytes(),
        );
        out
    }
}

/// A line of text on a page: baseline origin (x, y) in points from the bottom left, and text.
type Line<'a> = (f32, f32, &'a str);

/// A PDF whose pages (US Letter, 612 x 792 pt) each draw their lines in 24 pt Helvetica, the
/// standard font (not embedded: the renderer substitutes it). Objects: 1 catalog, 2 page tree,
/// 3 font, then per page k its page (4 + 2k) and content stream (5 + 2k).
fn text_pdf_with(pages: &[&[Line<'_>]], page_extra: &str) -> PdfWriter {
    let mut w = PdfWriter::default();
    w.set(1, "<< /Type /Catalog /Pages 2 0 R >>");
    let kids: Vec<String> = (0..pages.len())
        .map(|k| format!("{} 0 R", 4 + 2 * k))
        .collect();
    w.set(
        2,
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            pages.len()
        ),
    );
    w.set(
        3,
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    );
    for (k, lines) in pages.iter().enumerate() {
        w.set(
            4 + 2 * k,
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
                 /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R{page_extra} >>",
                5 + 2 * k
            ),
        );
        let content: String = lines
            .iter()
            .map(|(x, y, text)| format!("BT /F1 24 Tf {x} {y} Td ({text}) Tj ET\n"))
            .collect();
        w.set_stream(5 + 2 * k, content.as_bytes());
    }
    w
}

fn text_pdf(pages: &[&[Line<'_>]]) -> Vec<u8> {
    text_pdf_with(pages, "").finish()
}

fn hello_pdf() -> Vec<u8> {
    text_pdf(&[&[(72.0, 700.0, "Hello PDF")]])
}

/// The bounding box (x0, y0, x1, y1), inclusive, of pixels darker than mid-grey, and their count.
fn ink(img: &RgbImage) -> Option<((u32, u32, u32, u32), usize)> {
    let mut bbox: Option<(u32, u32, u32, u32)> = None;
    let mut n = 0;
    for (x, y, p) in img.enumerate_pixels() {
        if p.0.iter().map(|&c| u32::from(c)).sum::<u32>() < 3 * 128 {
            n += 1;
            bbox = Some(match bbox {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            });
        }
    }
    bbox.map(|b| (b, n))
}

/// Every pixel outside `(x0, y0, x1, y1)` (inclusive) is pure white.
fn white_outside(img: &RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> bool {
    img.enumerate_pixels()
        .filter(|(x, y, _)| !(x0..=x1).contains(x) || !(y0..=y1).contains(y))
        .all(|(_, _, p)| p.0 == [255, 255, 255])
}

/// Pixel row of a PDF y coordinate (points up from the bottom of a 792 pt page).
fn row(y_pt: f32, dpi: f32) -> f32 {
    (792.0 - y_pt) * dpi / 72.0
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn opts(dpi: f32) -> PageOptions {
    PageOptions {
        dpi,
        ..Default::default()
    }
}

#[test]
fn the_generated_pdfs_are_pdfs() {
    assert!(is_pdf(&hello_pdf()));
    assert!(!is_pdf(b"GIF89a"));
}

#[test]
fn one_page_renders_at_the_dpi_with_ink_where_the_text_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hello.pdf", &hello_pdf());
    let start = std::time::Instant::now();
    let pages = load_pages(&path, &PageOptions::default()).unwrap();
    eprintln!(
        "one US Letter page at 200 dpi: loaded and rendered in {:?}",
        start.elapsed()
    );
    assert_eq!(pages.len(), 1);
    let page = &pages[0];
    assert_eq!(page.index, 0);
    // US Letter at 200 dpi.
    assert_eq!(page.image.dimensions(), (1700, 2200));

    // "Hello PDF" at 24 pt from (72, 700) pt: starts at x = 200 px, baseline at row 255.6,
    // capitals about 17 pt (48 px) high, no descenders; about 109 pt (300 px) wide.
    let ((x0, y0, x1, y1), n) = ink(&page.image).expect("no ink on the page");
    let base = row(700.0, 200.0);
    assert!((195..=215).contains(&x0), "ink starts at x {x0}");
    assert!((460..=540).contains(&x1), "ink ends at x {x1}");
    assert!(
        y1 as f32 <= base + 2.0 && y1 as f32 >= base - 4.0,
        "ink bottom {y1}"
    );
    assert!(
        (y0 as f32) < base - 40.0 && (y0 as f32) > base - 60.0,
        "ink top {y0}"
    );
    assert!(n > 2000, "only {n} dark pixels");
    // White everywhere else (anti-aliasing stays within a few pixels of the glyphs).
    assert!(white_outside(&page.image, (x0 - 3, y0 - 3, x1 + 3, y1 + 3)));
}

#[test]
fn pages_come_in_file_order() {
    let heights = [700.0, 400.0, 100.0];
    let pdf = text_pdf(&[
        &[(72.0, heights[0], "First")],
        &[(72.0, heights[1], "Second")],
        &[(72.0, heights[2], "Third")],
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "three.pdf", &pdf);
    let dpi = 72.0;
    let pages = load_pages(&path, &opts(dpi)).unwrap();
    assert_eq!(pages.len(), 3);
    for (k, page) in pages.iter().enumerate() {
        assert_eq!(page.index, k);
        assert_eq!(page.image.dimensions(), (612, 792));
        let ((_, _, _, y1), _) = ink(&page.image).expect("no ink");
        let base = row(heights[k], dpi);
        assert!(
            (y1 as f32 - base).abs() <= 3.0,
            "page {k}: ink ends at row {y1}, baseline at {base}"
        );
    }

    // The same, one page at a time.
    let mut it = iter_pages(&path, &opts(dpi)).unwrap();
    assert_eq!((it.page_count(), it.len()), (3, 3));
    let first = it.next().unwrap().unwrap();
    assert_eq!(first, pages[0]);
    assert_eq!(it.len(), 2);
    assert_eq!(it.map(|p| p.unwrap().index).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn garbage_pdf_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "junk.pdf",
        b"%PDF-1.4\n\x00\x01garbage ]]>> endobj 7 0 R << /Kids [",
    );
    let err = load_pages(&path, &PageOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(format!("{err}").contains(&*path.to_string_lossy()), "{msg}");
    assert!(msg.contains("broken PDF"), "{msg}");
}

#[test]
fn truncated_pdf_is_pages_or_an_error_never_a_panic() {
    // Every prefix of a valid file: the reader may recover pages from what is left (it
    // rebuilds a lost xref table by scanning), or refuse it, but always with the name.
    let pdf = hello_pdf();
    let opts = opts(10.0);
    let (mut ok, mut refused) = (0, 0);
    for cut in 5..pdf.len() {
        match pages_from_bytes(&pdf[..cut], "cut.pdf", &opts) {
            Ok(pages) => {
                assert!(!pages.is_empty());
                ok += 1;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(msg.starts_with("cut.pdf: "), "cut at {cut}: {msg}");
                assert!(!msg.contains("failed on"), "cut at {cut}: a panic: {msg}");
                refused += 1;
            }
        }
    }
    eprintln!("truncated: {ok} prefixes still gave pages, {refused} were refused");
    assert!(refused > 0);
}

#[test]
fn too_many_pages_are_refused_with_the_limit() {
    let pdf = text_pdf(&[&[], &[], &[]]);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "long.pdf", &pdf);
    let limited = PageOptions {
        max_pages: 2,
        ..Default::default()
    };
    let err = load_pages(&path, &limited).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.starts_with(&*path.to_string_lossy()), "{msg}");
    assert!(
        msg.contains("3 pages") && msg.contains("limit of 2") && msg.contains("--max-pages"),
        "{msg}"
    );
    // Empty pages render white.
    let pages = load_pages(&path, &opts(36.0)).unwrap();
    assert_eq!(pages.len(), 3);
    assert!(pages
        .iter()
        .all(|p| p.image.pixels().all(|p| p.0 == [255; 3])));
}

#[test]
fn a_pdf_without_pages_is_refused() {
    let mut w = PdfWriter::default();
    w.set(1, "<< /Type /Catalog /Pages 2 0 R >>");
    w.set(2, "<< /Type /Pages /Kids [] /Count 0 >>");
    let err = pages_from_bytes(&w.finish(), "empty.pdf", &PageOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.starts_with("empty.pdf: "), "{msg}");
    assert!(
        msg.contains("no pages") || msg.contains("broken PDF"),
        "{msg}"
    );
}

#[test]
fn a_password_protected_pdf_is_refused_clearly() {
    // Standard security handler, RC4 40-bit, with a user password check value that the empty
    // password does not match: a reader can only open it with the password.
    let mut w = text_pdf_with(&[&[(72.0, 700.0, "Secret")]], "");
    let next = w.objects.len() + 1;
    w.set(
        next,
        format!(
            "<< /Filter /Standard /V 1 /R 2 /O <{}> /U <{}> /P -44 >>",
            "ab".repeat(32),
            "cd".repeat(32)
        ),
    );
    w.trailer_extra = format!(
        " /Encrypt {next} 0 R /ID [<{0}> <{0}>]",
        "0123456789abcdef".repeat(2)
    );
    let err = pages_from_bytes(&w.finish(), "secret.pdf", &PageOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.starts_with("secret.pdf: "), "{msg}");
    assert!(msg.contains("password") || msg.contains("encrypt"), "{msg}");
}

#[test]
fn an_oversized_page_is_rendered_at_a_lower_dpi_that_fits() {
    let limited = PageOptions {
        max_page_pixels: 100_000,
        ..Default::default()
    };
    let pages = pages_from_bytes(&hello_pdf(), "hello.pdf", &limited).unwrap();
    let (w, h) = pages[0].image.dimensions();
    assert!(u64::from(w) * u64::from(h) <= 100_000, "{w} x {h}");
    assert!(u64::from(w) * u64::from(h) > 95_000, "{w} x {h}");
    assert!((f64::from(w) / f64::from(h) - 612.0 / 792.0).abs() < 0.01);
    assert!(ink(&pages[0].image).is_some());
}

#[test]
fn a_rotated_page_is_rendered_as_viewers_show_it() {
    // /Rotate 90: shown turned a quarter clockwise, so the page is landscape and the line
    // near the top left of the unrotated page runs down the right edge, near the top.
    let pdf = text_pdf_with(&[&[(72.0, 700.0, "Turned")]], " /Rotate 90").finish();
    let pages = pages_from_bytes(&pdf, "turned.pdf", &opts(72.0)).unwrap();
    assert_eq!(pages[0].image.dimensions(), (792, 612));
    let ((x0, y0, x1, y1), _) = ink(&pages[0].image).expect("no ink");
    assert!(x0 > 690 && x1 < 725, "ink x {x0}..{x1}");
    assert!((70..=76).contains(&y0) && y1 < 160, "ink y {y0}..{y1}");
}

#[test]
fn a_png_file_is_one_page() {
    let dir = tempfile::tempdir().unwrap();
    let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 7]));
    let path = dir.path().join("scan.png");
    img.save(&path).unwrap();
    let pages = load_pages(&path, &PageOptions::default()).unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].index, 0);
    assert_eq!(pages[0].image, img);

    // The content decides, not the name: a PNG called .pdf is still an image, and its
    // decode-bomb limit is max_image_pixels.
    let renamed = dir.path().join("scan.pdf");
    std::fs::copy(&path, &renamed).unwrap();
    assert_eq!(
        load_pages(&renamed, &PageOptions::default()).unwrap(),
        pages
    );
    let tiny = PageOptions {
        max_image_pixels: 19,
        ..Default::default()
    };
    let msg = format!("{:#}", load_pages(&path, &tiny).unwrap_err());
    assert!(
        msg.starts_with(&*path.to_string_lossy()) && msg.contains("--max-image-pixels"),
        "{msg}"
    );
}

#[test]
fn a_file_that_is_neither_image_nor_pdf_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "notes.txt", b"just some text, not a page\n");
    let err = load_pages(&path, &PageOptions::default()).unwrap_err();
    assert!(
        format!("{err}").contains(&*path.to_string_lossy()),
        "{err:#}"
    );
    assert!(format!("{err:#}").contains("neither a PDF nor"), "{err:#}");
}

#[test]
fn unreadable_files_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pdf");
    let err = load_pages(&missing, &PageOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&*missing.to_string_lossy()) && msg.contains("cannot read"),
        "{msg}"
    );
    let err = load_pages(dir.path(), &PageOptions::default()).unwrap_err();
    assert!(format!("{err}").contains("is a directory"), "{err:#}");
}
