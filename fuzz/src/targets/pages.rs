//! `ove ocr`'s input path before the model: bytes to pages (a PDF rendered by hayro, or an
//! image decoded), each page through the layout stage.

use ove_runtime::layout::{find_lines, LayoutOptions};
use ove_runtime::pages::{iter_pages_from_bytes, PageOptions};

use crate::MAX_PIXELS;

/// Low resolution and few pages: the same checks and rendering code as the defaults,
/// with pages small enough to render in milliseconds.
const OPTIONS: PageOptions = PageOptions {
    dpi: 24.0,
    max_pages: 3,
    max_page_pixels: 600_000,
    max_image_pixels: MAX_PIXELS,
};

pub fn pdf(data: &[u8]) {
    let Ok(pages) = iter_pages_from_bytes(data, "fuzz-input", &OPTIONS) else {
        return;
    };
    assert!(
        pages.page_count() <= OPTIONS.max_pages,
        "page limit not kept"
    );
    for page in pages.flatten() {
        let img = &page.image;
        let pixels = u64::from(img.width()) * u64::from(img.height());
        let limit = OPTIONS.max_page_pixels.max(MAX_PIXELS);
        assert!(pixels <= limit, "page of {pixels} pixels past the limit");
        let layout = find_lines(img, &LayoutOptions::default());
        for line in &layout.lines {
            let b = line.bbox;
            assert!(
                b.x0 <= b.x1 && b.y0 <= b.y1 && b.x1 <= img.width() && b.y1 <= img.height(),
                "line box {b:?} outside the {}x{} page",
                img.width(),
                img.height()
            );
        }
    }
}
