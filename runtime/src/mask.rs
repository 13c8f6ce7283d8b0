//! The decoder's per-step `position_ids` and `attention_bias`, computed in Rust.
//!
//! They are inputs of decoder.onnx rather than computed inside it because tract cannot run
//! the ONNX forms that build them from shapes (Trilu with a shape-derived k, Slice with a
//! runtime start); see docs/BUNDLE.md.
//!
//! A batch of sequences ([`BatchMask`]) shares one cache of `K` slots per row and one
//! number `S` of new slots a step: a row with fewer new tokens is padded, and its padding
//! slots are masked for every later query of that row. A masked score gets exactly zero
//! weight in f32, so every real token of a row computes what it computes alone.

/// The bias of a masked position: large enough that softmax gives it exactly 0 in f32,
/// small enough that adding it to a score never overflows.
pub const MASKED: f32 = -1e9;

/// Absolute positions of `new` tokens that follow `past` cached ones (plain 1-D RoPE:
/// image tokens take positions like any other token).
pub fn position_ids(past: usize, new: usize) -> Vec<i64> {
    (past..past + new).map(|p| p as i64).collect()
}

/// The causal bias `[new, past + new]`: row `i` (absolute position `past + i`) may attend
/// to every cached token and to the new tokens up to and including itself.
pub fn causal_bias(past: usize, new: usize) -> Vec<f32> {
    let total = past + new;
    let mut bias = vec![0.0f32; new * total];
    for (i, row) in bias.chunks_exact_mut(total.max(1)).enumerate().take(new) {
        for b in &mut row[past + i + 1..] {
            *b = MASKED;
        }
    }
    bias
}

/// Positions and masks of a batch of sequences decoded together, one row each.
///
/// Slot `j` of a row's cache is either a real token of that row or padding; a real token
/// at slot `K + i` attends to the row's real slots before it and to itself, and takes the
/// row's next position (slots and positions differ once a row has padding). A padding
/// query attends to itself only (its output is never read).
#[derive(Debug, Clone, Default)]
pub struct BatchMask {
    /// Per row: which slots so far hold a real token.
    real: Vec<Vec<bool>>,
    /// Per row: the position of the row's next real token.
    next: Vec<usize>,
}

/// The inputs of one batched step, `[B, S]` and `[B, S, K + S]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStep {
    pub position_ids: Vec<i64>,
    pub attention_bias: Vec<f32>,
}

impl BatchMask {
    /// `rows` empty sequences.
    pub fn new(rows: usize) -> Self {
        Self {
            real: vec![Vec::new(); rows],
            next: vec![0; rows],
        }
    }

    pub fn rows(&self) -> usize {
        self.next.len()
    }

    /// Slots per row so far (the `K` of the next step).
    pub fn slots(&self) -> usize {
        self.real.first().map_or(0, Vec::len)
    }

    /// Tokens row `r` holds (the position of its next token).
    pub fn len(&self, r: usize) -> usize {
        self.next[r]
    }

    pub fn is_empty(&self) -> bool {
        self.next.iter().all(|&n| n == 0)
    }

    /// The inputs of a step of `s` new slots in which row `r` runs `new[r] <= s` real
    /// tokens (the first `new[r]` slots; the rest is padding), and records the step.
    pub fn step(&mut self, new: &[usize], s: usize) -> BatchStep {
        assert_eq!(new.len(), self.rows(), "one count per row");
        assert!(new.iter().all(|&n| n <= s), "more tokens than slots");
        let k = self.slots();
        let total = k + s;
        let rows = self.rows();
        let mut position_ids = Vec::with_capacity(rows * s);
        let mut attention_bias = vec![MASKED; rows * s * total];
        for (r, &n) in new.iter().enumerate() {
            let real = &mut self.real[r];
            for i in 0..s {
                position_ids.push((self.next[r] + i) as i64);
                let row = &mut attention_bias[(r * s + i) * total..(r * s + i + 1) * total];
                if i < n {
                    for (b, &ok) in row.iter_mut().zip(real.iter()) {
                        if ok {
                            *b = 0.0;
                        }
                    }
                    for b in &mut row[k..=k + i] {
                        *b = 0.0;
                    }
                } else {
                    row[k + i] = 0.0;
                }
            }
            real.extend((0..s).map(|i| i < n));
            self.next[r] += n;
        }
        BatchStep {
            position_ids,
            attention_bias,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_is_the_causal_mask() {
        let mut m = BatchMask::new(1);
        let a = m.step(&[3], 3);
        assert_eq!(a.attention_bias, causal_bias(0, 3));
        assert_eq!(a.position_ids, position_ids(0, 3));
        let b = m.step(&[1], 1);
        assert_eq!(b.attention_bias, causal_bias(3, 1));
        assert_eq!(b.position_ids, position_ids(3, 1));
        assert_eq!((m.slots(), m.len(0)), (4, 4));
    }

    #[test]
    fn padding_is_never_seen_and_positions_skip_it() {
        let m_ = MASKED;
        let mut m = BatchMask::new(2);
        // Row 0: two tokens; row 1: one token and a pad.
        let a = m.step(&[2, 1], 2);
        assert_eq!(a.position_ids, vec![0, 1, 0, 1]);
        assert_eq!(
            a.attention_bias,
            vec![0.0, m_, 0.0, 0.0, /* row 1 */ 0.0, m_, m_, 0.0]
        );
        // A decode step: row 1's token is its second (position 1) and skips slot 1.
        let b = m.step(&[1, 1], 1);
        assert_eq!(b.position_ids, vec![2, 1]);
        assert_eq!(b.attention_bias, vec![0.0, 0.0, 0.0, 0.0, m_, 0.0]);
        // Row 0 finished: its slot is padding from now on.
        let c = m.step(&[0, 1], 1);
        assert_eq!(c.position_ids, vec![3, 2]);
        assert_eq!(
            c.attention_bias,
            vec![m_, m_, m_, 0.0, /* row 1 */ 0.0, m_, 0.0, 0.0]
        );
        assert_eq!((m.len(0), m.len(1)), (3, 3));
        assert_eq!(m.slots(), 4);
        assert!(!m.is_empty());
    }

    #[test]
    fn prefill_is_lower_triangular() {
        let m = MASKED;
        assert_eq!(
            causal_bias(0, 3),
            vec![0.0, m, m, 0.0, 0.0, m, 0.0, 0.0, 0.0]
        );
        assert_eq!(position_ids(0, 3), vec![0, 1, 2]);
    }

    #[test]
    fn decode_step_sees_the_whole_cache() {
        assert_eq!(causal_bias(4, 1), vec![0.0; 5]);
        assert_eq!(position_ids(4, 1), vec![4]);
    }

    #[test]
    fn chunk_after_cache() {
        let m = MASKED;
        assert_eq!(
            causal_bias(2, 2),
            vec![0.0, 0.0, 0.0, m, 0.0, 0.0, 0.0, 0.0]
        );
        assert!(causal_bias(0, 0).is_empty());
    }
}
