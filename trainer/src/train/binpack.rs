//! Offline packing as the upstream recipe does it, as a pure function over sample lengths
//! (no torch, no files), so it can be tested and benchmarked on its own.
//!
//! [`pack_lengths`]:
//! 1. samples longer than the capacity (or empty) are dropped and counted;
//! 2. the rest are bucketed by exact length (each bucket shuffled under the seed, which
//!    decides which sample of a given length lands in which bin);
//! 3. exact fits first: samples of exactly the capacity, then pairs `l + (cap - l)`;
//! 4. greedy fills under a minimum fill ratio: a bin is seeded with the longest sample
//!    left and topped up with the longest sample that still fits, until nothing fits; the
//!    bin is kept when its fill reaches the ratio, else its samples go back. The ratios
//!    are tried from the strictest (0.96) to the loosest (0.90); what is left after the
//!    loosest is packed the same way with no minimum;
//! 5. the bins are shuffled under the seed.
//!
//! "The longest sample that fits" is a lookup in a two-level bitset over the lengths, so a
//! step costs a few word scans whatever the number of samples.
//!
//! With `shards > 1` the kept samples are dealt (under the seed) into that many shards,
//! packed independently on scoped threads; the result depends on the seed and the shard
//! count, never on thread timing.
//!
//! [`first_fit_decreasing`] is the baseline (first fit over the lengths sorted longest
//! first, O(n log n) with a segment tree over the bins' free space).

use serde::Serialize;

/// Packing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PackConfig {
    /// Tokens per bin (`--max-len`).
    pub capacity: u32,
    /// Minimum fill ratios, tried in order (strictest first).
    pub min_fill: Vec<f64>,
    pub seed: u64,
    /// Independent shards packed in parallel (1: one pass over everything).
    pub shards: usize,
}

impl Default for PackConfig {
    fn default() -> Self {
        Self {
            capacity: 8192,
            min_fill: default_min_fill(),
            seed: 0,
            shards: 1,
        }
    }
}

/// 0.96, 0.95, ..., 0.90.
pub fn default_min_fill() -> Vec<f64> {
    (0..=6).map(|k| (96 - k) as f64 / 100.0).collect()
}

/// The bins (sample indices into the input lengths) and the dropped samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackPlan {
    pub bins: Vec<Vec<u32>>,
    /// Samples longer than the capacity or empty, ascending.
    pub dropped: Vec<u32>,
}

/// SplitMix64: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// The lengths still unpacked: one stack of sample indices per length, and a two-level
/// bitset of the non-empty lengths for "longest length <= r" lookups.
struct Pool {
    buckets: Vec<Vec<u32>>,
    words: Vec<u64>,
    summary: Vec<u64>,
}

impl Pool {
    fn new(capacity: usize) -> Self {
        let nwords = (capacity + 1).div_ceil(64);
        Self {
            buckets: vec![Vec::new(); capacity + 1],
            words: vec![0; nwords],
            summary: vec![0; nwords.div_ceil(64)],
        }
    }

    fn push(&mut self, len: usize, idx: u32) {
        self.buckets[len].push(idx);
        self.words[len / 64] |= 1 << (len % 64);
        self.summary[len / 4096] |= 1 << ((len / 64) % 64);
    }

    fn pop(&mut self, len: usize) -> u32 {
        let idx = self.buckets[len]
            .pop()
            .expect("pop from a non-empty bucket");
        if self.buckets[len].is_empty() {
            self.words[len / 64] &= !(1 << (len % 64));
            if self.words[len / 64] == 0 {
                self.summary[len / 4096] &= !(1 << ((len / 64) % 64));
            }
        }
        idx
    }

    fn count(&self, len: usize) -> usize {
        self.buckets[len].len()
    }

