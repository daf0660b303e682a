//! Prometheus metrics in the text exposition format, kept with atomics and one mutex for
//! the per-route maps: request counts and latency per route, time per ask stage, tokens,
//! receipts signed and by state, the admission queue and the adapter cache.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tribute::{Answer, Engine};

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A latency histogram.
#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (c, le) in self.counts.iter_mut().zip(BUCKETS) {
            if secs <= le {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (c, le) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    by_route: Mutex<Routes>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    receipts_signed: AtomicU64,
    asks_cancelled: AtomicU64,
    asks_rejected: AtomicU64,
}

#[derive(Debug, Default)]
struct Routes {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    stages: BTreeMap<&'static str, Histogram>,
}

impl Metrics {
    /// Records a finished request.
    pub fn request(&self, route: &str, status: u16, secs: f64) {
        let mut r = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        *r.requests.entry((route.to_owned(), status)).or_default() += 1;
        r.latency.entry(route.to_owned()).or_default().observe(secs);
    }

    /// Records a finished ask: its stage times, tokens and receipt.
    pub fn answer(&self, answer: &Answer) {
        let t = &answer.usage.timings;
        {
            let mut r = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
            for (stage, ms) in [
                ("retrieval", t.retrieval_ms),
                ("prompt", t.prompt_ms),
                ("prefill", t.prefill_ms),
                ("decode", t.decode_ms),
                ("attribution", t.attribution_ms),
                ("receipt", t.receipt_ms),
                ("total", t.total_ms),
            ] {
                r.stages.entry(stage).or_default().observe(ms / 1e3);
            }
        }
        self.prompt_tokens
            .fetch_add(answer.usage.prompt_tokens as u64, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(answer.usage.answer_tokens as u64, Ordering::Relaxed);
        if answer.receipt.is_some() {
            self.receipts_signed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a retrieval receipt.
    pub fn retrieval_receipt(&self) {
        self.receipts_signed.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an ask cancelled because its client went away.
    pub fn cancelled(&self) {
        self.asks_cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an ask refused because the queue was full.
    pub fn rejected(&self) {
        self.asks_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// The metrics as Prometheus text; `in_flight`/`waiting` from the admission queue.
    pub fn render(&self, engine: &Engine, in_flight: usize, waiting: usize) -> String {
        let mut out = String::new();
        {
            let r = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
            out.push_str("# HELP tribute_http_requests_total HTTP requests by route and status.\n");
            out.push_str("# TYPE tribute_http_requests_total counter\n");
            for ((route, status), n) in &r.requests {
                let _ = writeln!(
                    out,
                    "tribute_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
            out.push_str("# HELP tribute_http_request_duration_seconds HTTP request latency by route (streams: until the last event).\n");
            out.push_str("# TYPE tribute_http_request_duration_seconds histogram\n");
            for (route, h) in &r.latency {
                h.write(
                    &mut out,
                    "tribute_http_request_duration_seconds",
                    &format!("route=\"{route}\""),
                );
            }
            out.push_str("# HELP tribute_ask_stage_seconds Time per stage of the answered asks.\n");
            out.push_str("# TYPE tribute_ask_stage_seconds histogram\n");
            for (stage, h) in &r.stages {
                h.write(
                    &mut out,
                    "tribute_ask_stage_seconds",
                    &format!("stage=\"{stage}\""),
                );
            }
        }
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: usize| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        out.push_str(
            "# HELP tribute_tokens_total Tokens by kind.\n# TYPE tribute_tokens_total counter\n",
        );
        let _ = writeln!(
            out,
            "tribute_tokens_total{{kind=\"prompt\"}} {}\ntribute_tokens_total{{kind=\"completion\"}} {}",
            self.prompt_tokens.load(Ordering::Relaxed),
            self.completion_tokens.load(Ordering::Relaxed)
        );
        let signed = self.receipts_signed.load(Ordering::Relaxed);
        counter(
            &mut out,
            "tribute_receipts_signed_total",
            "Receipts signed by this server process.",
            signed,
        );
        let cancelled = self.asks_cancelled.load(Ordering::Relaxed);
        counter(
            &mut out,
            "tribute_asks_cancelled_total",
            "Asks cancelled because the client went away.",
            cancelled,
        );
        let rejected = self.asks_rejected.load(Ordering::Relaxed);
        counter(
            &mut out,
            "tribute_asks_rejected_total",
            "Asks refused with 429 because the queue was full.",
            rejected,
        );
        gauge(
            &mut out,
            "tribute_asks_in_flight",
            "Asks running.",
            in_flight,
        );
        gauge(
            &mut out,
            "tribute_asks_waiting",
            "Asks waiting for a place.",
            waiting,
        );
        if let Ok(s) = engine.receipt_stats() {
            out.push_str("# HELP tribute_receipts Journaled receipts by settlement state.\n# TYPE tribute_receipts gauge\n");
            for (state, n) in [
                ("pending", s.pending),
                ("batched", s.batched),
                ("submitted", s.submitted),
                ("confirmed", s.confirmed),
            ] {
                let _ = writeln!(out, "tribute_receipts{{state=\"{state}\"}} {n}");
            }
        }
        let a = engine
            .generator()
            .map(|g| g.adapters().stats())
            .unwrap_or_default();
        gauge(
            &mut out,
            "tribute_adapters_registered",
            "Registered LoRA adapters.",
            a.registered,
        );
        gauge(
            &mut out,
            "tribute_adapters_resident",
            "LoRA adapters loaded in memory.",
            a.resident,
        );
        gauge(
            &mut out,
            "tribute_adapters_resident_bytes",
            "Bytes held by resident adapters.",
            a.resident_bytes,
        );
        gauge(
            &mut out,
            "tribute_adapter_merged_sets",
            "Cached merged adapter sets.",
            a.merged_sets,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.02);
        h.observe(3.0);
        let mut out = String::new();
        h.write(&mut out, "x", "route=\"/a\"");
        assert!(
            out.contains("x_bucket{route=\"/a\",le=\"0.01\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{route=\"/a\",le=\"0.025\"} 1"),
            "{out}"
        );
        assert!(out.contains("x_bucket{route=\"/a\",le=\"5\"} 2"), "{out}");
        assert!(
            out.contains("x_bucket{route=\"/a\",le=\"+Inf\"} 2"),
            "{out}"
        );
        assert!(out.contains("x_count{route=\"/a\"} 2"), "{out}");
    }
}
