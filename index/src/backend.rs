//! The storage seam: what an [`Index`](crate::Index) asks of the place its documents live.
//!
//! Two implementations ship: the local directory (tantivy BM25 + hnsw_rs vectors, always
//! built) and PostgreSQL with pgvector (feature `postgres`). [`Index::open`](crate::Index::open)
//! picks one from its location: a directory, or a `postgres://` URL.

use crate::bm25::Bm25Params;
use crate::document::Document;
use crate::error::Result;
use crate::fusion::{Fusion, Mode};
use crate::index::{Chunk, DocumentRecord, Hit, IngestProgress, IngestReport};
use crate::types::{Contributor, DatanetId, DocId};

/// A search as a backend receives it: the query text, its (unit-length) vector when a
/// dense leg runs, and every option of [`SearchRequest`](crate::SearchRequest).
#[derive(Clone, Debug)]
pub struct SearchSpec<'a> {
    /// The query text (BM25 / full-text leg).
    pub query: &'a str,
    /// The query vector, normalised to unit length; `None` in BM25 mode.
    pub vector: Option<&'a [f32]>,
    /// Hits to return (at least 1).
    pub k: usize,
    /// Which retrievers run.
    pub mode: Mode,
    /// How the two lists are fused in hybrid mode.
    pub fusion: Fusion,
    /// Candidates each retriever contributes to fusion (already `≥ k`).
    pub depth: usize,
    /// BM25 parameters.
    pub bm25: Bm25Params,
    /// Only chunks of these datanets (empty: all).
    pub datanets: &'a [DatanetId],
    /// Only chunks of these contributors (empty: all).
    pub contributors: &'a [Contributor],
    /// At most one hit per document.
    pub per_document: bool,
}

impl SearchSpec<'_> {
    /// Candidates each retriever returns: `k` for a single retriever, `depth` when fusing
    /// or grouping by document (grouping wants at least `3k`).
    pub fn candidates(&self) -> usize {
        let mut depth = self.depth.max(self.k);
        if self.per_document {
            depth = depth.max(self.k * 3);
        }
        if self.mode == Mode::Hybrid || self.per_document {
            depth
        } else {
            self.k
        }
    }
}

/// Where an index's documents, chunks and vectors live, and how they are searched.
///
/// Implementations keep every attribution field of a [`Hit`] (chunk and document ids,
/// contributor, datanet, content hash, byte span, each retriever's score and rank) and
/// fuse with [`Fusion::fuse`]'s exact arithmetic, so a hit list does not depend on
/// where the knowledge base is stored (up to each engine's lexical scoring).
pub trait Backend: Send + Sync {
    /// Where the data lives, for messages (a directory, or a URL without its password).
    fn location(&self) -> String;

    /// Live documents (exact duplicates included).
    fn document_count(&self) -> usize;

    /// Live chunks.
    fn chunk_count(&self) -> usize;

    /// A live document's record.
    fn document(&self, id: &DocId) -> Result<Option<DocumentRecord>>;

    /// All live document records, in ingest order.
    fn documents(&self) -> Result<Vec<DocumentRecord>>;

    /// A live document's whole text as it was added (`None`: no such document), or
    /// [`Error::TextNotKept`](crate::Error::TextNotKept) where the backend does not keep it.
    fn document_text(&self, id: &DocId) -> Result<Option<String>> {
        Err(crate::Error::TextNotKept {
            id: id.to_string(),
            reason: "this knowledge base's backend keeps chunks, not whole texts",
        })
    }

    /// All live chunks, in ingest order.
    fn chunks(&self) -> Result<Vec<Chunk>>;

    /// Adds (or replaces, or skips unchanged) documents; see
    /// [`Index::add_documents`](crate::Index::add_documents).
    fn add_documents(
        &mut self,
        docs: Vec<Document>,
        progress: Option<&dyn Fn(&IngestProgress)>,
    ) -> Result<IngestReport>;

    /// Deletes a document and its chunks; whether it existed.
    fn delete(&mut self, id: &DocId) -> Result<bool>;

    /// Runs a search (the query is non-empty and `k ≥ 1`).
    fn search(&self, spec: &SearchSpec<'_>) -> Result<Vec<Hit>>;

    /// Checks that the stored tables agree with each other.
    fn verify(&self) -> Result<()>;

    /// Compacts storage so later opens and searches are as fast as they can be.
    fn optimize(&mut self) -> Result<()>;
}