    /// The longest non-empty length `<= r`.
    fn largest_le(&self, r: usize) -> Option<usize> {
        let r = r.min(self.buckets.len() - 1);
        let w = r / 64;
        let masked = self.words[w] & low_mask(r % 64);
        if masked != 0 {
            return Some(w * 64 + 63 - masked.leading_zeros() as usize);
        }
        if w == 0 {
            return None;
        }
        // The highest non-empty word below `w`, through the summary.
        let wb = w - 1;
        let mut s = wb / 64;
        let mut m = self.summary[s] & low_mask(wb % 64);
        loop {
            if m != 0 {
                let word = s * 64 + 63 - m.leading_zeros() as usize;
                let bits = self.words[word];
                return Some(word * 64 + 63 - bits.leading_zeros() as usize);
            }
            if s == 0 {
                return None;
            }
            s -= 1;
            m = self.summary[s];
        }
    }
}

/// Bits `0..=b` set.
fn low_mask(b: usize) -> u64 {
    if b == 63 {
        u64::MAX
    } else {
        (1u64 << (b + 1)) - 1
    }
}

/// Packs one shard of `(length, index)` items.
fn pack_shard(items: &[(u32, u32)], cfg: &PackConfig, rng: &mut SplitMix64) -> Vec<Vec<u32>> {
    let cap = cfg.capacity as usize;
    let mut pool = Pool::new(cap);
    for &(len, idx) in items {
        pool.push(len as usize, idx);
    }
    for b in pool.buckets.iter_mut() {
        rng.shuffle(b);
    }
    let mut bins = Vec::with_capacity(items.len() / 4 + 1);
    // Exact fits: whole-capacity samples, then complementary pairs.
    while pool.count(cap) > 0 {
        bins.push(vec![pool.pop(cap)]);
    }
    for l in (cap.div_ceil(2)..cap).rev() {
        let other = cap - l;
        while other > 0 && pool.count(l) > 0 && pool.count(other) > usize::from(other == l) {
            let a = pool.pop(l);
            let b = pool.pop(other);
            bins.push(vec![a, b]);
        }
    }
    // Greedy fills, strictest ratio first, then whatever is left.
    let mut taken: Vec<(usize, u32)> = Vec::new();
    let ratios = cfg.min_fill.iter().copied().chain(std::iter::once(0.0));
    for ratio in ratios {
        // The tolerance keeps 0.95 x 100 at 95 whatever the rounding.
        let need = ((ratio * cap as f64 - 1e-9).ceil().max(0.0) as usize).min(cap);
        let mut top = pool.largest_le(cap);
        while let Some(seed_len) = top {
            taken.clear();
            taken.push((seed_len, pool.pop(seed_len)));
            let mut used = seed_len;
            while used < cap {
                let Some(l) = pool.largest_le(cap - used) else {
                    break;
                };
                taken.push((l, pool.pop(l)));
                used += l;
            }
            if used >= need {
                bins.push(taken.iter().map(|&(_, i)| i).collect());
                top = pool.largest_le(cap);
            } else {
                // Every seed of this length would build the same bin: try shorter seeds.
                for &(l, i) in taken.iter().rev() {
                    pool.push(l, i);
                }
                top = if seed_len > 1 {
                    pool.largest_le(seed_len - 1)
                } else {
                    None
                };
            }
        }
    }
    debug_assert!(pool.largest_le(cap).is_none());
    bins
}

