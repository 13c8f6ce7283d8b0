//! Choosing the next token from a row of logits: the repetition penalty, then greedy, or
//! sampled with temperature, top-k and top-p (in that order, as Hugging Face `generate`
//! applies them).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How to pick each token. `temperature == 0` means greedy (the default: OCR wants the
/// single most likely reading, and greedy output is reproducible across backends).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    pub temperature: f32,
    /// Keep only the `k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `p`; 1 keeps all.
    pub top_p: f32,
    /// Seed of the sampler; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Hugging Face's repetition penalty (CTRL's): the logit of every token already in the
    /// sequence, prompt included, is divided by it when positive and multiplied by it when
    /// negative. 1 is off; it applies to greedy decoding too.
    pub repetition_penalty: f32,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingOptions {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: None,
            repetition_penalty: 1.0,
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }

    /// Refuses values that have no meaning (a negative temperature, top_p outside (0, 1]).
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            anyhow::bail!(
                "temperature must be >= 0 (0 = greedy), got {}",
                self.temperature
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            anyhow::bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            anyhow::bail!(
                "repetition_penalty must be > 0 (1 = off), got {}",
                self.repetition_penalty
            );
        }
        Ok(())
    }
}

/// Index of the largest logit; the first one on ties, like `torch.argmax`.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

