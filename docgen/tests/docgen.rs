//! Determinism, ground truth, fonts, augmentation and the folder / manifest output.

use ove_core::layout_metrics::LineBox;
use ove_docgen::augment::{degrade, homography, warp};
use ove_docgen::dataset::{png_bytes, sample, write_set, Degradation, LinesFile, Options};
use ove_docgen::fonts::{self, LoadedFont, Split, CATALOGUE};
use ove_docgen::generate::{money, Kind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn pool() -> Vec<LoadedFont> {
    // DejaVu is on every machine the project builds on (fonts-dejavu-core / -extra).
    fonts::load_all(&fonts::dejavu()).expect("DejaVu fonts (apt-get install fonts-dejavu)")
}

fn opts(kinds: &[Kind], seed: u64, degradation: Degradation) -> Options {
    Options {
        kinds: kinds.to_vec(),
        seed,
        degradation,
    }
}

#[test]
fn same_seed_same_bytes() {
    let pool = pool();
    for deg in [
        Degradation::Clean,
        Degradation::Level(1.0),
        Degradation::Mixed,
    ] {
        let o = opts(&Kind::ALL, 42, deg);
        for index in 0..5 {
            let a = sample(&pool, &o, index).unwrap();
            let b = sample(&pool, &o, index).unwrap();
            assert_eq!(a.text, b.text);
            assert_eq!(
                png_bytes(&a.image).unwrap(),
                png_bytes(&b.image).unwrap(),
                "{}",
                a.name
            );
        }
    }
    // Another seed gives another document.
    let a = sample(&pool, &opts(&[Kind::Paragraph], 1, Degradation::Clean), 0).unwrap();
    let b = sample(&pool, &opts(&[Kind::Paragraph], 2, Degradation::Clean), 0).unwrap();
    assert_ne!(png_bytes(&a.image).unwrap(), png_bytes(&b.image).unwrap());
}

#[test]
fn ground_truth_is_what_was_drawn() {
    let pool = pool();
    let o = opts(&Kind::ALL, 7, Degradation::Clean);
    for index in 0..25 {
        let s = sample(&pool, &o, index).unwrap();
        let lines: Vec<&str> = s.text.split('\n').collect();
        assert_eq!(lines.len(), s.document.layout.line_count(), "{}", s.name);
        for l in &lines {
            assert!(!l.is_empty(), "{}: empty line", s.name);
            assert_eq!(l.trim(), *l, "{}: stray whitespace in {l:?}", s.name);
            assert!(!l.contains("  "), "{}: double space in {l:?}", s.name);
        }
        // Every answer is printed on the page.
        for (q, a) in &s.document.questions {
            assert!(
                s.text.contains(a.as_str()),
                "{}: {q} -> {a} not in text",
                s.name
            );
        }
        // Ink was drawn: the page is not blank.
        let first = s.image.get_pixel(0, 0);
        assert!(
            s.image.pixels().any(|p| p != first),
            "{}: blank page",
            s.name
        );
        // Segments on one line do not overlap.
        for item in &s.document.layout.items {
            if let ove_docgen::render::Item::Line { segments, size } = item {
                let mut segs = segments.clone();
                segs.sort_by(|a, b| a.x.total_cmp(&b.x));
                for w in segs.windows(2) {
                    let end = w[0].x
                        + ove_docgen::render::text_width(&pool[w[0].font].font, *size, &w[0].text);
                    assert!(
                        end <= w[1].x,
                        "{}: {:?} overlaps {:?}",
                        s.name,
                        w[0].text,
                        w[1].text
                    );
                }
                let last = segs.last().unwrap();
                let end = last.x
                    + ove_docgen::render::text_width(&pool[last.font].font, *size, &last.text);
                assert!(
                    end <= s.document.layout.width as f32 + 0.5,
                    "{}: off the page",
                    s.name
                );
            }
        }
    }
}

#[test]
fn glyphs_and_codes_are_random_characters() {
    let pool = pool();
    let mut seen = std::collections::HashSet::new();
    for seed in 0..40 {
        let g = sample(&pool, &opts(&[Kind::Glyph], seed, Degradation::Clean), 0).unwrap();
        assert!(
            (1..=3).contains(&g.text.chars().count()),
            "glyph text {:?}",
            g.text
        );
        let c = sample(&pool, &opts(&[Kind::Code], seed, Degradation::Clean), 0).unwrap();
        let groups: Vec<&str> = c.text.split([' ', '-']).collect();
        assert!((1..=3).contains(&groups.len()), "code text {:?}", c.text);
        for t in [g.text.as_str()].into_iter().chain(groups) {
            assert!((1..=6).contains(&t.len()), "group {t:?}");
            assert!(
                t.chars().all(|ch| ch.is_ascii_graphic() && ch != '-'),
                "group {t:?}"
            );
            seen.extend(t.chars());
        }
    }
    // Drawn from the whole alphabet, not a word list: many distinct characters.
    assert!(seen.len() > 40, "only {} distinct characters", seen.len());
}

#[test]
fn receipt_totals_add_up() {
    let pool = pool();
    for seed in 0..20 {
        let s = sample(&pool, &opts(&[Kind::Receipt], seed, Degradation::Clean), 0).unwrap();
        let r = s.document.receipt.as_ref().unwrap();
        let sum: i64 = r.items.iter().map(|(_, q, u)| q * u).sum();
        assert_eq!(r.subtotal, sum);
        assert_eq!(r.tax, (r.subtotal * r.tax_percent + 50) / 100);
        assert_eq!(r.total, r.subtotal + r.tax);
        // And in the text: item amounts are the last word of the lines between the header
        // and SUBTOTAL/TOTAL, and they add up to the printed total minus tax.
        let lines: Vec<&str> = s.text.lines().collect();
        let items = &lines[3..3 + r.items.len()];
        let printed: i64 = items
            .iter()
            .map(|l| {
                let a = l.rsplit(' ').next().unwrap();
                (a.replace('.', "")).parse::<i64>().unwrap()
            })
            .sum();
        assert_eq!(printed, r.subtotal, "{}", s.text);
        let total_line = lines.iter().find(|l| l.starts_with("TOTAL ")).unwrap();
        assert_eq!(*total_line, format!("TOTAL {}", r.total_text));
        assert!(r.total_text.ends_with(&money(r.total)));
        let q = &s.document.questions[0];
        assert_eq!(
            (q.0.as_str(), q.1.as_str()),
            ("What is the total?", r.total_text.as_str())
        );
    }
}

#[test]
fn form_fields_are_on_their_lines() {
    let pool = pool();
    for seed in 0..10 {
        let s = sample(&pool, &opts(&[Kind::Form], seed, Degradation::Clean), 0).unwrap();
        assert!(!s.document.fields.is_empty());
        for (label, value) in &s.document.fields {
            assert!(
                s.text
                    .lines()
                    .any(|l| l.starts_with(label.as_str()) && l.ends_with(value.as_str())),
                "{label}: {value} not in {}",
                s.text
            );
            let q = format!("What is the value of {label}?");
            assert!(s
                .document
                .questions
                .iter()
                .any(|(qq, a)| *qq == q && a == value));
        }
    }
}

#[test]
fn font_files_exist_or_name_their_package() {
    for f in CATALOGUE {
        match fonts::load(f) {
            Ok(_) => assert!(f.path().is_file()),
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(msg.contains(f.package), "{msg}");
                assert!(f.dir != "dejavu", "DejaVu must be installed: {msg}");
            }
        }
    }
    // Every font a document names is a catalogue font that exists.
    let pool = pool();
    let o = opts(&Kind::ALL, 3, Degradation::Clean);
    for index in 0..10 {
        for name in sample(&pool, &o, index).unwrap().fonts {
            let spec = CATALOGUE.iter().find(|f| f.name == name).unwrap();
            assert!(spec.path().is_file(), "{}", spec.path().display());
        }
    }
}

