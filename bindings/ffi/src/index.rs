//! The knowledge base: [`Index`], a handle on an index directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tribute::index::Embedder;
use tribute::index::document::{LoadOptions, expand_paths, load_file};
use tribute::index::embedder::{EmbedderOptions, OnnxEmbedder, default_model_dir};
use tribute::{Contributor, DatanetId, IndexConfig};

use crate::error::{Result, TributeError, guard, request};
use crate::types::{Document, Hit, IngestReport, SearchMode, count, size};
use crate::{read, write};

/// What an [`Index`] handle is backed by.
pub(crate) enum Backing {
    /// Its own `tribute::Index`.
    Own(Box<tribute::Index>),
    /// An engine that took the directory over (`Engine(index, …)`).
    Engine(tribute::Engine),
}

/// A knowledge base: attributed documents in datanets, searched by BM25, dense vectors or
/// both (hybrid), stored in a directory.
///
/// Open one with `Index.open(path)`. Each index directory may be open once per process.
/// Passing the index to the `Engine` constructor hands the directory to the engine: the
/// handle then searches and ingests through the engine (with the engine's retrieval
/// mode). `release()` releases the directory (Kotlin's `close()`/`use {}` and dropping the
/// last Swift reference also free the handle).
#[derive(uniffi::Object)]
pub struct Index {
    path: PathBuf,
    embedder: Option<Arc<dyn Embedder>>,
    backing: RwLock<Option<Backing>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn closed() -> TributeError {
    TributeError::KnowledgeBase("the index is closed".into())
}

fn load_embedder(dir: Option<&Path>) -> Result<Arc<dyn Embedder>> {
    let dir = dir.map_or_else(default_model_dir, Path::to_owned);
    Ok(Arc::new(OnnxEmbedder::from_dir(
        &dir,
        EmbedderOptions::default(),
    )?))
}

fn contributor(c: Option<&str>) -> Result<Option<Contributor>> {
    c.map(|c| Contributor::parse(c).map_err(TributeError::from))
        .transpose()
}

impl Index {
    /// A handle backed by an engine built from a config file.
    pub(crate) fn for_engine(engine: tribute::Engine) -> Self {
        Index {
            path: engine.config().index.clone(),
            embedder: None,
            backing: RwLock::new(Some(Backing::Engine(engine))),
        }
    }

    /// Hands the directory to an engine: closes this handle's own index, calls `build`
    /// with the path and the embedder, and from then on serves through the engine. If
    /// `build` fails, the handle reopens its own index.
    pub(crate) fn serve_engine(
        &self,
        build: impl FnOnce(PathBuf, Option<Arc<dyn Embedder>>) -> Result<tribute::Engine>,
    ) -> Result<tribute::Engine> {
        let mut b = write(&self.backing);
        match b.take() {
            Some(Backing::Own(index)) => {
                drop(index);
                match build(self.path.clone(), self.embedder.clone()) {
                    Ok(engine) => {
                        *b = Some(Backing::Engine(engine.clone()));
                        Ok(engine)
                    }
                    Err(e) => {
                        let config = IndexConfig::default();
                        match tribute::Index::open(&self.path, self.embedder.clone(), config) {
                            Ok(index) => {
                                *b = Some(Backing::Own(Box::new(index)));
                                Err(e)
                            }
                            Err(reopen) => Err(TributeError::KnowledgeBase(format!(
                                "{e} (and reopening the index failed, so it is closed: {reopen})"
                            ))),
                        }
                    }
                }
            }
            Some(Backing::Engine(e)) => {
                *b = Some(Backing::Engine(e));
                Err(request(
                    "this index already serves an engine: use that engine (or its index())",
                ))
            }
            None => Err(closed()),
        }
    }

    /// Releases the directory (the engine's, if it serves one, stays open for the engine).
    pub(crate) fn release(&self) {
        let old = write(&self.backing).take();
        drop(old);
    }

    fn add_docs(&self, docs: Vec<tribute::Document>) -> Result<IngestReport> {
        let mut guard = write(&self.backing);
        let report = match &mut *guard {
            None => return Err(closed()),
            Some(Backing::Own(index)) => index.add_documents(docs, None)?,
            Some(Backing::Engine(engine)) => engine.add_documents(docs, None)?,
        };
        Ok(report.into())
    }

    fn counts(&self) -> Result<(usize, usize)> {
        match &*read(&self.backing) {
            None => Err(closed()),
            Some(Backing::Own(i)) => Ok((i.document_count(), i.chunk_count())),
            Some(Backing::Engine(e)) => Ok(e.index_size()?),
        }
    }
}

#[uniffi::export]
impl Index {
    /// Opens the knowledge base in directory `path`, creating it if missing.
    ///
    /// `embedder` is an embedding model directory (`model.onnx` + `tokenizer.json`); none
    /// loads the default all-MiniLM-L6-v2 (`$TRIBUTE_HOME/models/all-MiniLM-L6-v2`). An
    /// existing index must be opened with the embedder it was built with.
    ///
    /// Throws `Model` when the embedder cannot be loaded and `KnowledgeBase` when the
    /// directory is not a usable index.
    #[uniffi::constructor(default(embedder = None))]
    pub fn open(path: String, embedder: Option<String>) -> Result<Arc<Self>> {
        guard(|| {
            let path = PathBuf::from(path);
            let embedder = load_embedder(embedder.as_deref().map(Path::new))?;
            let index =
                tribute::Index::open(&path, Some(embedder.clone()), IndexConfig::default())?;
            Ok(Arc::new(Index {
                path,
                embedder: Some(embedder),
                backing: RwLock::new(Some(Backing::Own(Box::new(index)))),
            }))
        })
    }

