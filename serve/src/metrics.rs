//! What `GET /metrics` reports, in Prometheus' text format (version 0.0.4): request counts
//! by endpoint and status, latency histograms, queue depth, tokens and decode speed, how
//! requests were batched. Plain atomics and one small map; no metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The service's counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Generations stopped because their client went away.
    pub cancelled: AtomicU64,
    /// Decoder batches run, and the requests they held (their ratio is the mean batch).
    pub batches: AtomicU64,
    pub batch_rows: AtomicU64,
    /// Requests the model thread is serving now.
    pub in_progress: AtomicU64,
    /// Decode speed of the last batch, tokens/s (f64 bits).
    last_tokens_per_s: AtomicU64,
}

/// What the service reports at render time besides its counters.
pub struct Gauges {
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub ready: bool,
}

impl Metrics {
    /// One answered request of `endpoint` (a route name) with `status`, that took `elapsed`.
    pub fn request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        *lock(&self.requests).entry((endpoint, status)).or_default() += 1;
        let mut lat = lock(&self.latency);
        let h = lat.entry(endpoint).or_default();
        let s = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += s;
    }

    /// One decoder batch of `rows` requests that generated `tokens` in `decode`.
    pub fn batch(&self, rows: usize, tokens: usize, decode: Duration) {
        self.batches.fetch_add(1, Relaxed);
        self.batch_rows.fetch_add(rows as u64, Relaxed);
        if decode > Duration::ZERO && tokens > 0 {
            let rate = tokens as f64 / decode.as_secs_f64();
            self.last_tokens_per_s.store(rate.to_bits(), Relaxed);
        }
    }

    /// The requests answered so far with `status` on `endpoint`.
    pub fn count(&self, endpoint: &str, status: u16) -> u64 {
        lock(&self.requests)
            .iter()
            .filter(|((e, s), _)| *e == endpoint && *s == status)
            .map(|(_, n)| *n)
            .sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut o = String::new();
        let n = "ove_requests_total";
        header(
            &mut o,
            n,
            "counter",
            "Requests answered, by endpoint and HTTP status.",
        );
        for ((e, s), c) in lock(&self.requests).iter() {
            let _ = writeln!(o, "{n}{{endpoint=\"{e}\",status=\"{s}\"}} {c}");
        }
        let n = "ove_request_duration_seconds";
        header(
            &mut o,
            n,
            "histogram",
            "Time from request to the end of its answer.",
        );
        for (e, h) in lock(&self.latency).iter() {
            for (b, c) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(o, "{n}_bucket{{endpoint=\"{e}\",le=\"{b}\"}} {c}");
            }
            let _ = writeln!(o, "{n}_bucket{{endpoint=\"{e}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(o, "{n}_sum{{endpoint=\"{e}\"}} {}", h.sum);
            let _ = writeln!(o, "{n}_count{{endpoint=\"{e}\"}} {}", h.count);
        }
        let get = |a: &AtomicU64| a.load(Relaxed) as f64;
        let simple = [
            (
                "ove_queue_depth",
                "gauge",
                "Requests waiting for the model.",
                g.queue_depth as f64,
            ),
            (
                "ove_queue_capacity",
                "gauge",
                "Requests that may wait (--queue).",
                g.queue_capacity as f64,
            ),
            (
                "ove_requests_in_progress",
                "gauge",
                "Requests the model is serving now.",
                get(&self.in_progress),
            ),
            (
                "ove_model_ready",
                "gauge",
                "1 once the model is loaded.",
                f64::from(u8::from(g.ready)),
            ),
            (
                "ove_prompt_tokens_total",
                "counter",
                "Prompt tokens of served requests.",
                get(&self.prompt_tokens),
            ),
            (
                "ove_generated_tokens_total",
                "counter",
                "Tokens generated.",
                get(&self.generated_tokens),
            ),
            (
                "ove_cancelled_total",
                "counter",
                "Generations stopped because the client went away.",
                get(&self.cancelled),
            ),
            (
                "ove_batches_total",
                "counter",
                "Decoder batches run.",
                get(&self.batches),
            ),
            (
                "ove_batch_rows_total",
                "counter",
                "Requests in those batches (rows / batches = mean batch).",
                get(&self.batch_rows),
            ),
            (
                "ove_decode_tokens_per_second",
                "gauge",
                "Decode speed of the last batch, all its rows together.",
                f64::from_bits(self.last_tokens_per_s.load(Relaxed)),
            ),
        ];
        for (name, kind, help, v) in simple {
            header(&mut o, name, kind, help);
            let _ = writeln!(o, "{name} {v}");
        }
        o
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.request("chat", 200, Duration::from_millis(300));
        m.request("chat", 429, Duration::from_millis(1));
        m.batch(3, 30, Duration::from_secs(2));
        let t = m.render(&Gauges {
            queue_depth: 2,
            queue_capacity: 8,
            ready: true,
        });
        assert!(
            t.contains("ove_requests_total{endpoint=\"chat\",status=\"200\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("ove_request_duration_seconds_bucket{endpoint=\"chat\",le=\"0.25\"} 1\n"),
            "{t}"
        );
        assert!(
            t.contains("ove_request_duration_seconds_bucket{endpoint=\"chat\",le=\"0.5\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("ove_request_duration_seconds_count{endpoint=\"chat\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("ove_queue_depth 2\n"), "{t}");
        assert!(t.contains("ove_decode_tokens_per_second 15\n"), "{t}");
        // Every sample line belongs to a family announced before it.
        let mut typed = std::collections::HashSet::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| typed.contains(*b)))
                    .unwrap_or(name);
                assert!(typed.contains(base), "{line} before its # TYPE");
            }
        }
        assert_eq!(m.count("chat", 429), 1);
    }
}