#[test]
fn font_split_is_disjoint() {
    let train = fonts::select("train").unwrap();
    let heldout = fonts::select("heldout").unwrap();
    assert!(!train.is_empty() && !heldout.is_empty());
    assert!(train.iter().all(|f| f.split == Split::Train));
    assert!(heldout
        .iter()
        .all(|f| !train.iter().any(|t| t.file == f.file)));
    assert_eq!(fonts::select("dejavu-sans,dejavu-serif").unwrap().len(), 2);
    assert!(fonts::select("comic-sans").is_err());
}

#[test]
fn augmentation_keeps_the_page() {
    let pool = pool();
    let s = sample(&pool, &opts(&[Kind::Receipt], 5, Degradation::Clean), 0).unwrap();
    let clean = &s.image;
    let paper = s.document.layout.paper;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for _ in 0..4 {
        let d = degrade(clean, 1.0, paper, &mut rng);
        assert_eq!(d.dimensions(), clean.dimensions());
        let mean = d
            .pixels()
            .map(|p| p.0.iter().map(|&c| c as f64).sum::<f64>() / 3.0)
            .sum::<f64>()
            / (d.width() * d.height()) as f64;
        assert!((100.0..=255.0).contains(&mean), "mean {mean}");
    }
    // Level 0 is the identity; a warp by nothing is close to it.
    assert_eq!(&degrade(clean, 0.0, paper, &mut rng), clean);
    let w = warp(clean, 0.0, 0.0, paper, &mut rng);
    let diff = w
        .pixels()
        .zip(clean.pixels())
        .map(|(a, b)| {
            a.0.iter()
                .zip(b.0)
                .map(|(x, y)| (*x as i32 - y as i32).abs())
                .max()
                .unwrap()
        })
        .max()
        .unwrap();
    assert!(diff <= 1, "identity warp differs by {diff}");
}

