//! `code`: random characters in one to three groups, like serial numbers and reference
//! codes.
//!
//! No word list or language prior can guess them, so every token of the answer has to come
//! from the glyphs: training on codes measures reading alone.

use rand::Rng;

use super::{Builder, Document, Kind};

impl<R: Rng> Builder<'_, R> {
    pub(super) fn code(&mut self) -> Document {
        let font = self.line_font();
        let size = self.rng.gen_range(10.0..42.0f32).round();
        let groups = self.rng.gen_range(1..4);
        let text = (0..groups)
            .map(|_| {
                let len = self.rng.gen_range(2..7);
                self.random_chars(len)
            })
            .collect::<Vec<_>>()
            .join(if self.rng.gen_bool(0.5) { " " } else { "-" });
        let margin = self.rng.gen_range(4.0..12.0f32).round();
        self.single_line(Kind::Code, font, size, text, margin)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::documents;
    use super::super::CODE_CHARS;
    use super::*;

    #[test]
    fn codes_are_groups_of_code_characters() {
        for doc in documents(Kind::Code, 40) {
            let text = doc.text();
            // One separator per code, spaces or dashes (neither is a code character).
            assert!(!(text.contains(' ') && text.contains('-')), "{text:?}");
            let groups: Vec<&str> = text.split([' ', '-']).collect();
            assert!((1..=3).contains(&groups.len()), "{text:?}");
            for g in groups {
                assert!((2..=6).contains(&g.len()), "{text:?}");
                assert!(g.bytes().all(|b| CODE_CHARS.contains(&b)), "{text:?}");
            }
        }
    }
}
