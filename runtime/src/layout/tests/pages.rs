//! Synthetic pages: a paragraph, a receipt, a form and a table, two columns, a rotated page,
//! uneven lighting, speck noise, empty and tiny pages, small marks.

use super::*;

#[test]
fn paragraph_of_five_lines() {
    let mut rng = Lcg(1);
    let mut img = blank(900, 300);
    let lines = paragraph(&mut rng, 60, 840, 60, 5, 32);
    draw_lines(&mut img, &lines);
    let layout = find_lines(&img, &LayoutOptions::default());
    let truth: Vec<LineBox> = lines.iter().map(|l| bbox(l)).collect();
    assert_lines(&layout, &truth, 0.9);
    assert_eq!(layout.skew_degrees, 0.0);
    assert!(
        layout.lines.iter().all(|l| l.block == 0),
        "{:?}",
        layout.lines
    );
}

#[test]
fn receipt_rows_are_one_line_each_and_rules_are_not_lines() {
    let mut rng = Lcg(2);
    let mut img = blank(520, 420);
    let mut truth = Vec::new();
    for i in 0..8u32 {
        let y = 40 + 38 * i + if i >= 4 { 20 } else { 0 };
        let end = 30 + rng.range(90, 220);
        let mut row = line_words(&mut rng, 30, end, y);
        let pw = rng.range(40, 70);
        row.push((490 - pw, y, 490, y + WORD_H)); // the price, right-aligned
        fill(&mut img, (30, y + WORD_H + 1, 490, y + WORD_H + 2), 120); // a faint hairline
        draw_words(&mut img, &row);
        truth.push(bbox(&row));
    }
    // A separator rule between the items and the totals, and a double rule at the end.
    fill(&mut img, (20, 40 + 38 * 4 + 2, 500, 40 + 38 * 4 + 4), INK);
    fill(&mut img, (20, 400, 500, 402), INK);
    fill(&mut img, (20, 405, 500, 407), INK);
    let layout = find_lines(&img, &LayoutOptions::default());
    assert_lines(&layout, &truth, 0.8);
}

#[test]
fn form_and_table_rows_are_one_line_each() {
    // Labels left, values in a column of their own: the gutter between them runs down every
    // row, but the labels are narrow, so each row stays one line. Then a table of three
    // narrow columns with a lone digit in the middle one.
    let mut rng = Lcg(9);
    let mut img = blank(700, 620);
    let mut truth = Vec::new();
    for i in 0..8u32 {
        let y = 40 + 34 * i;
        let end = 30 + rng.range(60, 130);
        let mut row = line_words(&mut rng, 30, end, y);
        let vend = 200 + rng.range(100, 420);
        row.extend(line_words(&mut rng, 200, vend, y));
        draw_words(&mut img, &row);
        truth.push(bbox(&row));
    }
    for i in 0..6u32 {
        let y = 360 + 34 * i;
        let mut row = line_words(&mut rng, 30, 140, y);
        row.push((300, y, 310, y + WORD_H)); // a one-digit quantity
        row.push((560 - rng.range(40, 70), y, 560, y + WORD_H));
        draw_words(&mut img, &row);
        truth.push(bbox(&row));
    }
    let layout = find_lines(&img, &LayoutOptions::default());
    assert_lines(&layout, &truth, 0.9);
}

#[test]
fn two_columns_read_left_column_first() {
    let mut rng = Lcg(3);
    let mut img = blank(1000, 560);
    // A title across the gutter, then two columns with rows at the same heights.
    let title = line_words(&mut rng, 320, 680, 30);
    let left = paragraph(&mut rng, 60, 460, 90, 12, 34);
    let right = paragraph(&mut rng, 540, 940, 90, 12, 34);
    draw_words(&mut img, &title);
    draw_lines(&mut img, &left);
    draw_lines(&mut img, &right);
    let layout = find_lines(&img, &LayoutOptions::default());
    let mut truth = vec![bbox(&title)];
    truth.extend(left.iter().map(|l| bbox(l)));
    truth.extend(right.iter().map(|l| bbox(l)));
    assert_lines(&layout, &truth, 0.9);
    let blocks: Vec<usize> = layout.lines.iter().map(|l| l.block).collect();
    assert!(blocks[1..13].iter().all(|&b| b == blocks[1]), "{blocks:?}");
    assert!(blocks[13..].iter().all(|&b| b == blocks[13]), "{blocks:?}");
    assert!(
        blocks[0] != blocks[1] && blocks[1] != blocks[13],
        "{blocks:?}"
    );
}

#[test]
fn rotated_page_skew_and_lines() {
    for deg in [2.0f32, -2.0] {
        let mut rng = Lcg(4);
        let mut img = blank(900, 400);
        let lines = paragraph(&mut rng, 60, 840, 110, 5, 34);
        let truth = draw_rotated(&mut img, &lines, deg);
        let layout = find_lines(&img, &LayoutOptions::default());
        assert!(
            (layout.skew_degrees - deg).abs() < 0.5,
            "{deg}: {}",
            layout.skew_degrees
        );
        assert_lines(&layout, &truth, 0.8);
    }
}

