//! The rendered example pages of the repository, and the timing run.

use super::*;

/// A rendered example page of the repository and its transcript's line count.
fn example(name: &str) -> Option<(RgbImage, usize)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let img = image::open(dir.join(format!("{name}.png"))).ok()?.to_rgb8();
    let text = std::fs::read_to_string(dir.join(format!("{name}.txt"))).ok()?;
    Some((img, text.lines().filter(|l| !l.trim().is_empty()).count()))
}

#[test]
fn rendered_examples_have_their_transcripts_line_count() {
    for name in ["docgen-paragraph", "docgen-receipt", "docgen-form"] {
        let Some((img, n)) = example(name) else {
            panic!("examples/{name}.png or .txt missing");
        };
        let layout = find_lines(&img, &LayoutOptions::default());
        assert_eq!(layout.lines.len(), n, "{name}: {:?}", layout.lines);
        // One column each: reading order is top to bottom.
        let tops: Vec<u32> = layout.lines.iter().map(|l| l.bbox.y0).collect();
        assert!(tops.windows(2).all(|p| p[0] < p[1]), "{name}: {tops:?}");
    }
}

/// Timing on a dense 1000x1400 page (40 lines, noise); meaningful in an optimised build:
/// `cargo test --workspace --release layout_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn layout_timing() {
    let mut rng = Lcg(8);
    let mut img = blank(1000, 1400);
    let lines = paragraph(&mut rng, 50, 950, 40, 40, 33);
    draw_lines(&mut img, &lines);
    speckle(&mut img, &mut rng, 500);
    let opts = LayoutOptions::default();
    let mut best = f64::MAX;
    for _ in 0..10 {
        let t = std::time::Instant::now();
        let l = find_lines(&img, &opts);
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(l.lines.len(), 40);
    }
    eprintln!("find_lines 1000x1400: best of 10 {:.2} ms", best * 1e3);
}
