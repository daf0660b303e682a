//! `tribute delete`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tribute::{DocId, Index, IndexConfig};

#[derive(Args)]
pub struct DeleteArgs {
    /// Knowledge-base directory.
    #[arg(long)]
    kb: PathBuf,
    /// Ids of the documents to delete.
    #[arg(required = true)]
    ids: Vec<String>,
}

pub fn run(a: DeleteArgs) -> anyhow::Result<()> {
    if !a.kb.join("meta.json").is_file() {
        anyhow::bail!("{} is not a knowledge base (no meta.json)", a.kb.display());
    }
    // Deleting touches no vectors: no model needed.
    let mut index = Index::open(&a.kb, None, IndexConfig::default()).with_context(|| {
        format!(
            "opening knowledge base {}",
            tribute::index::redact_url(&a.kb.to_string_lossy())
        )
    })?;
    let mut missing = Vec::new();
    for id in &a.ids {
        if index.delete(&DocId::new(id.clone()))? {
            println!("deleted {id}");
        } else {
            missing.push(id.as_str());
        }
    }
    if !missing.is_empty() {
        anyhow::bail!("no such document(s): {}", missing.join(", "));
    }
    Ok(())
}