#[test]
fn uneven_lighting_makes_no_lines() {
    let mut img = blank(800, 600);
    light_unevenly(&mut img, 0.5, (250, 380), 0.55);
    let layout = find_lines(&img, &LayoutOptions::default());
    assert!(layout.lines.is_empty(), "{:?}", layout.lines);
    // With text under the same light, its lines and nothing else.
    let mut rng = Lcg(5);
    let mut img = blank(800, 600);
    let lines = paragraph(&mut rng, 40, 760, 200, 8, 32);
    draw_lines(&mut img, &lines);
    light_unevenly(&mut img, 0.5, (250, 380), 0.55);
    let layout = find_lines(&img, &LayoutOptions::default());
    let truth: Vec<LineBox> = lines.iter().map(|l| bbox(l)).collect();
    assert_lines(&layout, &truth, 0.85);
}

#[test]
fn speck_noise_makes_no_lines() {
    let mut rng = Lcg(6);
    let mut img = blank(800, 600);
    speckle(&mut img, &mut rng, 3000);
    let layout = find_lines(&img, &LayoutOptions::default());
    assert!(layout.lines.is_empty(), "{:?}", layout.lines);
    let mut img = blank(800, 600);
    let lines = paragraph(&mut rng, 40, 760, 200, 6, 32);
    draw_lines(&mut img, &lines);
    speckle(&mut img, &mut rng, 1000);
    let layout = find_lines(&img, &LayoutOptions::default());
    let truth: Vec<LineBox> = lines.iter().map(|l| bbox(l)).collect();
    // Specks touching a word, or against a line's band, join it and widen its box.
    assert_lines(&layout, &truth, 0.55);
}

#[test]
fn empty_and_tiny_pages() {
    let opts = LayoutOptions::default();
    assert!(find_lines(&blank(640, 480), &opts).lines.is_empty());
    for (w, h) in [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 3),
        (1, 500),
        (500, 1),
        (5, 700),
        (17, 4),
    ] {
        let mut img = RgbImage::from_pixel(w, h, Rgb([PAPER; 3]));
        if w > 2 && h > 2 {
            img.put_pixel(w / 2, h / 2, Rgb([0; 3]));
        }
        let l = find_lines(&img, &opts);
        assert_eq!((l.width, l.height), (w, h));
        let _ = draw(&img, &l);
    }
    // All ink: one huge blob, no line.
    let black = RgbImage::from_pixel(300, 200, Rgb([0; 3]));
    assert!(find_lines(&black, &opts).lines.is_empty());
}

fn truth_end(words: &[Rect]) -> u32 {
    words.iter().map(|r| r.2).max().unwrap_or(0)
}

#[test]
fn small_marks_join_their_line() {
    // "i" dots above, full stops and commas at the baseline, and a hyphen: one line.
    let mut img = blank(600, 120);
    let mut rng = Lcg(7);
    let words = line_words(&mut rng, 40, 560, 50);
    draw_words(&mut img, &words);
    for &(x0, y0, x1, y1) in &words {
        fill(&mut img, (x0 + 3, y0 - 3, x0 + 6, y0), INK); // a dot above
        fill(&mut img, (x1 + 1, y1 - 3, x1 + 4, y1 + 1), INK); // a comma after
    }
    let end = truth_end(&words);
    fill(&mut img, (end + 6, 56, end + 16, 59), INK); // a dash after the last comma
    let layout = find_lines(&img, &LayoutOptions::default());
    assert_eq!(layout.lines.len(), 1, "{:?}", layout.lines);
    let b = layout.lines[0].bbox;
    let truth = bbox(&words);
    assert!(
        b.y0 == truth.y0 - 3 && b.y1 == truth.y1 + 1 && b.x1 == end + 16,
        "{b:?} {truth:?}"
    );
    assert!(iou(&b, &truth) > 0.6);
}

#[test]
fn a_dash_past_a_space_joins_its_line() {
    // A dash after a monospaced space: its centre 1.2 text heights past the last word,
    // beyond the one height marks used to reach; the line's box takes it in.
    let mut rng = Lcg(11);
    let words = line_words(&mut rng, 30, 300, 40);
    let end = truth_end(&words);
    let dash = (end + 14, 47, end + 24, 50);
    let mut img = blank(400, 100);
    draw_words(&mut img, &words);
    fill(&mut img, dash, INK);
    let layout = find_lines(&img, &LayoutOptions::default());
    assert_eq!(layout.lines.len(), 1, "{:?}", layout.lines);
    let b = layout.lines[0].bbox;
    assert_eq!((b.y0, b.x1, b.y1), (40, dash.2, 40 + WORD_H), "{b:?}");
}
