//! Packing benchmark: 1M synthetic caption-like lengths (log-normal, long-tailed, clipped
//! to 8192), packed by `pack_lengths` (one shard, then one shard per core) and by
//! first-fit decreasing.
//!
//!     cargo run --release -p ove-train --example pack_bench [-- N]

use std::time::Instant;

use ove_train::train::binpack::{
    first_fit_decreasing, pack_lengths, PackConfig, PackPlan, PackReport, SplitMix64,
};

/// exp(N(mu, sigma)) clipped to [16, 8192]: (6.0, 0.9) is caption-like (median ~400
/// tokens, long tail of image-heavy samples); (7.5, 1.0) is a harder, document-like mix.
fn synthetic_lengths(n: usize, seed: u64, mu: f64, sigma: f64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            ((mu + sigma * z).exp().round() as u32).clamp(16, 8192)
        })
        .collect()
}

fn line(name: &str, lengths: &[u32], secs: f64, plan: &PackPlan) {
    let r = PackReport::new(lengths, plan, 8192);
    println!(
        "{name:<26} {:>12.0} {:>9.3} {:>9} {:>10.6} {:>8} {:>10.2}x",
        lengths.len() as f64 / secs,
        secs,
        r.bins,
        r.mean_fill,
        r.exact_bins,
        r.compression.unwrap_or(f64::INFINITY)
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("N: a sample count"))
        .unwrap_or(1_000_000);
    for (name, mu, sigma) in [("caption-like", 6.0, 0.9), ("document-like", 7.5, 1.0)] {
        println!("\n== {name}: exp(N({mu}, {sigma})) clipped to [16, 8192]");
        bench(&synthetic_lengths(n, 42, mu, sigma));
    }
}

fn bench(lengths: &[u32]) {
    let n = lengths.len();
    let tokens: u64 = lengths.iter().map(|&l| l as u64).sum();
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    println!(
        "{n} samples, {tokens} tokens, lengths p50 {} p90 {} p99 {} max {}; capacity 8192; lower bound {} bins",
        sorted[n / 2],
        sorted[n * 9 / 10],
        sorted[n * 99 / 100],
        sorted[n - 1],
        tokens.div_ceil(8192)
    );
    println!(
        "{:<26} {:>12} {:>9} {:>9} {:>10} {:>8} {:>11}",
        "method", "samples/s", "seconds", "bins", "mean fill", "exact", "compression"
    );
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    for shards in [1, cores] {
        let cfg = PackConfig {
            shards,
            seed: 1,
            ..PackConfig::default()
        };
        let t = Instant::now();
        let plan = pack_lengths(lengths, &cfg);
        let secs = t.elapsed().as_secs_f64();
        line(
            &format!("exact+greedy, {shards} shard(s)"),
            lengths,
            secs,
            &plan,
        );
    }
    let t = Instant::now();
    let plan = first_fit_decreasing(lengths, 8192);
    let secs = t.elapsed().as_secs_f64();
    line("first-fit decreasing", lengths, secs, &plan);
}