/// Packs samples of the given token lengths into bins of `cfg.capacity` tokens (see the
/// module docs). Deterministic for a given seed and shard count.
pub fn pack_lengths(lengths: &[u32], cfg: &PackConfig) -> PackPlan {
    assert!(cfg.capacity > 0, "capacity must be positive");
    let mut kept = Vec::with_capacity(lengths.len());
    let mut dropped = Vec::new();
    for (i, &len) in lengths.iter().enumerate() {
        if len == 0 || len > cfg.capacity {
            dropped.push(i as u32);
        } else {
            kept.push((len, i as u32));
        }
    }
    let mut rng = SplitMix64::new(cfg.seed);
    let shards = cfg.shards.max(1);
    let mut bins = if shards == 1 {
        pack_shard(&kept, cfg, &mut rng)
    } else {
        rng.shuffle(&mut kept);
        let per = kept.len().div_ceil(shards).max(1);
        let seeds: Vec<u64> = (0..shards).map(|_| rng.next_u64()).collect();
        let parts: Vec<Vec<Vec<u32>>> = std::thread::scope(|s| {
            let handles: Vec<_> = kept
                .chunks(per)
                .zip(&seeds)
                .map(|(chunk, &seed)| {
                    s.spawn(move || pack_shard(chunk, cfg, &mut SplitMix64::new(seed)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("packing thread panicked"))
                .collect()
        });
        parts.into_iter().flatten().collect()
    };
    rng.shuffle(&mut bins);
    PackPlan { bins, dropped }
}

/// First-fit decreasing: the lengths longest first, each into the first bin with room.
/// Samples over the capacity (or empty) are dropped. The baseline for [`pack_lengths`].
pub fn first_fit_decreasing(lengths: &[u32], capacity: u32) -> PackPlan {
    let mut dropped = Vec::new();
    let mut order: Vec<u32> = Vec::with_capacity(lengths.len());
    for (i, &len) in lengths.iter().enumerate() {
        if len == 0 || len > capacity {
            dropped.push(i as u32);
        } else {
            order.push(i as u32);
        }
    }
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i as usize]));
    // Max segment tree over the free space of (potential) bins, all empty at first; the
    // leftmost bin with room is found by descending it.
    let leaves = order.len().max(1).next_power_of_two();
    let mut tree = vec![capacity; 2 * leaves];
    let mut bins: Vec<Vec<u32>> = Vec::new();
    for i in order {
        let len = lengths[i as usize];
        let mut node = 1;
        while node < leaves {
            node = if tree[2 * node] >= len {
                2 * node
            } else {
                2 * node + 1
            };
        }
        let bin = node - leaves;
        if bin == bins.len() {
            bins.push(Vec::new());
        }
        bins[bin].push(i);
        tree[node] -= len;
        node /= 2;
        while node >= 1 {
            tree[node] = tree[2 * node].max(tree[2 * node + 1]);
            node /= 2;
        }
    }
    PackPlan { bins, dropped }
}

/// What a packing achieved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackReport {
    pub capacity: u32,
    pub samples: usize,
    pub kept: usize,
    pub dropped: usize,
    pub bins: usize,
    /// Bins filled to exactly the capacity.
    pub exact_bins: usize,
    pub tokens: u64,
    /// Padding with every kept sample padded to the capacity on its own.
    pub padding_before: u64,
    /// Padding of the bins.
    pub padding_after: u64,
    /// `padding_before / padding_after` (null when nothing is padded after packing).
    pub compression: Option<f64>,
    pub mean_fill: f64,
    /// `(range, bins)`, fill ratio ranges.
    pub fill_histogram: Vec<(String, usize)>,
}

const FILL_EDGES: [f64; 8] = [0.0, 0.5, 0.8, 0.9, 0.95, 0.96, 0.99, 1.0];

