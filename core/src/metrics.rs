//! OCR accuracy: character error rate (CER), word error rate (WER) and exact line matches.
//!
//! CER is the Levenshtein distance between the reference and the hypothesis as sequences of
//! Unicode scalar values, divided by the reference length; WER is the same on whitespace
//! separated tokens. Over many images the totals are the sum of edits over the sum of
//! reference lengths (not the mean of the per-image rates). Exact line match counts the
//! reference lines (trimmed) that occur, in order, as hypothesis lines (a longest common
//! subsequence of lines), over the number of reference lines.
//!
//! This module uses only `std`: `ove eval` (runtime side) and `ove-docgen score` share it, so
//! that both count the same way (an image without a prediction is an empty reading).

/// Levenshtein distance (insertions, deletions and substitutions all cost one).
pub fn levenshtein<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    if a.is_empty() {
        return b.len();
    }
    if b.is_empty() {
        return a.len();
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(x != y);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Length of the longest common subsequence.
fn lcs<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Normalises line endings and trailing whitespace the way every score sees them.
pub fn normalize(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim_matches('\n').to_string()
}

fn lines_of(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Edit counts of one hypothesis against one reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Score {
    pub char_edits: usize,
    pub ref_chars: usize,
    pub word_edits: usize,
    pub ref_words: usize,
    pub lines_matched: usize,
    pub ref_lines: usize,
}

/// A rate that is 0 for an empty reference matched by an empty hypothesis and 1 (or more)
/// when there is nothing to divide by but edits.
fn rate(edits: usize, len: usize) -> f64 {
    if len == 0 {
        if edits == 0 {
            0.0
        } else {
            1.0
        }
    } else {
        edits as f64 / len as f64
    }
}

impl Score {
    pub fn cer(&self) -> f64 {
        rate(self.char_edits, self.ref_chars)
    }
    pub fn wer(&self) -> f64 {
        rate(self.word_edits, self.ref_words)
    }
    /// Fraction of reference lines read exactly (1 for no reference lines).
    pub fn line_match(&self) -> f64 {
        if self.ref_lines == 0 {
            1.0
        } else {
            self.lines_matched as f64 / self.ref_lines as f64
        }
    }
}

impl std::ops::AddAssign for Score {
    fn add_assign(&mut self, o: Score) {
        self.char_edits += o.char_edits;
        self.ref_chars += o.ref_chars;
        self.word_edits += o.word_edits;
        self.ref_words += o.ref_words;
        self.lines_matched += o.lines_matched;
        self.ref_lines += o.ref_lines;
    }
}

/// Scores a hypothesis against a reference (both normalised with [`normalize`] first).
pub fn score(reference: &str, hypothesis: &str) -> Score {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    let rc: Vec<char> = r.chars().collect();
    let hc: Vec<char> = h.chars().collect();
    let rw: Vec<&str> = r.split_whitespace().collect();
    let hw: Vec<&str> = h.split_whitespace().collect();
    let rl = lines_of(&r);
    let hl = lines_of(&h);
    Score {
        char_edits: levenshtein(&rc, &hc),
        ref_chars: rc.len(),
        word_edits: levenshtein(&rw, &hw),
        ref_words: rw.len(),
        lines_matched: lcs(&rl, &hl),
        ref_lines: rl.len(),
    }
}

/// Sum of scores: its rates are total edits over total reference length.
pub fn total<'a>(scores: impl IntoIterator<Item = &'a Score>) -> Score {
    let mut t = Score::default();
    for s in scores {
        t += *s;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn levenshtein_by_hand() {
        // kitten -> sitten (k->s) -> sittin (e->i) -> sitting (+g): 3 edits.
        assert_eq!(levenshtein(&chars("kitten"), &chars("sitting")), 3);
        // flaw -> lawn: delete f, insert n.
        assert_eq!(levenshtein(&chars("flaw"), &chars("lawn")), 2);
        assert_eq!(levenshtein(&chars(""), &chars("abc")), 3);
        assert_eq!(levenshtein(&chars("abc"), &chars("")), 3);
        assert_eq!(levenshtein(&chars("same"), &chars("same")), 0);
        // Non-ASCII counts as one character each: é vs e is one substitution.
        assert_eq!(levenshtein(&chars("café"), &chars("cafe")), 1);
    }

    #[test]
    fn cer_and_wer_by_hand() {
        let s = score("kitten", "sitting");
        assert_eq!((s.char_edits, s.ref_chars), (3, 6));
        assert!((s.cer() - 0.5).abs() < 1e-12);
        assert_eq!((s.word_edits, s.ref_words), (1, 1));
        assert_eq!(s.wer(), 1.0);

        // Words: "the cat sat" vs "the bat sat down": one substitution, one insertion.
        let s = score("the cat sat", "the bat sat down");
        assert_eq!((s.word_edits, s.ref_words), (2, 3));
        // Characters: c->b, then " down" inserted (5): 6 edits over 11.
        assert_eq!((s.char_edits, s.ref_chars), (6, 11));
    }

    #[test]
    fn exact_lines_by_hand() {
        let reference = "TOTAL 12.50\nCash 20.00\nChange 7.50";
        let s = score(reference, "TOTAL 12.50\nCash 2O.00\nChange 7.50\n");
        assert_eq!((s.lines_matched, s.ref_lines), (2, 3));
        assert_eq!(s.char_edits, 1);
        // Surrounding whitespace and CRLF do not count.
        let s = score(reference, "  TOTAL 12.50\r\nCash 20.00  \r\nChange 7.50");
        assert_eq!(s.lines_matched, 3);
        assert_eq!(s.word_edits, 0);
    }

    #[test]
    fn totals_are_sums_not_means() {
        let a = score("abcd", "abcd"); // 0 / 4
        let b = score("ab", "xy"); // 2 / 2
        let t = total([&a, &b]);
        assert_eq!((t.char_edits, t.ref_chars), (2, 6));
        assert!((t.cer() - 2.0 / 6.0).abs() < 1e-12);
        // The mean of per-image rates would be 0.5.
    }

    #[test]
    fn empty_cases() {
        assert_eq!(score("", "").cer(), 0.0);
        assert_eq!(score("", "x").cer(), 1.0);
        assert_eq!(score("abc", "").cer(), 1.0);
        assert_eq!(score("", "").line_match(), 1.0);
    }
}
