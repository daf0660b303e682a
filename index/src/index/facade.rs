//! [`Index`]: the knowledge base users open, over whichever [`Backend`] stores it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Chunk, DocumentRecord, IndexConfig, IngestProgress, IngestReport, LocalIndex};
use crate::backend::Backend;
use crate::document::{Document, LoadOptions};
use crate::embedder::Embedder;
use crate::error::Result;
use crate::types::DocId;

/// A hybrid BM25 + dense index of attributed documents: a local directory, or (feature
/// `postgres`) a PostgreSQL database with pgvector that many processes share.
pub struct Index {
    /// The directory of a local index; empty for a remote one.
    dir: PathBuf,
    pub(super) embedder: Option<Arc<dyn Embedder>>,
    pub(super) backend: Box<dyn Backend>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("location", &self.backend.location())
            .field("documents", &self.backend.document_count())
            .field("chunks", &self.backend.chunk_count())
            .field("embedder", &self.embedder.as_ref().map(|e| e.model_id()))
            .finish()
    }
}

/// Whether `location` names a Postgres database rather than a directory.
pub fn is_postgres_url(location: &Path) -> bool {
    location
        .to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

impl Index {
    /// Opens the knowledge base at `location`, creating it if missing: a directory, or a
    /// `postgres://` / `postgresql://` URL (feature `postgres`; see [`crate::postgres`]).
    ///
    /// A new index records the embedder it is created with (none: a BM25-only index).
    /// An existing index may be opened without an embedder for BM25 search; with one,
    /// it must be the embedder it was built with.
    pub fn open(
        location: impl AsRef<Path>,
        embedder: Option<Arc<dyn Embedder>>,
        config: IndexConfig,
    ) -> Result<Self> {
        let location = location.as_ref();
        if is_postgres_url(location) {
            let url = location.to_string_lossy();
            return Self::open_postgres(&url, embedder, config);
        }
        let local = LocalIndex::open(location, embedder.clone(), config)?;
        Ok(Self::with_backend(
            location.to_owned(),
            embedder,
            Box::new(local),
        ))
    }

    #[cfg(feature = "postgres")]
    fn open_postgres(
        url: &str,
        embedder: Option<Arc<dyn Embedder>>,
        config: IndexConfig,
    ) -> Result<Self> {
        let store = crate::postgres::PgBackend::connect(url, embedder.clone(), config)?;
        Ok(Self::with_backend(
            PathBuf::new(),
            embedder,
            Box::new(store),
        ))
    }

    #[cfg(not(feature = "postgres"))]
    fn open_postgres(
        url: &str,
        _embedder: Option<Arc<dyn Embedder>>,
        _config: IndexConfig,
    ) -> Result<Self> {
        Err(crate::Error::PostgresNotBuilt {
            url: crate::error::redact_url(url),
        })
    }

    /// An index over any backend (the embedder embeds queries; the backend was opened
    /// with the same one for ingest).
    pub fn with_backend(
        dir: PathBuf,
        embedder: Option<Arc<dyn Embedder>>,
        backend: Box<dyn Backend>,
    ) -> Self {
        Self {
            dir,
            embedder,
            backend,
        }
    }

    /// The index directory (empty for a knowledge base that is not a local directory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the knowledge base lives: its directory, or its URL without the password.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The embedder, if the index was opened with one.
    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref()
    }

    /// Live documents (exact duplicates included). A shared (Postgres) knowledge base
    /// reports the count as of this handle's last open or write.
    pub fn document_count(&self) -> usize {
        self.backend.document_count()
    }

    /// Live chunks (for a shared knowledge base, as of this handle's last open or write).
    pub fn chunk_count(&self) -> usize {
        self.backend.chunk_count()
    }

    /// A live document's record. A backend that cannot be read logs a `WARN` and gives
    /// `None`; [`Index::try_document`] returns the error instead.
    pub fn document(&self, id: &DocId) -> Option<DocumentRecord> {
        self.try_document(id).unwrap_or_else(|e| {
            tracing::warn!(target: "tribute_index", "reading document {id}: {e}");
            None
        })
    }

    /// A live document's record, or the backend's error.
    pub fn try_document(&self, id: &DocId) -> Result<Option<DocumentRecord>> {
        self.backend.document(id)
    }

    /// A live document's whole text as it was added (`None`: no such document), or
    /// [`Error::TextNotKept`](crate::Error::TextNotKept) where it is not kept: a local
    /// index created before format 2, or a Postgres knowledge base (which keeps chunks).
    pub fn document_text(&self, id: &DocId) -> Result<Option<String>> {
        self.backend.document_text(id)
    }

    /// A live document as it was added: its text, title, datanet, contributor, license and
    /// metadata (not the page and section layout). `None`: no such document; an error as
    /// for [`Index::document_text`].
    pub fn get_document(&self, id: &DocId) -> Result<Option<Document>> {
        let Some(record) = self.backend.document(id)? else {
            return Ok(None);
        };
        let Some(text) = self.backend.document_text(id)? else {
            return Ok(None);
        };
        Ok(Some(Document {
            id: record.id,
            title: record.title,
            text,
            datanet: record.datanet,
            contributor: record.contributor,
            license: record.license,
            metadata: record.metadata,
            layout: Default::default(),
        }))
    }

    /// All live document records, in ingest order.
    pub fn documents(&self) -> Result<Vec<DocumentRecord>> {
        self.backend.documents()
    }

    /// All live chunks, in ingest order.
    pub fn chunks(&self) -> Result<Vec<Chunk>> {
        self.backend.chunks()
    }

    /// Adds documents. Each is validated first: one bad document means none is added.
    ///
    /// A document whose id exists with the same text is skipped; with other text it
    /// replaces the old version. A document whose text exactly matches another
    /// document's is recorded as its duplicate (credit goes to the first contributor)
    /// and not indexed again.
    pub fn add_documents(
        &mut self,
        docs: Vec<Document>,
        progress: Option<&dyn Fn(&IngestProgress)>,
    ) -> Result<IngestReport> {
        self.backend.add_documents(docs, progress)
    }

    /// Loads files, folders and glob patterns ([`crate::loaders::load_paths`]) and adds
    /// their documents. Files found in folders or by globs that cannot be loaded are left
    /// out and listed in [`IngestReport::skipped`]; a file named explicitly that cannot be
    /// loaded is an error, and then nothing is added.
    pub fn ingest_paths(
        &mut self,
        inputs: &[PathBuf],
        options: &LoadOptions,
        progress: Option<&dyn Fn(&IngestProgress)>,
    ) -> Result<IngestReport> {
        let loaded = crate::loaders::load_paths(inputs, options)?;
        let mut report = self.add_documents(loaded.documents, progress)?;
        report.skipped = loaded.skipped;
        Ok(report)
    }

    /// Deletes a document and its chunks. Returns whether it existed.
    pub fn delete(&mut self, id: &DocId) -> Result<bool> {
        self.backend.delete(id)
    }

    /// Checks that the stored tables agree (for a local index: the document table, the
    /// BM25 index and the vectors). Returns [`Error::Corrupt`] naming the first
    /// disagreement.
    pub fn verify(&self) -> Result<()> {
        self.backend.verify()
    }

    /// Compacts storage (locally: merges BM25 segments, dropping deleted chunks for
    /// good, and snapshots the graph) so the next open is as fast as it can be.
    pub fn optimize(&mut self) -> Result<()> {
        self.backend.optimize()
    }
}
