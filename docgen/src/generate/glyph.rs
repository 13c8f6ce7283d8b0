//! `glyph`: one to three random characters, drawn large.
//!
//! A glyph or two per image token and nothing else in the picture: a first reading lesson
//! for a model trained from scratch, where no word list can help it guess.

use rand::Rng;

use super::{Builder, Document, Kind};

impl<R: Rng> Builder<'_, R> {
    pub(super) fn glyph(&mut self) -> Document {
        let font = self.line_font();
        let size = self.rng.gen_range(24.0..48.0f32).round();
        let len = self.rng.gen_range(1..4);
        let text = self.random_chars(len);
        let margin = self.rng.gen_range(4.0..12.0f32).round();
        self.single_line(Kind::Glyph, font, size, text, margin)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::documents;
    use super::super::CODE_CHARS;
    use super::*;

    #[test]
    fn glyphs_are_one_to_three_code_characters() {
        for doc in documents(Kind::Glyph, 40) {
            let text = doc.text();
            assert!((1..=3).contains(&text.len()), "{text:?}");
            assert!(text.bytes().all(|b| CODE_CHARS.contains(&b)), "{text:?}");
        }
    }
}
