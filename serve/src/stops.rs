//! Stop sequences (`stop` in a chat request) on streamed text.
//!
//! Text is streamed as it is generated, but a stop sequence can arrive split across
//! tokens: the end of the text that could still grow into a stop sequence is held back
//! until the next piece shows whether it does. What the client sees is the text up to, not
//! including, the first stop sequence, exactly as if the whole answer had been cut after
//! the fact.

/// Matches stop sequences on text that arrives in pieces.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    matched: bool,
}

impl StopMatcher {
    /// `stops` must not contain empty strings (the request checks refuse them).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            held: String::new(),
            matched: false,
        }
    }

    /// Has a stop sequence been seen (nothing more is passed on after it)?
    pub fn matched(&self) -> bool {
        self.matched
    }

    /// Takes the next piece; returns the text that can be passed on now.
    pub fn push(&mut self, piece: &str) -> String {
        if self.matched {
            return String::new();
        }
        self.held.push_str(piece);
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s)).min() {
            self.matched = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return out;
        }
        let keep = self
            .stops
            .iter()
            .map(|s| longest_prefix_suffix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        out
    }

    /// The text still held back at the end of generation (no stop sequence completed).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The length of the longest proper prefix of `stop` that `text` ends with.
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .filter(|&k| stop.is_char_boundary(k))
        .find(|&k| text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            out.push_str(&m.push(p));
        }
        out.push_str(&m.finish());
        (out, m.matched())
    }

    #[test]
    fn the_text_ends_before_the_first_stop_even_when_split_across_pieces() {
        assert_eq!(
            run(&["END"], &["abc E", "N", "D more"]),
            ("abc ".into(), true)
        );
        assert_eq!(run(&["\n\n", "x"], &["a\n", "\nb x"]), ("a".into(), true));
        // The earliest of several wins.
        assert_eq!(run(&["cd", "b"], &["abcd"]), ("a".into(), true));
    }

    #[test]
    fn a_false_start_is_passed_on_once_it_cannot_match() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abc EN"), "abc ");
        assert_eq!(m.push("x"), "ENx");
        assert_eq!(run(&["END"], &["E", "N"]), ("EN".into(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        assert_eq!(run(&["é!"], &["caf", "é", "é!"]), ("café".into(), true));
        assert_eq!(
            run(&["日本"], &["今日", "は日"]),
            ("今日は日".into(), false)
        );
    }
}