impl PackReport {
    pub fn new(lengths: &[u32], plan: &PackPlan, capacity: u32) -> Self {
        let cap = capacity as u64;
        let mut counts = vec![0usize; FILL_EDGES.len()];
        let mut tokens = 0u64;
        let mut exact_bins = 0;
        let mut fill_sum = 0.0;
        for bin in &plan.bins {
            let used: u64 = bin.iter().map(|&i| lengths[i as usize] as u64).sum();
            tokens += used;
            exact_bins += usize::from(used == cap);
            let fill = used as f64 / cap as f64;
            fill_sum += fill;
            let slot = if used == cap {
                FILL_EDGES.len() - 1
            } else {
                FILL_EDGES
                    .iter()
                    .rposition(|&e| fill >= e)
                    .unwrap_or(0)
                    .min(FILL_EDGES.len() - 2)
            };
            counts[slot] += 1;
        }
        let kept: usize = plan.bins.iter().map(Vec::len).sum();
        let padding_before = kept as u64 * cap - tokens;
        let padding_after = plan.bins.len() as u64 * cap - tokens;
        let fill_histogram = (0..FILL_EDGES.len())
            .map(|k| {
                let name = if k + 1 == FILL_EDGES.len() {
                    "1.00 (exact)".to_string()
                } else {
                    format!("[{:.2}, {:.2})", FILL_EDGES[k], FILL_EDGES[k + 1])
                };
                (name, counts[k])
            })
            .collect();
        Self {
            capacity,
            samples: lengths.len(),
            kept,
            dropped: plan.dropped.len(),
            bins: plan.bins.len(),
            exact_bins,
            tokens,
            padding_before,
            padding_after,
            compression: (padding_after > 0).then(|| padding_before as f64 / padding_after as f64),
            mean_fill: if plan.bins.is_empty() {
                0.0
            } else {
                fill_sum / plan.bins.len() as f64
            },
            fill_histogram,
        }
    }

    /// The printed table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let row = |s: &mut String, k: &str, v: String| s.push_str(&format!("{k:<22} {v:>14}\n"));
        row(&mut s, "capacity", self.capacity.to_string());
        row(&mut s, "samples", self.samples.to_string());
        row(&mut s, "dropped (too long)", self.dropped.to_string());
        row(&mut s, "kept", self.kept.to_string());
        row(&mut s, "bins", self.bins.to_string());
        row(&mut s, "exact-fit bins", self.exact_bins.to_string());
        row(&mut s, "tokens", self.tokens.to_string());
        row(&mut s, "padding before", self.padding_before.to_string());
        row(&mut s, "padding after", self.padding_after.to_string());
        row(
            &mut s,
            "compression",
            self.compression
                .map_or("inf (no padding)".into(), |c| format!("{c:.2}x")),
        );
        row(&mut s, "mean fill", format!("{:.4}", self.mean_fill));
        s.push_str("fill ratio histogram:\n");
        for (name, n) in &self.fill_histogram {
            row(&mut s, &format!("  {name}"), n.to_string());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lognormal_lengths(n: usize, seed: u64, cap: u32) -> Vec<u32> {
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| {
                let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                ((5.5 + 1.0 * z).exp().round() as u32).clamp(1, cap + 500)
            })
            .collect()
    }

    fn check(lengths: &[u32], plan: &PackPlan, cap: u32) {
        let mut seen = vec![0u8; lengths.len()];
        for bin in &plan.bins {
            assert!(!bin.is_empty());
            let used: u64 = bin.iter().map(|&i| lengths[i as usize] as u64).sum();
            assert!(used <= cap as u64, "bin of {used} tokens over {cap}");
            for &i in bin {
                seen[i as usize] += 1;
            }
        }
        for &i in &plan.dropped {
            seen[i as usize] += 1;
            assert!(lengths[i as usize] > cap || lengths[i as usize] == 0);
        }
        for (i, &n) in seen.iter().enumerate() {
            assert_eq!(n, 1, "sample {i} (len {}) appears {n} times", lengths[i]);
        }
    }

    #[test]
    fn every_kept_sample_once_and_no_bin_over_capacity() {
        let lengths = lognormal_lengths(20_000, 1, 8192);
        for shards in [1, 3] {
            let cfg = PackConfig {
                shards,
                seed: 7,
                ..PackConfig::default()
            };
            let plan = pack_lengths(&lengths, &cfg);
            check(&lengths, &plan, 8192);
            let r = PackReport::new(&lengths, &plan, 8192);
            assert!(r.dropped > 0, "the test data should have over-long samples");
            assert_eq!(r.kept + r.dropped, r.samples);
            assert!(r.mean_fill > 0.95, "mean fill {}", r.mean_fill);
            assert!(r.compression.unwrap() > 10.0, "{}", r.table());
            let ffd = first_fit_decreasing(&lengths, 8192);
            check(&lengths, &ffd, 8192);
            assert!(plan.bins.len() <= ffd.bins.len() + ffd.bins.len() / 100 + 1);
        }
    }

