//! `tribute sync`: make a knowledge base match a folder, once or while it changes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tribute::index::document::LoadOptions;
use tribute::index::{SyncProgress, SyncReport};
use tribute::{Contributor, DatanetId, Index, IndexConfig};

#[derive(Args)]
pub struct SyncArgs {
    /// Knowledge-base directory (created if missing), or a `postgres://` URL.
    #[arg(long)]
    kb: PathBuf,
    /// Datanet for the folder's documents (JSONL lines may name their own).
    #[arg(long, default_value = tribute::index::document::DEFAULT_DATANET)]
    datanet: String,
    /// Contributor address (EIP-55) for the folder's documents.
    #[arg(long)]
    contributor: Option<String>,
    /// Embedding model directory (default: the installed all-MiniLM-L6-v2).
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// Index without dense vectors (BM25 only); only when creating a knowledge base.
    #[arg(long)]
    no_embedder: bool,
    /// Files larger than this many MiB fail (nothing of them is read).
    #[arg(long, default_value_t = tribute::index::document::DEFAULT_MAX_FILE_BYTES >> 20)]
    max_file_mb: u64,
    /// Keep syncing as the folder changes, until interrupted (Ctrl-C: an interrupted sync
    /// leaves whole commits, and the next sync finishes it).
    #[arg(long)]
    watch: bool,
    /// With --watch: how long changes must settle before a sync, in milliseconds.
    #[arg(long, default_value_t = 500)]
    debounce_ms: u64,
    /// Print each sync's report as one line of JSON, and no progress bar.
    #[arg(long)]
    json: bool,
    /// The folder (walked recursively): .jsonl, .txt, .md, .pdf, .html/.htm, .docx files.
    dir: PathBuf,
}

pub fn run(a: SyncArgs) -> anyhow::Result<()> {
    let contributor = match &a.contributor {
        Some(c) => Contributor::parse(c)?,
        None => Contributor::UNKNOWN,
    };
    let options = LoadOptions {
        datanet: DatanetId::new(a.datanet.clone()),
        contributor,
        max_file_bytes: a.max_file_mb.saturating_mul(1 << 20),
        ..LoadOptions::default()
    };
    let embedder = if a.no_embedder {
        None
    } else {
        Some(crate::load_embedder(a.embedder.as_ref())?)
    };
    let kb_name = tribute::index::redact_url(&a.kb.to_string_lossy());
    let mut index = Index::open(&a.kb, embedder, IndexConfig::default())
        .with_context(|| format!("opening knowledge base {kb_name}"))?;

    let quiet = a.json || !std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        None,
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} sync [{bar:30}] {pos}/{len} files · {msg} · eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let on_progress = |p: &SyncProgress| {
        if p.files_to_index == 0 {
            bar.set_message(format!("scanned {} files", p.files_scanned));
            return;
        }
        bar.set_length(p.files_to_index as u64);
        bar.set_position(p.files_indexed as u64);
        bar.set_message(format!(
            "chunks {}/{}",
            p.ingest.chunks_done, p.ingest.chunks_total
        ));
    };
    let print = |index: &Index, report: &SyncReport| {
        bar.finish_and_clear();
        if a.json {
            let out = serde_json::json!({
                "kb": kb_name,
                "dir": a.dir,
                "report": report,
                "total_documents": index.document_count(),
                "total_chunks": index.chunk_count(),
            });
            println!("{out}");
        } else {
            print_summary(report);
            println!(
                "knowledge base {kb_name}: {} documents, {} chunks",
                index.document_count(),
                index.chunk_count()
            );
        }
        bar.reset();
    };

    let request = index
        .sync(&a.dir)
        .options(options)
        .progress(&on_progress)
        .debounce(Duration::from_millis(a.debounce_ms));
    if a.watch {
        if !a.json {
            eprintln!("watching {} (Ctrl-C to stop)", a.dir.display());
        }
        // Runs until the process is interrupted: every write is a whole commit.
        let never = AtomicBool::new(false);
        let mut first = true;
        request.watch(&never, |index, report| {
            // After the first, passes that changed nothing and failed nothing stay quiet.
            if first || report.changed() || !report.failed.is_empty() {
                print(index, report);
            }
            first = false;
        })?;
    } else {
        let report = request.run()?;
        print(&index, &report);
    }
    Ok(())
}

fn print_summary(r: &SyncReport) {
    println!(
        "synced in {:.1}s: {} added, {} replaced, {} deleted, {} unchanged, {} failed ({} documents, {} chunks indexed)",
        r.seconds,
        r.added.len(),
        r.replaced.len(),
        r.deleted.len(),
        r.unchanged,
        r.failed.len(),
        r.documents,
        r.chunks
    );
    for (what, files) in [
        ("added", &r.added),
        ("replaced", &r.replaced),
        ("deleted", &r.deleted),
    ] {
        for f in files {
            println!("  {what}: {f}");
        }
    }
    for f in &r.failed {
        println!("  failed: {}: {}", f.path.display(), f.reason);
    }
    for s in &r.skipped {
        println!("  skipped: {}: {}", s.path.display(), s.reason);
    }
    for (id, origin) in &r.duplicates {
        println!(
            "  duplicate: {id} repeats {} (credited to {})",
            origin.doc_id, origin.contributor
        );
    }
}
