//! `line`: one line of text: a sentence, a name and a date, or a street address.
//!
//! The step between single words and pages: word spacing, punctuation and a longer reading
//! order, still without any layout to find.

use rand::Rng;

use super::{Builder, Document, Kind};
use crate::words::{CITIES, STREETS};

impl<R: Rng> Builder<'_, R> {
    pub(super) fn line(&mut self) -> Document {
        let font = self.line_font();
        let size = self.rng.gen_range(18.0..44.0f32).round();
        let words = self.rng.gen_range(2..9);
        let text = match self.rng.gen_range(0..4) {
            0 => format!("{} {}", self.full_name(), self.date()),
            1 => format!(
                "{}, {} {}",
                self.pick(STREETS),
                self.rng.gen_range(1..300),
                self.pick(CITIES)
            ),
            _ => self.sentence(words),
        };
        let margin = self.rng.gen_range(8.0..24.0f32).round();
        self.single_line(Kind::Line, font, size, text, margin)
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
