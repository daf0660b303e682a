//! The on-disk hybrid index: documents, chunks, BM25 and dense vectors, kept consistent.
//!
//! # Layout of an index directory
//! - `meta.json`: format version, embedder id and dimension, chunker settings;
//! - `log.jsonl`: append-only log of document, chunk and delete records;
//! - `tantivy/`: the BM25 inverted index; each tantivy commit carries, as its payload,
//!   how many log bytes and vector rows it covers (the *commit record*);
//! - `dense/`: `vectors.f32` (one row per chunk) and HNSW graph snapshots.
//!
//! # Crash safety
//! An ingest writes log lines and vector rows, fsyncs both, then commits tantivy with the
//! commit record. The tantivy commit is atomic, so on open the last commit record says
//! exactly which prefix of the log and of the vectors is valid; anything after it (an
//! ingest killed half-way) is cut off. A killed ingest therefore leaves the index as it
//! was at its last commit, openable and consistent.

mod facade;
mod ingest;
mod local;
mod persist;
mod records;
mod search;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::bm25::Bm25Index;
use crate::chunker::{ChunkerConfig, TokenCounter, WordCounter};
use crate::dense::{DenseIndex, HnswConfig};
use crate::embedder::Embedder;
use crate::store::OpLog;
use crate::types::{ChunkId, ContentHash, DocId, Locator};

pub use facade::{Index, is_postgres_url};
pub use ingest::{IngestProgress, IngestReport};
use persist::Meta;
pub use records::{Chunk, DocumentRecord, NearDuplicate, Origin};
pub use search::{DEFAULT_DEPTH, Hit, RetrieverScore, SearchRequest};

/// Index settings fixed at creation (chunking) or used while ingesting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexConfig {
    /// How documents are cut into chunks; recorded when the index is created, and the
    /// recorded settings are used from then on.
    pub chunker: ChunkerConfig,
    /// HNSW graph settings.
    pub hnsw: HnswConfig,
    /// Cosine similarity at or above which a new document counts as a near-duplicate
    /// of an earlier one (every chunk must have such a match in the same earlier
    /// document). `None` turns the check off.
    pub near_duplicate_threshold: Option<f32>,
    /// Chunks per durable commit during a large ingest.
    pub commit_every: usize,
    /// Most bytes of one document's title and text together
    /// ([`DEFAULT_MAX_DOCUMENT_BYTES`] by default). A larger document is refused with
    /// [`Error::DocumentTooLarge`](crate::Error::DocumentTooLarge) before anything is
    /// chunked or written; a file's size is bounded earlier by
    /// [`LoadOptions::max_file_bytes`](crate::LoadOptions::max_file_bytes).
    pub max_document_bytes: usize,
    /// Most chunks one document may be cut into ([`DEFAULT_MAX_CHUNKS_PER_DOCUMENT`] by
    /// default); more is refused with
    /// [`Error::DocumentTooLarge`](crate::Error::DocumentTooLarge) before anything is
    /// embedded or written.
    pub max_chunks_per_document: usize,
}

/// Default [`IndexConfig::max_document_bytes`]: 64 MiB of text (a 10,000-page book is
/// about 25 MiB).
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 64 << 20;

/// Default [`IndexConfig::max_chunks_per_document`].
pub const DEFAULT_MAX_CHUNKS_PER_DOCUMENT: usize = 100_000;

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            chunker: ChunkerConfig::default(),
            hnsw: HnswConfig::default(),
            near_duplicate_threshold: Some(0.95),
            commit_every: 4096,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            max_chunks_per_document: DEFAULT_MAX_CHUNKS_PER_DOCUMENT,
        }
    }
}

impl IndexConfig {
    /// Refuses a document whose title and text are over [`Self::max_document_bytes`]
    /// (checked before chunking, which costs time in the text's length).
    pub(crate) fn check_document_bytes(&self, doc: &crate::Document) -> crate::Result<()> {
        let bytes = doc.title.len() + doc.text.len();
        if bytes > self.max_document_bytes {
            return Err(crate::Error::DocumentTooLarge {
                id: doc.id.to_string(),
                what: "bytes",
                value: bytes,
                limit: self.max_document_bytes,
                setting: "max_document_bytes",
            });
        }
        Ok(())
    }

    /// Refuses a document cut into more than [`Self::max_chunks_per_document`] chunks.
    pub(crate) fn check_chunks(&self, doc: &crate::Document, chunks: usize) -> crate::Result<()> {
        if chunks > self.max_chunks_per_document {
            return Err(crate::Error::DocumentTooLarge {
                id: doc.id.to_string(),
                what: "chunks",
                value: chunks,
                limit: self.max_chunks_per_document,
                setting: "max_chunks_per_document",
            });
        }
        Ok(())
    }
}

/// A row of the document table. Deleted documents stay (not `alive`), so that chunk
/// slots never move.
struct DocEntry {
    record: DocumentRecord,
    first_slot: u32,
    alive: bool,
    /// The whole text as added (format 2 on; `None` in older indexes and once deleted).
    text: Option<String>,
}

/// A row of the chunk table. Its position there is its *slot*: the same number names
/// its BM25 entry and its vector row.
struct ChunkEntry {
    id: ChunkId,
    doc: u32,
    start: usize,
    end: usize,
    hash: ContentHash,
    text: String,
    locator: Option<Locator>,
    alive: bool,
}

/// The local backend: a hybrid BM25 + dense index of attributed documents in a directory.
pub(crate) struct LocalIndex {
    dir: PathBuf,
    config: IndexConfig,
    meta: Meta,
    embedder: Option<Arc<dyn Embedder>>,
    log: OpLog,
    bm25: Bm25Index,
    dense: Option<DenseIndex>,
    docs: Vec<DocEntry>,
    /// Live documents by id, as positions in `docs`.
    by_id: HashMap<DocId, u32>,
    /// The live document each text was first indexed as (exact duplicates point here).
    by_hash: HashMap<ContentHash, u32>,
    chunks: Vec<ChunkEntry>,
}

impl LocalIndex {
    /// Live chunks.
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.iter().filter(|c| c.alive).count()
    }

    fn chunk_view(&self, c: &ChunkEntry) -> Chunk {
        let r = &self.docs[c.doc as usize].record;
        Chunk {
            chunk_id: c.id.clone(),
            doc_id: r.id.clone(),
            title: r.title.clone(),
            text: c.text.clone(),
            start: c.start,
            end: c.end,
            contributor: r.contributor,
            datanet: r.datanet.clone(),
            content_hash: c.hash,
            locator: c.locator.clone(),
        }
    }

    fn counter(&self) -> &dyn TokenCounter {
        match &self.embedder {
            Some(e) => e.as_ref(),
            None => &WordCounter,
        }
    }
}

/// The text a chunk is embedded as: its document's title, then the chunk.
pub(crate) fn embed_text(title: &str, chunk: &str) -> String {
    if title.trim().is_empty() {
        chunk.to_owned()
    } else {
        format!("{title}\n{chunk}")
    }
}
