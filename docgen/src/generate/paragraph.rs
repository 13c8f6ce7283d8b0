//! `paragraph`: one or two paragraphs of sentences, greedily wrapped at a measured width,
//! under a bold title three times in five.
//!
//! Running text over several lines: the model has to read the lines in order and join
//! them with newlines, as the ground truth does.

use rand::Rng;

use super::{Builder, Document, Kind};
use crate::render::Item;
use crate::words::PARAGRAPH_TITLES;

impl<R: Rng> Builder<'_, R> {
    pub(super) fn paragraph(&mut self) -> Document {
        let font = self.body_font();
        let bold = self.bold_of(font);
        let size = self.rng.gen_range(15.0..26.0f32).round();
        let margin = self.rng.gen_range(16.0..40.0f32).round();
        let text_w = self.rng.gen_range(18.0..34.0f32) * size;
        let mut items = Vec::new();
        if self.rng.gen_bool(0.6) {
            let title = self.pick(PARAGRAPH_TITLES).to_string();
            let tsize = (size * self.rng.gen_range(1.2..1.7f32)).round();
            items.push(Item::Line {
                segments: vec![Self::seg(title, bold, margin)],
                size: tsize,
            });
            items.push(Item::Space(size * 0.4));
        }
        let paragraphs = self.rng.gen_range(1..3);
        for p in 0..paragraphs {
            if p > 0 {
                items.push(Item::Space(size * 0.6));
            }
            let sentences = self.rng.gen_range(2..5);
            let mut words: Vec<String> = Vec::new();
            for _ in 0..sentences {
                let n = self.rng.gen_range(4..12);
                words.extend(self.sentence(n).split(' ').map(str::to_string));
            }
            // Greedy word wrap at the measured width.
            let mut line = String::new();
            for w in words {
                let candidate = if line.is_empty() {
                    w.clone()
                } else {
                    format!("{line} {w}")
                };
                if !line.is_empty() && self.width(font, size, &candidate) > text_w {
                    items.push(Item::Line {
                        segments: vec![Self::seg(std::mem::take(&mut line), font, margin)],
                        size,
                    });
                    line = w;
                } else {
                    line = candidate;
                }
            }
            if !line.is_empty() {
                items.push(Item::Line {
                    segments: vec![Self::seg(line, font, margin)],
                    size,
                });
            }
        }
        let widest = items
            .iter()
            .filter_map(|i| match i {
                Item::Line { segments, size } => {
                    Some(self.width(segments[0].font, *size, &segments[0].text))
                }
                _ => None,
            })
            .fold(0.0, f32::max);
        let layout = self.layout(widest + 2.0 * margin, margin, items);
        Document::plain(Kind::Paragraph, layout)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{documents, lines};
    use super::*;

    #[test]
    fn paragraphs_wrap_into_several_lines_of_one_segment() {
        let docs = documents(Kind::Paragraph, 20);
        for doc in &docs {
            let lines = lines(doc);
            // At least two sentences of four words: more than one line of text in all.
            assert!(doc.text().split(' ').count() >= 8, "{lines:?}");
            assert!(lines.iter().all(|l| l.len() == 1), "{lines:?}");
        }
        // Wrapping happens: some paragraph spans more lines than a title and one line.
        assert!(docs.iter().any(|d| lines(d).len() > 2));
    }
}
