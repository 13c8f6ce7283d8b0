//! The most probable CTC reading whose bytes are valid UTF-8.
//!
//! The CTC head reads bytes, so a character outside ASCII is two to four frames' classes
//! that must all be right: "é" is `C3 A9`, "€" is `E2 82 AC`. Greedy decoding sometimes
//! keeps one byte of such a character and drops another, and the reading then holds a
//! replacement character ("Krak\u{FFFD}w", "na\u{FFFD}ve") where the page has a letter.
//! When the greedy reading is not valid UTF-8, [`best_valid_path`] finds the frame path
//! of highest probability among those whose text is: a Viterbi search over (last class,
//! continuation bytes still owed), with each frame's few likeliest classes as candidates.

use crate::ctc::{greedy_bytes, BLANK, CLASSES};

/// Classes of each frame the search considers, the blank always among them.
pub const CANDIDATES: usize = 6;

/// Continuation bytes a UTF-8 sequence still owes after byte `b`, given `owed` before it:
/// `None` when `b` cannot come there (a continuation byte with nothing owed, a lead or
/// ASCII byte in the middle of a character, a byte that never starts a character).
fn after(owed: u8, b: u8) -> Option<u8> {
    match (owed, b) {
        (1.., 0x80..=0xBF) => Some(owed - 1),
        (1.., _) => None,
        (0, 0x00..=0x7F) => Some(0),
        (0, 0xC2..=0xDF) => Some(1),
        (0, 0xE0..=0xEF) => Some(2),
        (0, 0xF0..=0xF4) => Some(3),
        (0, _) => None,
    }
}

/// A search state: the frame's class and the continuation bytes owed after it.
#[derive(Clone, Copy)]
struct State {
    class: usize,
    owed: u8,
    log_p: f32,
    /// Index of the previous frame's state this one came from.
    from: usize,
}

/// The text of the most probable frame path (repeats merged, blanks dropped) whose bytes
/// are valid UTF-8, over `probs` `[frames, CLASSES]` (each frame's softmax). The all-blank
/// path always qualifies, so there is always an answer.
pub fn best_valid_path(probs: &[f32]) -> String {
    let frames: Vec<&[f32]> = probs.chunks_exact(CLASSES).collect();
    let mut layers: Vec<Vec<State>> = Vec::with_capacity(frames.len());
    for (t, p) in frames.iter().enumerate() {
        let mut next: Vec<State> = Vec::new();
        for c in candidates(p) {
            let lp = p[c].max(f32::MIN_POSITIVE).ln();
            let mut relax = |owed: u8, log_p: f32, from: usize| match next
                .iter_mut()
                .find(|s| s.class == c && s.owed == owed)
            {
                Some(s) if s.log_p >= log_p => {}
                Some(s) => {
                    *s = State {
                        class: c,
                        owed,
                        log_p,
                        from,
                    }
                }
                None => next.push(State {
                    class: c,
                    owed,
                    log_p,
                    from,
                }),
            };
            if t == 0 {
                let start = if c == BLANK {
                    Some(0)
                } else {
                    after(0, (c - 1) as u8)
                };
                if let Some(owed) = start {
                    relax(owed, lp, 0);
                }
                continue;
            }
            for (i, s) in layers[t - 1].iter().enumerate() {
                let owed = if c == BLANK || c == s.class {
                    Some(s.owed)
                } else {
                    after(s.owed, (c - 1) as u8)
                };
                if let Some(owed) = owed {
                    relax(owed, s.log_p + lp, i);
                }
            }
        }
        layers.push(next);
    }
    // Back from the best state that owes nothing.
    let Some(last) = layers.last() else {
        return String::new();
    };
    let mut at = last
        .iter()
        .enumerate()
        .filter(|(_, s)| s.owed == 0)
        .max_by(|a, b| a.1.log_p.total_cmp(&b.1.log_p))
        .map(|(i, _)| i);
    let mut path = vec![BLANK; layers.len()];
    for t in (0..layers.len()).rev() {
        let Some(i) = at else { break };
        path[t] = layers[t][i].class;
        at = (t > 0).then_some(layers[t][i].from);
    }
    // The automaton admits a few overlong or surrogate forms that `from_utf8` refuses.
    String::from_utf8_lossy(&greedy_bytes(&path)).into_owned()
}

/// The blank and the frame's likeliest classes, [`CANDIDATES`] in all.
fn candidates(p: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (1..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    std::iter::once(BLANK)
        .chain(order.into_iter().take(CANDIDATES - 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames that each put `main` of their mass on one class and `rest` on another.
    fn frames(picks: &[(usize, f32, usize)]) -> Vec<f32> {
        let mut out = vec![0.0; picks.len() * CLASSES];
        for (t, &(a, pa, b)) in picks.iter().enumerate() {
            let row = &mut out[t * CLASSES..(t + 1) * CLASSES];
            row.iter_mut().for_each(|v| *v = 1e-4);
            row[a] = pa;
            row[b] += 1.0 - pa;
        }
        out
    }

    fn class(b: u8) -> usize {
        b as usize + 1
    }

    #[test]
    fn a_valid_greedy_reading_is_kept() {
        // "aé" = 61 C3 A9, with blanks between.
        let p = frames(&[
            (class(b'a'), 0.9, BLANK),
            (BLANK, 0.9, class(b'a')),
            (class(0xC3), 0.8, BLANK),
            (class(0xA9), 0.8, BLANK),
            (BLANK, 0.9, class(b'x')),
        ]);
        assert_eq!(best_valid_path(&p), "aé");
    }

    #[test]
    fn a_lone_byte_is_completed_or_dropped() {
        // The second byte of "é" lost to the blank at 0.55 against 0.45: greedy reads
        // "a\u{FFFD}"; the best valid path takes the 0.45.
        let p = frames(&[
            (class(b'a'), 0.9, BLANK),
            (class(0xC3), 0.8, BLANK),
            (BLANK, 0.55, class(0xA9)),
            (BLANK, 0.9, class(b'x')),
        ]);
        assert_eq!(best_valid_path(&p), "aé");
        // A lone continuation byte where an ASCII letter is the runner-up: the letter.
        let p = frames(&[
            (class(b'n'), 0.9, BLANK),
            (class(0xAF), 0.6, class(b'i')),
            (BLANK, 0.9, class(b'x')),
        ]);
        assert_eq!(best_valid_path(&p), "ni");
    }

    #[test]
    fn nothing_is_an_empty_reading() {
        assert_eq!(best_valid_path(&[]), "");
        let p = frames(&[(BLANK, 0.9, class(0xC3))]);
        assert_eq!(best_valid_path(&p), "");
    }
}
