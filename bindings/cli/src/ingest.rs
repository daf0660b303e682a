//! `tribute ingest`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tribute::index::document::LoadOptions;
use tribute::index::load_paths;
use tribute::{Contributor, DatanetId, Index, IndexConfig, IngestProgress};

#[derive(Args)]
pub struct IngestArgs {
    /// Knowledge-base directory (created if missing), or a `postgres://` URL.
    #[arg(long)]
    kb: PathBuf,
    /// Datanet for documents that name none.
    #[arg(long, default_value = tribute::index::document::DEFAULT_DATANET)]
    datanet: String,
    /// Contributor address (EIP-55) for documents that name none.
    #[arg(long)]
    contributor: Option<String>,
    /// Embedding model directory (default: the installed all-MiniLM-L6-v2).
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// Index without dense vectors (BM25 only); only when creating a knowledge base.
    #[arg(long)]
    no_embedder: bool,
    /// Skip JSONL documents with neither title nor text (and index title-only ones by title)
    /// instead of failing.
    #[arg(long)]
    skip_empty: bool,
    /// Refuse files larger than this many MiB (nothing of them is read).
    #[arg(long, default_value_t = tribute::index::document::DEFAULT_MAX_FILE_BYTES >> 20)]
    max_file_mb: u64,
    /// Chunks per durable commit (smaller: less work lost if interrupted).
    #[arg(long, default_value_t = IndexConfig::default().commit_every)]
    commit_every: usize,
    /// Print a JSON report and no progress bar.
    #[arg(long)]
    json: bool,
    /// Files, folders (walked recursively) or glob patterns (quote them: 'docs/**/*.pdf')
    /// to ingest: .jsonl, .txt, .md, .pdf, .html/.htm, .docx. A file named here must load;
    /// files found in folders or by patterns that cannot be loaded are skipped and listed.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(a: IngestArgs) -> anyhow::Result<()> {
    let contributor = match &a.contributor {
        Some(c) => Contributor::parse(c)?,
        None => Contributor::UNKNOWN,
    };
    let options = LoadOptions {
        datanet: DatanetId::new(a.datanet.clone()),
        contributor,
        skip_empty: a.skip_empty,
        max_file_bytes: a.max_file_mb.saturating_mul(1 << 20),
    };
    // Read and validate every file before touching the index.
    let loaded = load_paths(&a.files, &options)?;
    let (docs, files) = (loaded.documents, loaded.files);
    if a.json {
        // The JSON report lists them too; say so where people look while it runs.
        for s in &loaded.skipped {
            eprintln!("warning: skipped {}: {}", s.path.display(), s.reason);
        }
    }
    let embedder = if a.no_embedder {
        None
    } else {
        Some(crate::load_embedder(a.embedder.as_ref())?)
    };
    let config = IndexConfig {
        commit_every: a.commit_every,
        ..IndexConfig::default()
    };
    let mut index = Index::open(&a.kb, embedder, config).with_context(|| {
        format!(
            "opening knowledge base {}",
            tribute::index::redact_url(&a.kb.to_string_lossy())
        )
    })?;

    let quiet = a.json || !std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        Some(docs.len() as u64),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} ingest [{bar:30}] {pos}/{len} docs · {per_sec} · chunks {msg} · eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let on_progress = |p: &IngestProgress| {
        // Documents advance as their chunks are embedded.
        let frac = if p.chunks_total > 0 {
            p.chunks_done as f64 / p.chunks_total as f64
        } else {
            1.0
        };
        let docs = p.docs_done.max((frac * p.docs_total as f64) as usize);
        bar.set_position(docs as u64);
        bar.set_message(format!("{}/{}", p.chunks_done, p.chunks_total));
    };
    let n_docs = docs.len();
    let mut report = index.add_documents(docs, Some(&on_progress))?;
    report.skipped = loaded.skipped;
    bar.finish_and_clear();

    if a.json {
        let out = serde_json::json!({
            "kb": a.kb,
            "files": files.len(),
            "documents": n_docs,
            "report": report,
            "docs_per_s": n_docs as f64 / report.seconds.max(1e-9),
            "total_documents": index.document_count(),
            "total_chunks": index.chunk_count(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "ingested {} documents from {} file(s) in {:.1}s ({:.0} docs/s): {} added, {} replaced, {} unchanged, {} chunks",
            n_docs,
            files.len(),
            report.seconds,
            n_docs as f64 / report.seconds.max(1e-9),
            report.added,
            report.replaced,
            report.unchanged,
            report.chunks
        );
        for (id, origin) in &report.duplicates {
            println!(
                "  duplicate: {id} repeats {} (credited to {})",
                origin.doc_id, origin.contributor
            );
        }
        for (id, near) in &report.near_duplicates {
            println!(
                "  near-duplicate: {id} resembles {} by {} (cosine {:.3})",
                near.origin.doc_id, near.origin.contributor, near.cosine
            );
        }
        for s in &report.skipped {
            println!("  skipped: {}: {}", s.path.display(), s.reason);
        }
        println!(
            "knowledge base {}: {} documents, {} chunks",
            a.kb.display(),
            index.document_count(),
            index.chunk_count()
        );
    }
    Ok(())
}