    /// Adds documents. `datanet` and `contributor` (an EVM address) apply to documents that
    /// name none. A document whose id exists with the same text is left unchanged; with
    /// other text it is replaced.
    ///
    /// Throws `KnowledgeBase` for a malformed document (nothing is ingested then).
    #[uniffi::method(default(datanet = None, contributor = None))]
    pub fn add(
        &self,
        documents: Vec<Document>,
        datanet: Option<String>,
        contributor: Option<String>,
    ) -> Result<IngestReport> {
        guard(|| {
            let c = self::contributor(contributor.as_deref())?;
            let docs = documents
                .into_iter()
                .enumerate()
                .map(|(i, d)| d.into_rust(i, datanet.as_deref(), c))
                .collect::<Result<Vec<_>>>()?;
            self.add_docs(docs)
        })
    }

    /// Adds the documents of files: `.jsonl` (one document per line, Tribute's format or
    /// BEIR's), `.txt` and `.md` (one document each); directories are searched for them.
    /// A malformed line is reported as `file:line` and nothing is ingested.
    #[uniffi::method(default(datanet = None, contributor = None))]
    pub fn add_files(
        &self,
        paths: Vec<String>,
        datanet: Option<String>,
        contributor: Option<String>,
    ) -> Result<IngestReport> {
        guard(|| {
            let mut options = LoadOptions::default();
            if let Some(d) = datanet {
                options.datanet = DatanetId::new(d);
            }
            if let Some(c) = self::contributor(contributor.as_deref())? {
                options.contributor = c;
            }
            let paths: Vec<PathBuf> = paths.into_iter().map(PathBuf::from).collect();
            let mut docs = Vec::new();
            for p in expand_paths(&paths)? {
                docs.extend(load_file(&p, &options)?);
            }
            self.add_docs(docs)
        })
    }

    /// Searches: the `k` best chunks for `query`, best first. `mode` defaults to hybrid;
    /// `datanets` keeps only those datanets.
    ///
    /// Through an engine the engine's retrieval mode and datanets apply: another `mode`
    /// or a `datanets` filter throws `Request`.
    #[uniffi::method(default(k = 5, mode = None, datanets = None))]
    pub fn search(
        &self,
        query: String,
        k: u32,
        mode: Option<SearchMode>,
        datanets: Option<Vec<String>>,
    ) -> Result<Vec<Hit>> {
        guard(|| {
            let mode: Option<tribute::Mode> = mode.map(Into::into);
            let hits = match &*read(&self.backing) {
                None => return Err(closed()),
                Some(Backing::Own(index)) => {
                    let mut req = index
                        .search(&query)
                        .k(size(k))
                        .mode(mode.unwrap_or_default());
                    if let Some(d) = &datanets {
                        req = req.datanets(d.iter().map(String::as_str));
                    }
                    req.execute()?
                }
                Some(Backing::Engine(engine)) => {
                    let configured = engine.config().retrieval.mode;
                    if mode.is_some_and(|m| m != configured) {
                        return Err(request(format!(
                            "this index is served by an engine that searches in {configured} mode; \
                             search without a mode (or open another directory)"
                        )));
                    }
                    if datanets.is_some() {
                        return Err(request(
                            "this index is served by an engine: its configured datanets apply",
                        ));
                    }
                    engine.search(&query, size(k))?
                }
            };
            Ok(hits.iter().map(Hit::from).collect())
        })
    }

    /// Deletes a document; returns whether it existed. Not available through an engine.
    pub fn delete(&self, doc_id: String) -> Result<bool> {
        guard(|| match &mut *write(&self.backing) {
            None => Err(closed()),
            Some(Backing::Own(index)) => Ok(index.delete(&doc_id.as_str().into())?),
            Some(Backing::Engine(_)) => Err(request(
                "deleting documents through an engine is not supported yet",
            )),
        })
    }

    /// The index directory.
    pub fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// Whether the handle is closed.
    pub fn is_closed(&self) -> bool {
        read(&self.backing).is_none()
    }

    /// Documents in the index.
    pub fn document_count(&self) -> Result<u32> {
        guard(|| Ok(count(self.counts()?.0)))
    }

    /// Chunks in the index.
    pub fn chunk_count(&self) -> Result<u32> {
        guard(|| Ok(count(self.counts()?.1)))
    }

    /// Releases the directory now (later calls throw `KnowledgeBase`). An index serving
    /// an engine stays open for that engine.
    #[uniffi::method(name = "release")]
    pub fn release_directory(&self) {
        self.release();
    }
}