    #[test]
    fn deterministic_under_the_seed() {
        let lengths = lognormal_lengths(5_000, 2, 4096);
        let cfg = |seed, shards| PackConfig {
            capacity: 4096,
            seed,
            shards,
            ..PackConfig::default()
        };
        assert_eq!(
            pack_lengths(&lengths, &cfg(3, 1)),
            pack_lengths(&lengths, &cfg(3, 1))
        );
        assert_eq!(
            pack_lengths(&lengths, &cfg(3, 4)),
            pack_lengths(&lengths, &cfg(3, 4))
        );
        assert_ne!(
            pack_lengths(&lengths, &cfg(3, 1)),
            pack_lengths(&lengths, &cfg(4, 1))
        );
    }

    #[test]
    fn exact_fits_are_found() {
        // 10 = 10, 7 + 3, 6 + 4, 5 + 5, 2 + 8 ; 1 is left over.
        let lengths = [7, 10, 3, 5, 6, 4, 5, 1, 2, 8, 11];
        let plan = pack_lengths(
            &lengths,
            &PackConfig {
                capacity: 10,
                ..PackConfig::default()
            },
        );
        check(&lengths, &plan, 10);
        assert_eq!(plan.dropped, vec![10]);
        let r = PackReport::new(&lengths, &plan, 10);
        assert_eq!(r.exact_bins, 5, "{plan:?}");
        assert_eq!(r.bins, 6);
        assert_eq!(r.padding_after, 9);
        assert_eq!(r.padding_before, 10 * 10 - 51);
        // Exact fits that need three samples come from the greedy fills.
        let lengths = [3, 3, 4, 5, 5];
        let plan = pack_lengths(
            &lengths,
            &PackConfig {
                capacity: 10,
                ..PackConfig::default()
            },
        );
        assert_eq!(
            PackReport::new(&lengths, &plan, 10).exact_bins,
            2,
            "{plan:?}"
        );
    }

    #[test]
    fn low_fills_wait_for_the_looser_ratios() {
        // Nothing reaches 0.96 of 100 except 60 + 40; 50 + 45 = 0.95 waits for 0.95.
        let lengths = [60, 40, 50, 45, 30];
        let plan = pack_lengths(
            &lengths,
            &PackConfig {
                capacity: 100,
                ..PackConfig::default()
            },
        );
        check(&lengths, &plan, 100);
        let mut bins: Vec<Vec<u32>> = plan
            .bins
            .iter()
            .map(|b| {
                let mut b: Vec<u32> = b.iter().map(|&i| lengths[i as usize]).collect();
                b.sort();
                b
            })
            .collect();
        bins.sort();
        assert_eq!(bins, vec![vec![30], vec![40, 60], vec![45, 50]]);
    }

    #[test]
    fn largest_le_scans_both_levels() {
        let mut pool = Pool::new(9000);
        assert_eq!(pool.largest_le(9000), None);
        for l in [3, 64, 4095, 4097, 8999] {
            pool.push(l, 0);
        }
        assert_eq!(pool.largest_le(9000), Some(8999));
        assert_eq!(pool.largest_le(8998), Some(4097));
        assert_eq!(pool.largest_le(4096), Some(4095));
        assert_eq!(pool.largest_le(4094), Some(64));
        assert_eq!(pool.largest_le(63), Some(3));
        assert_eq!(pool.largest_le(2), None);
        pool.pop(64);
        assert_eq!(pool.largest_le(4094), Some(3));
    }
}
