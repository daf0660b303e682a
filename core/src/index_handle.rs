//! [`IndexHandle`]: a knowledge base handle that keeps working after an engine takes its
//! directory over — what the Python and Kotlin/Swift `Index` objects wrap.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tribute_index::embedder::{EmbedderOptions, OnnxEmbedder, default_model_dir};
use tribute_index::{
    Document, Embedder, Hit, Index, IndexConfig, IngestProgress, IngestReport, LoadOptions,
    SyncProgress, SyncReport,
};

use crate::engine::{Engine, EngineBuilder, IndexSize, SearchOptions};
use crate::error::{Error, Result};

/// A handle on a knowledge base directory that is either open by itself or served by an
/// [`Engine`] that took the directory over ([`IndexHandle::serve_engine`]); searches,
/// ingests and deletes work the same either way. An index directory may be open once per
/// process, so handing it to an engine closes the handle's own index.
pub struct IndexHandle {
    path: PathBuf,
    embedder: Option<Arc<dyn Embedder>>,
    backing: RwLock<Option<Backing>>,
}

/// What an [`IndexHandle`] is backed by (`None` in the handle: closed).
enum Backing {
    /// Its own index.
    Own(Box<Index>),
    /// An engine that took the directory over.
    Engine(Engine),
}

impl std::fmt::Debug for IndexHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexHandle")
            .field("path", &self.path)
            .field("closed", &self.is_closed())
            .field("serves_engine", &self.serves_engine())
            .finish_non_exhaustive()
    }
}

impl IndexHandle {
    /// Opens the knowledge base in `path` (created if missing) with the embedding model in
    /// `embedder_dir` (`None`: the default all-MiniLM-L6-v2). An existing index must be
    /// opened with the embedder it was built with.
    pub fn open(path: impl Into<PathBuf>, embedder_dir: Option<&Path>) -> Result<Self> {
        let dir = embedder_dir.map_or_else(default_model_dir, Path::to_owned);
        let embedder = OnnxEmbedder::from_dir(&dir, EmbedderOptions::default())?;
        Self::open_with(path, Some(Arc::new(embedder)))
    }

