//! One text from several readings of the same line: a character-level majority vote
//! (ROVER-style). A line read at a few text heights around the one the model was trained
//! on makes different mistakes at each (a doubled letter at one scale, a look-alike glyph
//! at another), while the right characters agree; voting position by position keeps what
//! most readings say.
//!
//! How: the medoid reading (the one with the least total edit distance to the others) is
//! the skeleton; every reading is aligned to it by Levenshtein distance; each skeleton
//! character becomes what most readings put there (a character, or nothing), and text
//! that readings insert between two skeleton characters is kept when more than half of
//! them insert the same. Ties keep the skeleton's own character. Only `std`.

use crate::metrics::levenshtein;

/// What one reading puts at one skeleton position.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Char(char),
    Nothing,
}

/// The vote over `readings` (see the module docs); `center` is the reading preferred when
/// two are equally central (the one at the trained scale). One reading is returned as it
/// is; none gives an empty text.
pub fn vote(readings: &[&str], center: usize) -> String {
    let texts: Vec<Vec<char>> = readings.iter().map(|r| r.chars().collect()).collect();
    let k = texts.len();
    if k <= 1 {
        return readings.first().map(|r| r.to_string()).unwrap_or_default();
    }
    let cost: Vec<usize> = texts
        .iter()
        .map(|a| texts.iter().map(|b| levenshtein(a, b)).sum())
        .collect();
    let skeleton_at = (0..k)
        .min_by_key(|&i| (cost[i], i.abs_diff(center), i))
        .unwrap_or(0);
    let skeleton = &texts[skeleton_at];
    let n = skeleton.len();
    let mut slots: Vec<Vec<(Slot, usize)>> = vec![Vec::new(); n];
    let mut inserts: Vec<Vec<(String, usize)>> = vec![Vec::new(); n + 1];
    fn add<T: PartialEq>(tally: &mut Vec<(T, usize)>, what: T) {
        match tally.iter_mut().find(|(w, _)| *w == what) {
            Some((_, c)) => *c += 1,
            None => tally.push((what, 1)),
        }
    }
    for text in &texts {
        let mut pending = String::new();
        for step in align(skeleton, text) {
            match step {
                (None, Some(j)) => pending.push(text[j]),
                (Some(i), got) => {
                    if !pending.is_empty() {
                        add(&mut inserts[i], std::mem::take(&mut pending));
                    }
                    add(
                        &mut slots[i],
                        got.map_or(Slot::Nothing, |j| Slot::Char(text[j])),
                    );
                }
                (None, None) => {}
            }
        }
        if !pending.is_empty() {
            add(&mut inserts[n], pending);
        }
    }
    let mut out = String::new();
    for i in 0..=n {
        // At most one insertion can have more than half of the votes.
        if let Some((text, count)) = inserts[i].iter().max_by_key(|(_, c)| *c) {
            if 2 * count > k {
                out.push_str(text);
            }
        }
        if i < n {
            let top = slots[i].iter().map(|(_, c)| *c).max().unwrap_or(0);
            let own = Slot::Char(skeleton[i]);
            let keeps_own = slots[i].iter().any(|(s, c)| *s == own && *c == top);
            let winner = if keeps_own {
                own
            } else {
                // Tallies keep the order the readings gave them: the earliest of a tie.
                slots[i]
                    .iter()
                    .filter(|(_, c)| *c == top)
                    .map(|(s, _)| s.clone())
                    .next()
                    .unwrap_or(Slot::Nothing)
            };
            if let Slot::Char(c) = winner {
                out.push(c);
            }
        }
    }
    out
}

/// A minimal-edit alignment of `a` to `b`: pairs (index in a, index in b), `None` where
/// one side has nothing (deleted from a, inserted from b), in order.
fn align(a: &[char], b: &[char]) -> Vec<(Option<usize>, Option<usize>)> {
    let (n, m) = (a.len(), b.len());
    let w = m + 1;
    let mut d = vec![0usize; (n + 1) * w];
    for (i, row) in d.chunks_mut(w).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[..w].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let sub = d[(i - 1) * w + j - 1] + usize::from(a[i - 1] != b[j - 1]);
            d[i * w + j] = sub.min(d[(i - 1) * w + j] + 1).min(d[i * w + j - 1] + 1);
        }
    }
    let (mut i, mut j) = (n, m);
    let mut out = Vec::with_capacity(n.max(m));
    while i > 0 || j > 0 {
        let here = d[i * w + j];
        if i > 0 && j > 0 && here == d[(i - 1) * w + j - 1] + usize::from(a[i - 1] != b[j - 1]) {
            out.push((Some(i - 1), Some(j - 1)));
            i -= 1;
            j -= 1;
        } else if i > 0 && here == d[(i - 1) * w + j] + 1 {
            out.push((Some(i - 1), None));
            i -= 1;
        } else {
            out.push((None, Some(j - 1)));
            j -= 1;
        }
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_majority_wins_at_every_position() {
        // A substitution, a doubled letter and a dropped letter, each in one reading.
        assert_eq!(
            vote(&["Money", "Moneyy", "Mcney", "Money", "Mony"], 2),
            "Money"
        );
        assert_eq!(
            vote(&["studty fact", "study fact", "study fuct"], 1),
            "study fact"
        );
    }

    #[test]
    fn insertions_need_more_than_half() {
        // Two of three insert the same '%': kept. One of three inserts '-': dropped.
        assert_eq!(vote(&["61.85%", "61.85", "61.85%"], 1), "61.85%");
        assert_eq!(vote(&["a b", "a -b", "a b"], 1), "a b");
    }

    #[test]
    fn ties_keep_the_skeleton_and_edge_cases_hold() {
        // Two readings: each is as central as the other; the preferred one is the skeleton
        // and every tied position keeps its character.
        assert_eq!(vote(&["cat", "cot"], 1), "cot");
        assert_eq!(vote(&["cat", "cot"], 0), "cat");
        assert_eq!(vote(&["only"], 0), "only");
        assert_eq!(vote(&[], 0), "");
        assert_eq!(vote(&["", "", "x"], 1), "");
        assert_eq!(vote(&["naïve", "nai\u{fffd}ve", "naïve"], 1), "naïve");
    }

    #[test]
    fn alignment_is_a_minimal_edit_script() {
        let a: Vec<char> = "kitten".chars().collect();
        let b: Vec<char> = "sitting".chars().collect();
        let al = align(&a, &b);
        let edits = al
            .iter()
            .filter(|p| match p {
                (Some(i), Some(j)) => a[*i] != b[*j],
                _ => true,
            })
            .count();
        assert_eq!(edits, levenshtein(&a, &b));
        assert_eq!(al.iter().filter_map(|p| p.0).count(), a.len());
        assert_eq!(al.iter().filter_map(|p| p.1).count(), b.len());
    }
}