#[test]
fn homography_maps_corners() {
    let from = [(0.0, 0.0), (10.0, 0.0), (10.0, 5.0), (0.0, 5.0)];
    let to = [(1.0, 2.0), (12.0, 1.0), (11.0, 8.0), (0.0, 7.0)];
    let h = homography(&from, &to).unwrap();
    for (f, t) in from.iter().zip(to) {
        let z = h[6] * f.0 + h[7] * f.1 + h[8];
        let x = (h[0] * f.0 + h[1] * f.1 + h[2]) / z;
        let y = (h[3] * f.0 + h[4] * f.1 + h[5]) / z;
        assert!((x - t.0).abs() < 1e-9 && (y - t.1).abs() < 1e-9);
    }
}

#[test]
fn folder_and_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(&[Kind::Receipt, Kind::Form], 11, Degradation::Level(0.5));
    let s = write_set(dir.path(), &fonts::dejavu(), &o, 0, 2, true).unwrap();
    assert_eq!(s.images, 2);
    for name in ["receipt-000000", "form-000001"] {
        assert!(dir.path().join(format!("{name}.png")).is_file());
        let txt = std::fs::read_to_string(dir.path().join(format!("{name}.txt"))).unwrap();
        assert!(txt.ends_with('\n') && !txt.ends_with("\n\n"));
    }
    let read = |f: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.path().join(f))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let caps = read("captions.jsonl");
    assert_eq!(caps.len(), 2);
    assert_eq!(caps[0]["images"][0], "receipt-000000.png");
    let ocr = read("ocr.jsonl");
    assert_eq!(
        ocr[0]["conversations"][0]["value"],
        "<image>\nRead all the text in the image."
    );
    assert_eq!(ocr[0]["conversations"][1]["value"], caps[0]["caption"]);
    let stage2 = read("stage2.jsonl");
    assert_eq!(stage2.len(), s.stage2_records);
    assert!(stage2
        .iter()
        .any(|r| r["conversations"][0]["value"] == "<image>\nWhat is the total?"));
    assert!(stage2.iter().any(|r| r["conversations"][0]["value"]
        .as_str()
        .unwrap()
        .starts_with("<image>\nWhat is the value of ")));
    assert_eq!(read("meta.jsonl").len(), 2);
    // Beside each image, its line boxes: the sample's, round-tripped.
    for index in 0..2 {
        let sample = sample(&pool(), &o, index).unwrap();
        let path = dir.path().join(format!("{}.lines.json", sample.name));
        let file: LinesFile =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(file.image, format!("{}.png", sample.name));
        assert_eq!((file.width, file.height), sample.image.dimensions());
        let boxes: Vec<_> = file.lines.iter().map(|l| l.bbox).collect();
        assert_eq!(boxes, sample.lines);
        let texts: Vec<_> = file.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts.join("\n"), sample.text);
    }
}

