//! Query-embedding latency and batch-embedding throughput of the default model, for
//! choosing embedder settings.
//!
//! ```sh
//! cargo run --release -p tribute-index --example embed_latency -- ../shared/data/cisi
//! SESSIONS=1 THREADS=2 BATCH=32 cargo run --release -p tribute-index --example embed_latency -- ../shared/data/cisi
//! QUERY_THREADS=2 QUERY_SPIN=1 DOCS=0 cargo run --release -p tribute-index --example embed_latency -- ../shared/data/cisi
//! ```
//! `QUERY_THREADS=0` sends queries to the single-threaded ingest sessions (no query
//! session); the query cache is off here, so every query runs the model.

use std::time::Instant;

use tribute_index::TokenCounter;
use tribute_index::embedder::{
    Embedder, EmbedderOptions, OnnxEmbedder, QueryOptions, default_model_dir,
};
use tribute_index::eval::{BeirDataset, percentile};

fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn main() -> tribute_index::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data/cisi".into());
    let data = BeirDataset::load(std::path::Path::new(&dir))?;
    let defaults = EmbedderOptions::default();
    let e = OnnxEmbedder::from_dir(
        &default_model_dir(),
        EmbedderOptions {
            sessions: env("SESSIONS").or(defaults.sessions),
            threads_per_session: env("THREADS").unwrap_or(defaults.threads_per_session),
            batch_size: env("BATCH").unwrap_or(defaults.batch_size),
            query: QueryOptions {
                threads: env("QUERY_THREADS").or(defaults.query.threads),
                spinning: env("QUERY_SPIN").is_some_and(|s| s > 0),
                cache_entries: 0,
                ..QueryOptions::default()
            },
            ..defaults
        },
    )?;
    let mut lat = Vec::new();
    for (_, q) in &data.queries {
        let t = Instant::now();
        e.embed(&[q.as_str()])?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "query embedding: p50 {:.2} ms, p95 {:.2} ms ({} queries)",
        percentile(&lat, 50.0),
        percentile(&lat, 95.0),
        lat.len()
    );
    let n = env("DOCS").unwrap_or(320).min(data.corpus.len());
    if n == 0 {
        return Ok(());
    }
    let texts: Vec<String> = data.corpus[..n]
        .iter()
        .map(|d| format!("{}\n{}", d.title, d.text))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens: usize = refs.iter().map(|t| e.count_tokens(t).min(254) + 2).sum();
    let t = Instant::now();
    e.embed(&refs)?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "batch embedding: {n} texts, {tokens} tokens in {s:.2}s = {:.1} texts/s, {:.0} tokens/s",
        n as f64 / s,
        tokens as f64 / s
    );
    Ok(())
}
