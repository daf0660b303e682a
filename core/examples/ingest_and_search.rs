//! Ingest the sample datanet and search it, from Rust.
//!
//! ```sh
//! scripts/setup.sh && cargo run -p tribute --example ingest_and_search -- "how long does charging take?"
//! ```

use std::path::Path;
use std::sync::Arc;

use tribute::index::document::{LoadOptions, expand_paths, load_file};
use tribute::{Index, IndexConfig, Mode, OnnxEmbedder};

fn main() -> tribute::index::Result<()> {
    let query = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "when should pilots land in gusts?".into());
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/zephyr");
    let mut docs = Vec::new();
    for file in expand_paths(&[data])? {
        docs.extend(load_file(&file, &LoadOptions::default())?);
    }
    let kb = tempfile_dir();
    let embedder = Arc::new(OnnxEmbedder::default_model()?);
    let mut index = Index::open(&kb, Some(embedder), IndexConfig::default())?;
    let report = index.add_documents(docs, None)?;
    println!(
        "indexed {} documents ({} chunks) in {:.2}s",
        report.added, report.chunks, report.seconds
    );
    for hit in index
        .search(query.as_str())
        .k(3)
        .mode(Mode::Hybrid)
        .execute()?
    {
        println!(
            "{:.3}  {:<22} {}  {}",
            hit.score,
            hit.chunk_id.as_str(),
            hit.contributor,
            hit.datanet
        );
        println!("       {}", hit.text);
    }
    std::fs::remove_dir_all(&kb).ok();
    Ok(())
}

fn tempfile_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tribute-example-{}", std::process::id()))
}