/// Top-1 minus top-2 logit: how decisively a greedy step was won.
pub fn margin(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in logits {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a - b
}

/// Picks tokens; holds the random state so that a seeded run is reproducible.
pub struct Sampler {
    opts: SamplingOptions,
    rng: StdRng,
    /// Scratch buffers reused across steps (the vocabulary can be 150k entries).
    order: Vec<u32>,
    probs: Vec<f32>,
    /// Token ids seen so far (for the repetition penalty), each once, and a bitmap of them.
    seen: Vec<usize>,
    seen_bits: Vec<bool>,
    penalized: Vec<f32>,
}

impl Sampler {
    pub fn new(opts: SamplingOptions) -> Self {
        let rng = match opts.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Self {
            opts,
            rng,
            order: Vec::new(),
            probs: Vec::new(),
            seen: Vec::new(),
            seen_bits: Vec::new(),
            penalized: Vec::new(),
        }
    }

    /// Records ids that are now part of the sequence (the prompt, then each chosen token),
    /// for the repetition penalty. Negative ids are ignored. Without a penalty this is a
    /// no-op, so callers need not check.
    pub fn observe(&mut self, ids: &[i64]) {
        if self.opts.repetition_penalty == 1.0 {
            return;
        }
        for &id in ids {
            let Ok(i) = usize::try_from(id) else { continue };
            if i >= self.seen_bits.len() {
                self.seen_bits.resize(i + 1, false);
            }
            if !self.seen_bits[i] {
                self.seen_bits[i] = true;
                self.seen.push(i);
            }
        }
    }

    pub fn options(&self) -> &SamplingOptions {
        &self.opts
    }

    /// The next token for one row of logits.
    pub fn pick(&mut self, logits: &[f32]) -> usize {
        if self.opts.repetition_penalty == 1.0 || self.seen.is_empty() {
            return self.pick_from(logits);
        }
        let mut penalized = std::mem::take(&mut self.penalized);
        penalized.clear();
        penalized.extend_from_slice(logits);
        let r = self.opts.repetition_penalty;
        for &i in &self.seen {
            if let Some(v) = penalized.get_mut(i) {
                *v = if *v < 0.0 { *v * r } else { *v / r };
            }
        }
        let token = self.pick_from(&penalized);
        self.penalized = penalized;
        token
    }

    fn pick_from(&mut self, logits: &[f32]) -> usize {
        if self.opts.is_greedy() || logits.len() <= 1 {
            return argmax(logits);
        }
        let v = logits.len();
        let cmp = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        self.order.clear();
        self.order.extend(0..v as u32);
        // Candidates, most likely first: top-k needs only a partial sort.
        let k = if self.opts.top_k > 0 && self.opts.top_k < v {
            self.order.select_nth_unstable_by(self.opts.top_k - 1, cmp);
            self.order.truncate(self.opts.top_k);
            self.opts.top_k
        } else {
            v
        };
        self.order.sort_unstable_by(cmp);
        debug_assert_eq!(self.order.len(), k);

        // Softmax of logits / temperature over the candidates (max subtracted first).
        let t = self.opts.temperature;
        let max = logits[self.order[0] as usize];
        self.probs.clear();
        self.probs.extend(
            self.order
                .iter()
                .map(|&i| ((logits[i as usize] - max) / t).exp()),
        );
        let total: f32 = self.probs.iter().sum();
        for p in &mut self.probs {
            *p /= total;
        }

        // Top-p: the shortest prefix whose mass reaches p (at least one token).
        let mut keep = self.probs.len();
        if self.opts.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, p) in self.probs.iter().enumerate() {
                acc += p;
                if acc >= self.opts.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let mass: f32 = self.probs[..keep].iter().sum();
        let mut r = self.rng.gen::<f32>() * mass;
        for i in 0..keep {
            r -= self.probs[i];
            if r <= 0.0 {
                return self.order[i] as usize;
            }
        }
        self.order[keep - 1] as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -5.0]), 1);
        assert!((margin(&[1.0, 3.0, 2.5]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn greedy_ignores_the_seed() {
        let mut s = Sampler::new(SamplingOptions::greedy());
        assert_eq!(s.pick(&[0.1, 0.9, 0.5]), 1);
    }

    #[test]
    fn top_k_1_is_greedy_and_top_k_limits_choices() {
        let logits = [1.0, 5.0, 4.9, 0.0, 4.8];
        let mut s = Sampler::new(SamplingOptions {
            temperature: 10.0,
            top_k: 2,
            top_p: 1.0,
            seed: Some(1),
            repetition_penalty: 1.0,
        });
        for _ in 0..200 {
            let t = s.pick(&logits);
            assert!(t == 1 || t == 2, "{t}");
        }
        let mut g = Sampler::new(SamplingOptions {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed: None,
            repetition_penalty: 1.0,
        });
        assert_eq!(g.pick(&logits), 1);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // probabilities ~ [0.0003, 0.64, 0.24, 0.09, 0.03]: p = 0.6 keeps only token 1.
        let logits = [-5.0, 3.0, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(SamplingOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.6,
            seed: Some(7),
            repetition_penalty: 1.0,
        });
        for _ in 0..100 {
            assert_eq!(s.pick(&logits), 1);
        }
        // p = 0.85 keeps tokens 1 and 2.
        let mut s = Sampler::new(SamplingOptions {
            top_p: 0.85,
            ..s.options().clone()
        });
        let picks: Vec<usize> = (0..300).map(|_| s.pick(&logits)).collect();
        assert!(picks.iter().all(|&t| t == 1 || t == 2));
        assert!(picks.contains(&2));
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_the_distribution() {
        let logits: Vec<f32> = vec![0.0, (3.0f32).ln()]; // p = [0.25, 0.75]
        let opts = SamplingOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: Some(42),
            repetition_penalty: 1.0,
        };
        let a: Vec<usize> = {
            let mut s = Sampler::new(opts.clone());
            (0..4000).map(|_| s.pick(&logits)).collect()
        };
        let b: Vec<usize> = {
            let mut s = Sampler::new(opts);
            (0..4000).map(|_| s.pick(&logits)).collect()
        };
        assert_eq!(a, b);
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / 4000.0;
        assert!((ones - 0.75).abs() < 0.03, "{ones}");
    }

    #[test]
    fn invalid_options_are_refused() {
        let mut o = SamplingOptions::greedy();
        o.temperature = -1.0;
        assert!(o.validate().is_err());
        let mut o = SamplingOptions::greedy();
        o.top_p = 0.0;
        assert!(o.validate().is_err());
        let mut o = SamplingOptions::greedy();
        o.repetition_penalty = 0.0;
        assert!(o.validate().is_err());
        assert!(SamplingOptions::greedy().validate().is_ok());
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        // Token 0 leads (2.0) but was seen: 2.0 / 1.5 = 1.33 < 1.5, so greedy takes token 1.
        let mut s = Sampler::new(SamplingOptions {
            repetition_penalty: 1.5,
            ..SamplingOptions::greedy()
        });
        s.observe(&[0, 0, -1]);
        assert_eq!(s.pick(&[2.0, 1.5, -0.1]), 1);
        // A seen negative logit sinks further: -0.1 * 1.5 = -0.15 < -0.12.
        let mut s = Sampler::new(SamplingOptions {
            repetition_penalty: 1.5,
            ..SamplingOptions::greedy()
        });
        s.observe(&[2]);
        assert_eq!(s.pick(&[-1.0, -0.12, -0.1]), 1);
        // Without a penalty, observing changes nothing.
        let mut s = Sampler::new(SamplingOptions::greedy());
        s.observe(&[0]);
        assert_eq!(s.pick(&[2.0, 1.5, -0.1]), 0);
    }
}
