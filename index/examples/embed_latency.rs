//! Prints query-embedding latency percentiles for the queries of a BEIR folder.
//!
//! `cargo run --release -p tribute-index --example embed_latency -- ../shared/data/cisi`

use std::time::Instant;

use tribute_index::embedder::{Embedder, EmbedderOptions, OnnxEmbedder, default_model_dir};
use tribute_index::eval::{BeirDataset, percentile};

fn main() -> tribute_index::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data/cisi".into());
    let data = BeirDataset::load(std::path::Path::new(&dir))?;
    let sessions: Option<usize> = std::env::var("SESSIONS").ok().and_then(|s| s.parse().ok());
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let e = OnnxEmbedder::from_dir(
        &default_model_dir(),
        EmbedderOptions {
            sessions,
            threads_per_session: threads,
            ..EmbedderOptions::default()
        },
    )?;
    let mut lat = Vec::new();
    for (_, q) in data.queries.iter().chain(data.queries.iter()) {
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
    Ok(())
}