    /// Opens the knowledge base in `path` with an already loaded embedder (`None`: a
    /// BM25-only index).
    pub fn open_with(
        path: impl Into<PathBuf>,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Result<Self> {
        let path = path.into();
        let index = Index::open(&path, embedder.clone(), IndexConfig::default())?;
        Ok(IndexHandle {
            path,
            embedder,
            backing: RwLock::new(Some(Backing::Own(Box::new(index)))),
        })
    }

    /// A handle on the knowledge base of `engine`.
    pub fn for_engine(engine: Engine) -> Self {
        IndexHandle {
            path: engine.config().index.clone(),
            embedder: None,
            backing: RwLock::new(Some(Backing::Engine(engine))),
        }
    }

    /// Builds an engine over this directory and serves through it from then on: closes the
    /// handle's own index, then builds `builder` with this directory and embedder. If the
    /// build fails the handle reopens its own index. Other users of the handle wait until
    /// the build is done.
    pub fn serve_engine(&self, builder: EngineBuilder) -> Result<Engine> {
        let mut backing = self.write();
        match backing.take() {
            Some(Backing::Own(index)) => {
                drop(index);
                let mut builder = builder.index_dir(self.path.clone());
                if let Some(e) = &self.embedder {
                    builder = builder.embedder(e.clone());
                }
                match builder.build() {
                    Ok(engine) => {
                        *backing = Some(Backing::Engine(engine.clone()));
                        Ok(engine)
                    }
                    Err(cause) => {
                        let config = IndexConfig::default();
                        match Index::open(&self.path, self.embedder.clone(), config) {
                            Ok(index) => {
                                *backing = Some(Backing::Own(Box::new(index)));
                                Err(cause)
                            }
                            Err(reopen) => Err(Error::IndexLost {
                                cause: Box::new(cause),
                                reopen,
                            }),
                        }
                    }
                }
            }
            Some(Backing::Engine(engine)) => {
                *backing = Some(Backing::Engine(engine));
                Err(Error::InvalidRequest(
                    "this index already serves an engine: use that engine (or its index)".into(),
                ))
            }
            None => Err(Error::IndexClosed),
        }
    }

    /// Adds documents (see [`Index::add_documents`]); `progress` is called after each
    /// embedded batch.
    pub fn add_documents(
        &self,
        docs: Vec<Document>,
        progress: Option<&dyn Fn(&IngestProgress)>,
    ) -> Result<IngestReport> {
        match &mut *self.write() {
            None => Err(Error::IndexClosed),
            Some(Backing::Own(index)) => Ok(index.add_documents(docs, progress)?),
            Some(Backing::Engine(engine)) => engine.add_documents(docs, progress),
        }
    }

    /// Searches: the best chunks for `query`, best first. Unset options take the engine's
    /// configuration when an engine serves the index, else the index's defaults (hybrid,
    /// every datanet).
    pub fn search(&self, query: &str, options: &SearchOptions) -> Result<Vec<Hit>> {
        match &*self.read() {
            None => Err(Error::IndexClosed),
            Some(Backing::Own(index)) => {
                let mut req = index.search(query).mode(options.mode.unwrap_or_default());
                if let Some(k) = options.top_k {
                    req = req.k(k);
                }
                if let Some(d) = &options.datanets {
                    req = req.datanets(d.iter().map(String::as_str));
                }
                Ok(req.execute()?)
            }
            Some(Backing::Engine(engine)) => engine.search(query).options(options.clone()).run(),
        }
    }

    /// A document as it was added — text, title, datanet, contributor, license, metadata
    /// — or `None` when no live document has this id. A knowledge base that does not keep
    /// whole texts (a local index created before format 2, a Postgres one) answers
    /// `tribute_index::Error::TextNotKept`.
    pub fn document(&self, doc_id: &str) -> Result<Option<Document>> {
        match &*self.read() {
            None => Err(Error::IndexClosed),
            Some(Backing::Own(index)) => Ok(index.get_document(&doc_id.into())?),
            Some(Backing::Engine(engine)) => engine.document(doc_id),
        }
    }

    /// Deletes a document and its chunks; returns whether it existed.
    pub fn delete(&self, doc_id: &str) -> Result<bool> {
        match &mut *self.write() {
            None => Err(Error::IndexClosed),
            Some(Backing::Own(index)) => Ok(index.delete(&doc_id.into())?),
            Some(Backing::Engine(engine)) => engine.delete_document(doc_id),
        }
    }

    /// Makes the knowledge base match the folder `dir` (see [`Index::sync`]): new files
    /// added, changed ones replaced, removed ones deleted.
    pub fn sync(
        &self,
        dir: &Path,
        options: LoadOptions,
        progress: Option<&dyn Fn(&SyncProgress)>,
    ) -> Result<SyncReport> {
        match &mut *self.write() {
            None => Err(Error::IndexClosed),
            Some(Backing::Own(index)) => Ok(sync_index(index, dir, options, progress)?),
            Some(Backing::Engine(engine)) => engine.sync_folder(dir, options, progress),
        }
    }

    /// Documents and chunks in the index.
    pub fn size(&self) -> Result<IndexSize> {
        match &*self.read() {
            None => Err(Error::IndexClosed),
            Some(Backing::Own(index)) => Ok(IndexSize {
                documents: index.document_count(),
                chunks: index.chunk_count(),
            }),
            Some(Backing::Engine(engine)) => engine.index_size(),
        }
    }

    /// The index directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the handle is closed.
    pub fn is_closed(&self) -> bool {
        self.read().is_none()
    }

    /// Whether an engine serves the index.
    pub fn serves_engine(&self) -> bool {
        matches!(&*self.read(), Some(Backing::Engine(_)))
    }

    /// Releases the directory; later calls fail with [`Error::IndexClosed`]. An engine
    /// served by the index keeps it open for itself.
    pub fn close(&self) {
        let backing = self.write().take();
        drop(backing);
    }

    // The slot only says which backing serves the handle and is replaced whole, so a
    // panic while it was held leaves nothing half-done: poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, Option<Backing>> {
        self.backing.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Option<Backing>> {
        self.backing.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One sync of `index` with `dir`, with the options and progress callback given.
pub(crate) fn sync_index(
    index: &mut Index,
    dir: &Path,
    options: LoadOptions,
    progress: Option<&dyn Fn(&SyncProgress)>,
) -> tribute_index::Result<SyncReport> {
    let mut request = index.sync(dir).options(options);
    if let Some(p) = progress {
        request = request.progress(p);
    }
    request.run()
}
