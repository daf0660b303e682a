//! `tribute search`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tribute::{Contributor, Fusion, Index, IndexConfig, Mode};

#[derive(Args)]
pub struct SearchArgs {
    /// Knowledge-base directory, or a `postgres://` URL.
    #[arg(long)]
    kb: PathBuf,
    /// hybrid, bm25 or dense.
    #[arg(long, default_value = "hybrid")]
    mode: String,
    /// Number of hits.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Only these datanets (repeatable).
    #[arg(long)]
    datanet: Vec<String>,
    /// Only these contributors (repeatable).
    #[arg(long)]
    contributor: Vec<String>,
    /// Fusion for hybrid mode: rrf, rrf:K, weighted, weighted:ALPHA.
    #[arg(long)]
    fusion: Option<String>,
    /// Embedding model directory (default: the installed all-MiniLM-L6-v2).
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// Print hits as JSON.
    #[arg(long)]
    json: bool,
    /// The query.
    query: String,
}

pub fn run(a: SearchArgs) -> anyhow::Result<()> {
    let mode: Mode = a.mode.parse()?;
    let fusion: Fusion = match &a.fusion {
        Some(f) => f.parse()?,
        None => Fusion::default(),
    };
    let contributors = a
        .contributor
        .iter()
        .map(|c| Contributor::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    if !tribute::index::is_postgres_url(&a.kb) && !a.kb.join("meta.json").is_file() {
        anyhow::bail!(
            "{} is not a knowledge base (no meta.json); create one with `tribute ingest`",
            a.kb.display()
        );
    }
    // BM25 needs no model: skip loading it.
    let embedder = if mode == Mode::Bm25 {
        None
    } else {
        Some(crate::load_embedder(a.embedder.as_ref())?)
    };
    let index = Index::open(&a.kb, embedder, IndexConfig::default()).with_context(|| {
        format!(
            "opening knowledge base {}",
            tribute::index::redact_url(&a.kb.to_string_lossy())
        )
    })?;
    let hits = index
        .search(a.query.clone())
        .k(a.k)
        .mode(mode)
        .fusion(fusion)
        .datanets(a.datanet.iter().map(String::as_str))
        .contributors(contributors)
        .execute()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    if hits.is_empty() {
        println!("no hits");
    }
    for (i, h) in hits.iter().enumerate() {
        let part = |s: Option<tribute::index::RetrieverScore>| {
            s.map_or("-".to_owned(), |s| format!("#{} {:.3}", s.rank, s.score))
        };
        let snippet: String = h
            .text
            .chars()
            .take(160)
            .collect::<String>()
            .replace('\n', " ");
        println!(
            "{:>2}. {:.4}  {}  [{} · {}]  bm25 {} · dense {}",
            i + 1,
            h.score,
            h.chunk_id,
            h.datanet,
            h.contributor,
            part(h.bm25),
            part(h.dense)
        );
        match (&h.locator, h.title.is_empty()) {
            (Some(l), true) => println!("    ({l})"),
            (Some(l), false) => println!("    {} ({l})", h.title),
            (None, false) => println!("    {}", h.title),
            (None, true) => {}
        }
        println!(
            "    {snippet}{}",
            if h.text.chars().count() > 160 {
                "…"
            } else {
                ""
            }
        );
    }
    Ok(())
}
