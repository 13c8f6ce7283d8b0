//! `line`: one line of text: a sentence, a name and a date, or a street address.
//!
//! The step between single words and pages: word spacing, punctuation and a longer reading
//! order, still without any layout to find.

use rand::seq::SliceRandom;
use rand::Rng;

use super::{Builder, Document, Kind};
use crate::words::{CITIES, STREETS, WORDS};

impl<R: Rng> Builder<'_, R> {
    pub(super) fn line(&mut self) -> Document {
        let font = self.line_font();
        let size = self.rng.gen_range(10.0..42.0f32).round();
        let words = self.rng.gen_range(2..9);
        let text = match self.rng.gen_range(0..7) {
            0 => format!("{} {}", self.full_name(), self.date()),
            1 => format!(
                "{}, {} {}",
                self.pick(STREETS),
                self.rng.gen_range(1..300),
                self.pick(CITIES)
            ),
            2 | 3 => self.mixed_line(words),
            _ => self.sentence(words),
        };
        let margin = self.rng.gen_range(8.0..24.0f32).round();
        self.single_line(Kind::Line, font, size, text, margin)
    }

    /// Words in any case mixed with numbers, prices, dates, times, codes and percentages,
    /// some in brackets or quotes or followed by punctuation (`Total (incl. VAT): $1,204.50`).
    fn mixed_line(&mut self, words: usize) -> String {
        let mut out: Vec<String> = Vec::with_capacity(words);
        for _ in 0..words {
            let mut t = match self.rng.gen_range(0..12) {
                0 => self.number(),
                1 => self.price(),
                2 => self.percent(),
                3 => self.long_date(),
                4 => self.time(),
                5 => self.ref_code(),
                _ => {
                    let w = self.pick(WORDS);
                    self.cased(w)
                }
            };
            match self.rng.gen_range(0..14) {
                0 => t = format!("({t})"),
                1 => t = format!("[{t}]"),
                2 => t = format!("\"{t}\""),
                3 => t = format!("'{t}'"),
                4 => t.push(','),
                5 => t.push(':'),
                6 => t.push(';'),
                7 => t = format!("{t} -"),
                8 => t = format!("{t} /"),
                9 => t.push(*['.', '!', '?', '*'].choose(self.rng).unwrap_or(&'.')),
                _ => {}
            }
            out.push(t);
        }
        out.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{documents, lines};
    use super::*;

    #[test]
    fn a_line_is_one_line_of_words() {
        for doc in documents(Kind::Line, 40) {
            let lines = lines(&doc);
            assert_eq!(lines.len(), 1, "{lines:?}");
            let text = doc.text();
            assert!(text.split(' ').count() >= 2, "{text:?}");
            assert!(doc.questions.is_empty() && doc.fields.is_empty());
        }
    }
}
