//! `word`: one or two words, a number, a sum of money, a date or a name, alone in a small
//! crop.
//!
//! The easiest reading there is, and the first thing a model trained from scratch learns
//! to read: a few glyphs, no layout, a tight margin.

use rand::Rng;

use super::{money, Builder, Document, Kind};
use crate::words::WORDS;

impl<R: Rng> Builder<'_, R> {
    pub(super) fn word(&mut self) -> Document {
        let font = self.line_font();
        let size = self.rng.gen_range(10.0..42.0f32).round();
        let text = match self.rng.gen_range(0..11) {
            0 => self.rng.gen_range(0..100_000).to_string(),
            1 => money(self.rng.gen_range(1..100_000)),
            2 => self.date(),
            3 => self.full_name(),
            4 => self.number(),
            5 => self.price(),
            6 => self.percent(),
            7 => self.time(),
            8 => self.ref_code(),
            _ => {
                let n = self.rng.gen_range(1..3);
                (0..n)
                    .map(|_| {
                        let w = self.pick(WORDS);
                        self.cased(w)
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let margin = self.rng.gen_range(4.0..12.0f32).round();
        self.single_line(Kind::Word, font, size, text, margin)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{documents, lines};
    use super::*;

    #[test]
    fn a_word_is_one_short_line() {
        for doc in documents(Kind::Word, 40) {
            let lines = lines(&doc);
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert_eq!(lines[0].len(), 1, "{lines:?}");
            let text = doc.text();
            assert!(!text.is_empty() && !text.contains('\n'), "{text:?}");
            // At most a first and a last name, or two words.
            assert!(text.split(' ').count() <= 2, "{text:?}");
            assert!(doc.questions.is_empty() && doc.receipt.is_none());
        }
    }
}
