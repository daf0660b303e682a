//! The knowledge base: [`Index`], a handle on an index directory.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tribute::index::document::{LoadOptions, expand_paths, load_file};
use tribute::{Contributor, DatanetId, IndexHandle, SearchOptions};

use crate::error::{Result, TributeError, guard, panic_message};
use crate::types::{Document, Hit, IngestProgress, IngestReport, SearchMode, count, size};

/// Receives an ingest's progress (`Index.add`, `Index.addFiles`): called after each
/// embedded batch, on the thread running the ingest.
///
/// An exception thrown by `onProgress` does not stop the ingest: the listener is not
/// called again, the documents are still added, and the call then throws `Internal`
/// naming the exception. Do not use the index from the listener: the ingest holds it.
#[uniffi::export(callback_interface)]
pub trait IngestListener: Send + Sync {
    /// Documents and chunks done so far, of this call's totals.
    fn on_progress(&self, progress: IngestProgress);
}

/// A knowledge base: attributed documents in datanets, searched by BM25, dense vectors or
/// both (hybrid), stored in a directory.
///
/// Open one with `Index.open(path)`. Each index directory may be open once per process.
/// Passing the index to the `Engine` constructor hands the directory to the engine: the
/// handle then searches, ingests and deletes through the engine (searches default to the
/// engine's retrieval mode and datanets). `release()` releases the directory (Kotlin's `close()`/`use {}` and dropping the
/// last Swift reference also free the handle).
#[derive(Debug, uniffi::Object)]
pub struct Index {
    pub(crate) handle: IndexHandle,
}

/// The [`TributeError::Internal`] for a failed [`IngestListener`]: the first line of the
/// foreign exception (uniffi's panic quotes it with its stack trace:
/// `Callback interface failure: UnexpectedUniFFICallbackError(reason: "…\n\tat …")`).
fn listener_error(payload: &(dyn std::any::Any + Send)) -> TributeError {
    let what = panic_message(payload);
    let what = what
        .strip_prefix("Callback interface failure: ")
        .unwrap_or(&what);
    let what = what
        .strip_prefix("UnexpectedUniFFICallbackError(reason: \"")
        .unwrap_or(what);
    let end = [what.find('\n'), what.find("\\n"), what.find("\")")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(what.len());
    let first = what[..end].replace("\\\"", "\"");
    TributeError::Internal(format!("the ingest listener failed: {}", first.trim()))
}

fn contributor(c: Option<&str>) -> Result<Option<Contributor>> {
    c.map(|c| Contributor::parse(c).map_err(TributeError::from))
        .transpose()
}

impl Index {
    /// Adds documents, reporting to `listener`. A listener that fails (a foreign exception
    /// surfaces as a panic of uniffi's callback code, caught here) is not called again; its
    /// failure is returned once the ingest has finished.
    fn add_docs(
        &self,
        docs: Vec<tribute::Document>,
        listener: Option<&dyn IngestListener>,
    ) -> Result<IngestReport> {
        let failed: Mutex<Option<TributeError>> = Mutex::new(None);
        let call = |p: &tribute::IngestProgress| {
            let Some(listener) = listener else { return };
            let mut failed = failed.lock().unwrap_or_else(|p| p.into_inner());
            if failed.is_none() {
                let progress = IngestProgress::from(p);
                let called = catch_unwind(AssertUnwindSafe(|| listener.on_progress(progress)));
                if let Err(payload) = called {
                    *failed = Some(listener_error(payload.as_ref()));
                }
            }
        };
        let progress: Option<&dyn Fn(&tribute::IngestProgress)> = listener.map(|_| &call as _);
        let report = self.handle.add_documents(docs, progress)?;
        // The documents are in; the listener's failure is still the caller's to see.
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(report.into()),
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
            let handle = IndexHandle::open(path, embedder.as_deref().map(Path::new))?;
            Ok(Arc::new(Index { handle }))
        })
    }

    /// Adds documents. `datanet` and `contributor` (an EVM address) apply to documents that
    /// name none. A document whose id exists with the same text is left unchanged; with
    /// other text it is replaced.
    ///
    /// `listener`, if given, gets the progress after each embedded batch (see
    /// [`IngestListener`] for what an exception it throws does).
    ///
    /// Throws `KnowledgeBase` for a malformed document (nothing is ingested then).
    #[uniffi::method(default(datanet = None, contributor = None, listener = None))]
    pub fn add(
        &self,
        documents: Vec<Document>,
        datanet: Option<String>,
        contributor: Option<String>,
        listener: Option<Box<dyn IngestListener>>,
    ) -> Result<IngestReport> {
        guard(|| {
            let c = self::contributor(contributor.as_deref())?;
            let docs = documents
                .into_iter()
                .enumerate()
                .map(|(i, d)| d.into_rust(i, datanet.as_deref(), c))
                .collect::<Result<Vec<_>>>()?;
            self.add_docs(docs, listener.as_deref())
        })
    }

    /// Adds the documents of files: `.jsonl` (one document per line, Tribute's format or
    /// BEIR's), `.txt` and `.md` (one document each); directories are searched for them.
    /// A malformed line is reported as `file:line` and nothing is ingested. `listener` as
    /// in `add`.
    #[uniffi::method(default(datanet = None, contributor = None, listener = None))]
    pub fn add_files(
        &self,
        paths: Vec<String>,
        datanet: Option<String>,
        contributor: Option<String>,
        listener: Option<Box<dyn IngestListener>>,
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
            self.add_docs(docs, listener.as_deref())
        })
    }

    /// Searches: the `k` best chunks for `query`, best first. `mode` defaults to hybrid;
    /// `datanets` keeps only those datanets.
    ///
    /// Through an engine, unset `mode` and `datanets` take the engine's configured ones.
    #[uniffi::method(default(k = 5, mode = None, datanets = None))]
    pub fn search(
        &self,
        query: String,
        k: u32,
        mode: Option<SearchMode>,
        datanets: Option<Vec<String>>,
    ) -> Result<Vec<Hit>> {
        guard(|| {
            let options = SearchOptions {
                top_k: Some(size(k)),
                mode: mode.map(Into::into),
                datanets,
            };
            let hits = self.handle.search(&query, &options)?;
            Ok(hits.iter().map(Hit::from).collect())
        })
    }

    /// Deletes a document and its chunks; returns whether it existed. Receipts that cited
    /// it keep their content hashes.
    pub fn delete(&self, doc_id: String) -> Result<bool> {
        guard(|| Ok(self.handle.delete(&doc_id)?))
    }

    /// The index directory.
    pub fn path(&self) -> String {
        self.handle.path().display().to_string()
    }

    /// Whether the handle is closed.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Documents in the index.
    pub fn document_count(&self) -> Result<u32> {
        guard(|| Ok(count(self.handle.size()?.documents)))
    }

    /// Chunks in the index.
    pub fn chunk_count(&self) -> Result<u32> {
        guard(|| Ok(count(self.handle.size()?.chunks)))
    }

    /// Releases the directory now (later calls throw `KnowledgeBase`). An index serving
    /// an engine stays open for that engine.
    #[uniffi::method(name = "release")]
    pub fn release_directory(&self) {
        self.handle.close();
    }
}