#[test]
fn line_boxes_hold_each_lines_ink_and_follow_the_warp() {
    let pool = pool();
    for kind in [Kind::Paragraph, Kind::Receipt, Kind::Table] {
        let clean = sample(&pool, &opts(&[kind], 3, Degradation::Clean), 0).unwrap();
        assert_eq!(
            clean.lines.len(),
            clean.text.lines().count(),
            "{}",
            clean.name
        );
        let paper = clean.document.layout.paper;
        let ink = |b: &LineBox| {
            (b.y0..b.y1)
                .flat_map(|y| (b.x0..b.x1).map(move |x| (x, y)))
                .filter(|&(x, y)| clean.image.get_pixel(x, y).0 != paper)
                .count()
        };
        let all_ink = clean.image.pixels().filter(|p| p.0 != paper).count();
        let in_boxes: usize = clean.lines.iter().map(ink).sum();
        for (b, w) in clean.lines.iter().zip(clean.lines.iter().skip(1)) {
            assert!(b.y1 <= w.y0, "{}: lines overlap: {b:?} {w:?}", clean.name);
            assert!(ink(b) > 0);
        }
        // Everything drawn is in some line's box, except rules (receipts and tables).
        if kind == Kind::Paragraph {
            assert_eq!(in_boxes, all_ink, "{}", clean.name);
        }
    }
    // A rotation moves the boxes with the text: on a warped page (the same document as the
    // clean one, its boxes moved), the dark pixels are inside the moved boxes.
    let clean_of = |i| sample(&pool, &opts(&[Kind::Paragraph], 3, Degradation::Clean), i).unwrap();
    let o = opts(&[Kind::Paragraph], 3, Degradation::Level(1.0));
    let moved = (0..8)
        .map(|i| sample(&pool, &o, i).unwrap())
        .find(|s| s.lines != clean_of(s.index).lines)
        .expect("one of 8 strongly degraded pages is warped");
    let (w, h) = moved.image.dimensions();
    let inside = |x: u32, y: u32| {
        moved
            .lines
            .iter()
            .any(|b| (b.x0..b.x1).contains(&x) && (b.y0..b.y1).contains(&y))
    };
    let (mut dark, mut dark_inside) = (0usize, 0usize);
    for (x, y, p) in moved.image.enumerate_pixels() {
        let grey = (p.0[0] as u32 + p.0[1] as u32 + p.0[2] as u32) / 3;
        if grey < 90 {
            dark += 1;
            dark_inside += inside(x, y) as usize;
        }
    }
    assert!(dark > 0);
    let share = dark_inside as f64 / dark as f64;
    assert!(
        share > 0.98,
        "{}: {share:.3} of the dark pixels are in the boxes",
        moved.name
    );
    for b in &moved.lines {
        assert!(
            b.x0 < b.x1 && b.y0 < b.y1 && b.x1 <= w && b.y1 <= h,
            "{b:?}"
        );
    }
}
