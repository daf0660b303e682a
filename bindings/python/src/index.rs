//! The knowledge base: [`Index`] (a handle on an index directory), its search [`Hit`]s,
//! and ingest progress and reports.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tribute::index::document::{LoadOptions, expand_paths, load_file};
use tribute::{
    Contributor, DatanetId, Document, IndexHandle, IngestReport as RustReport, SearchOptions,
};

use crate::error::{KnowledgeBaseError, py_err};
use crate::locator::Locator;
use crate::{lock, quoted};

/// A knowledge base: attributed documents in datanets, searched by BM25, dense vectors or
/// both (hybrid), stored in a directory.
///
/// Open one with `Index.open(path)`. Each index directory may be open once per process.
/// Passing the index to `tribute.Engine(index=kb, ...)` hands the directory to the engine:
/// the handle then searches and ingests through the engine (`search` with the engine's
/// retrieval mode). Use it as a context manager, or call `close()`, to release the
/// directory.
#[pyclass(module = "tribute", frozen)]
pub struct Index {
    pub(crate) handle: IndexHandle,
}

impl Index {
    fn add_docs(
        &self,
        py: Python<'_>,
        docs: Vec<Document>,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<IngestReport> {
        let callback_error: Mutex<Option<PyErr>> = Mutex::new(None);
        let report = py.detach(|| {
            let call = |p: &tribute::IngestProgress| {
                let Some(cb) = &callback else { return };
                if lock(&callback_error).is_some() {
                    return;
                }
                Python::attach(|py| {
                    if let Err(e) = cb.call1(py, (IngestProgress::from(p),)) {
                        *lock(&callback_error) = Some(e);
                    }
                });
            };
            let progress: Option<&dyn Fn(&tribute::IngestProgress)> =
                callback.as_ref().map(|_| &call as _);
            self.handle.add_documents(docs, progress).map_err(py_err)
        })?;
        // The documents are in; an exception of the callback is still the caller's to see.
        if let Some(e) = lock(&callback_error).take() {
            return Err(e);
        }
        Ok(IngestReport::from(report))
    }
}

/// Documents from a list of dicts.
fn documents(
    py: Python<'_>,
    docs: &Bound<'_, PyAny>,
    datanet: Option<&str>,
    contributor: Option<&str>,
) -> PyResult<Vec<Document>> {
    let contributor = contributor
        .map(|c| Contributor::parse(c).map_err(py_err))
        .transpose()?;
    if docs.is_instance_of::<PyString>() || docs.is_instance_of::<PyDict>() {
        return Err(KnowledgeBaseError::new_err(
            "documents must be a list of dicts (one dict per document)",
        ));
    }
    let json = PyModule::import(py, "json")?;
    let mut out = Vec::new();
    for (i, item) in docs.try_iter()?.enumerate() {
        out.push(document(&json, &item?, i, datanet, contributor)?);
    }
    Ok(out)
}

/// One document from a dict: `id` (or `_id`) and `text` required; `title`, `datanet`,
/// `contributor`, `license`, `metadata` optional; other keys go to the metadata, as in JSONL.
fn document(
    json: &Bound<'_, PyModule>,
    item: &Bound<'_, PyAny>,
    i: usize,
    datanet: Option<&str>,
    contributor: Option<Contributor>,
) -> PyResult<Document> {
    let bad = |m: String| KnowledgeBaseError::new_err(format!("document {i}: {m}"));
    let d = item.cast::<PyDict>().map_err(|_| {
        bad(format!(
            "expected a dict with \"id\" and \"text\", got {}",
            item.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })?;
    let string = |key: &str, v: &Bound<'_, PyAny>| -> PyResult<Option<String>> {
        if v.is_none() {
            return Ok(None);
        }
        v.extract::<String>()
            .map(Some)
            .map_err(|_| bad(format!("\"{key}\" must be a string")))
    };
    let mut id = None;
    let mut text = None;
    let mut doc_contributor = None;
    let (mut title, mut doc_datanet, mut license) = (None, None, None);
    let mut metadata = serde_json::Map::new();
    for (k, v) in d.iter() {
        let key: String = k
            .extract()
            .map_err(|_| bad("keys must be strings".into()))?;
        match key.as_str() {
            "id" | "_id" => {
                id = Some(if let Ok(n) = v.extract::<i64>() {
                    n.to_string()
                } else {
                    v.extract::<String>()
                        .map_err(|_| bad("\"id\" must be a string or an integer".into()))?
                })
            }
            "text" => text = string("text", &v)?,
            "title" => title = string("title", &v)?,
            "datanet" => doc_datanet = string("datanet", &v)?,
            "license" => license = string("license", &v)?,
            "contributor" => doc_contributor = string("contributor", &v)?,
            "metadata" => {
                if v.is_none() {
                    continue;
                }
                if !v.is_instance_of::<PyDict>() {
                    return Err(bad("\"metadata\" must be a dict".into()));
                }
                let value = to_json(json, &v).map_err(|m| bad(format!("\"metadata\": {m}")))?;
                if let serde_json::Value::Object(m) = value {
                    for (k, v) in m {
                        metadata.entry(k).or_insert(v);
                    }
                }
            }
            _ => {
                let value = to_json(json, &v).map_err(|m| bad(format!("\"{key}\": {m}")))?;
                metadata.entry(key).or_insert(value);
            }
        }
    }
    let id = id.ok_or_else(|| bad("missing \"id\"".into()))?;
    let bad = |m: String| KnowledgeBaseError::new_err(format!("document {id:?}: {m}"));
    let text = text.ok_or_else(|| bad("missing \"text\"".into()))?;
    let mut doc = Document::new(id.as_str(), text);
    if let Some(t) = title {
        doc = doc.with_title(t);
    }
    if let Some(d) = doc_datanet.as_deref().or(datanet) {
        doc = doc.with_datanet(d);
    }
    match doc_contributor {
        Some(c) => {
            doc = doc.with_contributor(Contributor::parse(&c).map_err(|e| bad(e.to_string()))?)
        }
        None => {
            if let Some(c) = contributor {
                doc = doc.with_contributor(c);
            }
        }
    }
    if let Some(l) = license {
        doc = doc.with_license(l);
    }
    doc.metadata = metadata;
    Ok(doc)
}

fn to_json(json: &Bound<'_, PyModule>, v: &Bound<'_, PyAny>) -> Result<serde_json::Value, String> {
    let text: String = json
        .call_method1("dumps", (v,))
        .and_then(|s| s.extract())
        .map_err(|e| format!("not JSON-serialisable ({e})"))?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// Files and directories from a path or a list of paths.
fn paths(obj: &Bound<'_, PyAny>) -> PyResult<Vec<PathBuf>> {
    if let Ok(p) = obj.extract::<PathBuf>() {
        return Ok(vec![p]);
    }
    obj.extract::<Vec<PathBuf>>()
        .map_err(|_| KnowledgeBaseError::new_err("paths must be a path or a list of paths"))
}

fn load_options(datanet: Option<&str>, contributor: Option<&str>) -> PyResult<LoadOptions> {
    let mut o = LoadOptions::default();
    if let Some(d) = datanet {
        o.datanet = DatanetId::new(d);
    }
    if let Some(c) = contributor {
        o.contributor = Contributor::parse(c).map_err(py_err)?;
    }
    Ok(o)
}

#[pymethods]
impl Index {
    /// Opens the knowledge base in directory `path`, creating it if missing; `path` may
    /// also be a `postgres://` URL (a knowledge base in PostgreSQL + pgvector).
    ///
    /// `embedder` is an embedding model directory (`model.onnx` + `tokenizer.json`); `None`
    /// loads the default all-MiniLM-L6-v2 (`$TRIBUTE_HOME/models/all-MiniLM-L6-v2`). An
    /// existing index must be opened with the embedder it was built with.
    ///
    /// Raises `ModelError` when the embedder cannot be loaded and `KnowledgeBaseError`
    /// when the directory is not a usable index.
    #[staticmethod]
    #[pyo3(signature = (path, embedder = None))]
    fn open(py: Python<'_>, path: PathBuf, embedder: Option<PathBuf>) -> PyResult<Self> {
        let handle = py
            .detach(|| IndexHandle::open(path, embedder.as_deref()))
            .map_err(py_err)?;
        Ok(Index { handle })
    }

    /// Adds documents: a list of dicts with `id` and `text`, and optionally `title`,
    /// `datanet`, `contributor` (an EVM address), `license` and `metadata` (other keys are
    /// kept as metadata). `datanet` and `contributor` apply to documents that name none.
    ///
    /// A document whose id exists with the same text is left unchanged; with other text it
    /// is replaced. `progress`, if given, is called with an `IngestProgress` after each
    /// embedded batch (from the ingesting thread); an exception it raises is re-raised
    /// once the ingest has finished. The GIL is released while documents are embedded.
    ///
    /// Raises `KnowledgeBaseError` for a malformed document (nothing is ingested then).
    #[pyo3(signature = (documents, *, datanet = None, contributor = None, progress = None))]
    fn add(
        &self,
        py: Python<'_>,
        documents: &Bound<'_, PyAny>,
        datanet: Option<&str>,
        contributor: Option<&str>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<IngestReport> {
        let docs = self::documents(py, documents, datanet, contributor)?;
        self.add_docs(py, docs, progress)
    }

    /// Adds the documents of files: `.jsonl` (one document per line, Tribute's format or
    /// BEIR's), `.txt` and `.md` (one document each); directories are searched for them.
    /// A malformed line is reported as `file:line` and nothing is ingested.
    #[pyo3(signature = (paths, *, datanet = None, contributor = None, progress = None))]
    fn add_files(
        &self,
        py: Python<'_>,
        paths: &Bound<'_, PyAny>,
        datanet: Option<&str>,
        contributor: Option<&str>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<IngestReport> {
        let paths = self::paths(paths)?;
        let options = load_options(datanet, contributor)?;
        let docs = py
            .detach(|| {
                let mut docs = Vec::new();
                for p in expand_paths(&paths)? {
                    docs.extend(load_file(&p, &options)?);
                }
                Ok::<_, tribute::index::Error>(docs)
            })
            .map_err(py_err)?;
        self.add_docs(py, docs, progress)
    }

    /// Makes the knowledge base match the folder `dir`: files new to it are added, files
    /// whose bytes changed are read again and replace their documents, files gone from
    /// the folder have their documents deleted. Document ids are paths inside the folder
    /// (`notes/a.md`; `data.jsonl#ID` for JSONL lines). Documents added another way are
    /// left alone. A file that cannot be parsed is listed in `failed` (its earlier version
    /// stays); unknown types, unreadable files and symlink loops in `skipped`. The GIL is
    /// released while files are read and embedded.
    ///
    /// Raises `KnowledgeBaseError` when `dir` is not a folder or the index cannot be
    /// written (every commit is whole: the next sync finishes an interrupted one).
    #[pyo3(signature = (dir, *, datanet = None, contributor = None))]
    fn sync(
        &self,
        py: Python<'_>,
        dir: PathBuf,
        datanet: Option<&str>,
        contributor: Option<&str>,
    ) -> PyResult<SyncReport> {
        let options = load_options(datanet, contributor)?;
        let report = py
            .detach(|| self.handle.sync(&dir, options, None))
            .map_err(py_err)?;
        Ok(SyncReport::from(report))
    }

    /// Searches: the `k` best chunks for `query`, best first. `mode` is `"hybrid"`
    /// (default), `"bm25"` or `"dense"`; `datanets` keeps only those datanets. The GIL is
    /// released during the search.
    ///
    /// Through an engine (after `Engine(index=kb)`) unset `mode` and `datanets` take the
    /// engine's configured ones.
    #[pyo3(signature = (query, k = 5, *, mode = None, datanets = None))]
    fn search(
        &self,
        py: Python<'_>,
        query: &str,
        k: usize,
        mode: Option<&str>,
        datanets: Option<Vec<String>>,
    ) -> PyResult<Vec<Hit>> {
        let mode = mode
            .map(|m| m.parse::<tribute::Mode>().map_err(py_err))
            .transpose()?;
        let options = SearchOptions {
            top_k: Some(k),
            mode,
            datanets,
        };
        let hits = py
            .detach(|| self.handle.search(query, &options))
            .map_err(py_err)?;
        Ok(hits.iter().map(Hit::from).collect())
    }

    /// The document with id `doc_id` as it was added, as a dict with the keys `add` takes
    /// (`id`, `text`, `title`, `datanet`, `contributor`, `license`, `metadata`), or None
    /// when there is none. The text is the whole text, byte for byte.
    ///
    /// Raises `KnowledgeBaseError` when the knowledge base does not keep whole texts: an
    /// index directory created by a build before index format 2, or a Postgres one.
    fn get<'py>(&self, py: Python<'py>, doc_id: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(doc) = py.detach(|| self.handle.document(doc_id)).map_err(py_err)? else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("id", doc.id.as_str())?;
        d.set_item("text", doc.text)?;
        d.set_item("title", doc.title)?;
        d.set_item("datanet", doc.datanet.as_str())?;
        d.set_item("contributor", doc.contributor.to_string())?;
        d.set_item("license", doc.license)?;
        d.set_item("metadata", crate::answer::json_to_py(py, &doc.metadata)?)?;
        Ok(Some(d))
    }

    /// Deletes a document and its chunks; returns whether it existed.
    fn delete(&self, py: Python<'_>, doc_id: &str) -> PyResult<bool> {
        py.detach(|| self.handle.delete(doc_id)).map_err(py_err)
    }

    /// The index directory.
    #[getter]
    fn path(&self) -> String {
        self.handle.path().display().to_string()
    }

    /// Whether the handle is closed.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        py.detach(|| self.handle.is_closed())
    }

    /// Documents in the index.
    #[getter]
    fn document_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.size(py)?.documents)
    }

    /// Chunks in the index.
    #[getter]
    fn chunk_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.size(py)?.chunks)
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.document_count(py)
    }

    /// Releases the directory. An index serving an engine stays open for that engine.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.handle.close());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let path = quoted(&self.handle.path().display().to_string());
        let state = py.detach(|| {
            let served = if self.handle.serves_engine() {
                ", served by an engine"
            } else {
                ""
            };
            match self.handle.size() {
                Ok(s) => format!("documents={}, chunks={}{served}", s.documents, s.chunks),
                Err(_) if self.handle.is_closed() => "closed".to_owned(),
                Err(_) => served.trim_start_matches(", ").to_owned(),
            }
        });
        format!("Index({path}, {state})")
    }
}

impl Index {
    fn size(&self, py: Python<'_>) -> PyResult<tribute::IndexSize> {
        py.detach(|| self.handle.size()).map_err(py_err)
    }
}

/// A search result: one chunk of a document, with its provenance and scores.
#[pyclass(module = "tribute", frozen, get_all)]
pub struct Hit {
    /// The chunk id (`doc#n`).
    pub chunk_id: String,
    /// The document id.
    pub doc_id: String,
    /// The document's title.
    pub title: String,
    /// The chunk's text.
    pub text: String,
    /// The final score (fused in hybrid mode, else the retriever's).
    pub score: f32,
    /// The contributor's address (EIP-55); the zero address when nobody was named.
    pub contributor: String,
    /// The datanet.
    pub datanet: String,
    /// keccak-256 of the chunk text (0x-hex).
    pub content_hash: String,
    /// UTF-8 byte offset of the chunk in the document text.
    pub start: usize,
    /// UTF-8 byte offset one past the chunk's end.
    pub end: usize,
    /// The BM25 score, when BM25 found the chunk.
    pub bm25_score: Option<f32>,
    /// The dense (cosine) score, when the dense retriever found the chunk.
    pub dense_score: Option<f32>,
    /// Where the chunk lies in its document (`None` for chunks indexed before locators
    /// were recorded).
    pub locator: Option<Locator>,
}

impl From<&tribute::Hit> for Hit {
    fn from(h: &tribute::Hit) -> Self {
        Hit {
            chunk_id: h.chunk_id.as_str().to_owned(),
            doc_id: h.doc_id.as_str().to_owned(),
            title: h.title.clone(),
            text: h.text.clone(),
            score: h.score,
            contributor: h.contributor.to_string(),
            datanet: h.datanet.as_str().to_owned(),
            content_hash: h.content_hash.as_b256().to_string(),
            start: h.start,
            end: h.end,
            bm25_score: h.bm25.map(|s| s.score),
            dense_score: h.dense.map(|s| s.score),
            locator: h.locator.as_ref().map(Locator::from),
        }
    }
}

#[pymethods]
impl Hit {
    fn __repr__(&self) -> String {
        let snippet: String = self.text.chars().take(40).collect();
        format!(
            "Hit(chunk_id={}, score={:.4}, contributor={}, datanet={}, text={})",
            quoted(&self.chunk_id),
            self.score,
            self.contributor,
            quoted(&self.datanet),
            quoted(&format!(
                "{snippet}{}",
                if snippet.len() < self.text.len() {
                    "…"
                } else {
                    ""
                }
            ))
        )
    }
}

/// Progress of an ingest, passed to the `progress` callback after each embedded batch.
#[pyclass(module = "tribute", frozen, get_all)]
pub struct IngestProgress {
    /// Documents processed.
    pub docs_done: usize,
    /// Documents in this call.
    pub docs_total: usize,
    /// Chunks embedded and indexed.
    pub chunks_done: usize,
    /// Chunks to index in this call.
    pub chunks_total: usize,
}

impl From<&tribute::IngestProgress> for IngestProgress {
    fn from(p: &tribute::IngestProgress) -> Self {
        IngestProgress {
            docs_done: p.docs_done,
            docs_total: p.docs_total,
            chunks_done: p.chunks_done,
            chunks_total: p.chunks_total,
        }
    }
}

#[pymethods]
impl IngestProgress {
    fn __repr__(&self) -> String {
        format!(
            "IngestProgress(docs={}/{}, chunks={}/{})",
            self.docs_done, self.docs_total, self.chunks_done, self.chunks_total
        )
    }
}

/// What an ingest did.
#[pyclass(module = "tribute", frozen, get_all)]
pub struct IngestReport {
    /// New documents indexed.
    pub added: usize,
    /// Documents whose id existed with other text (the old version was replaced).
    pub replaced: usize,
    /// Documents whose id existed with the same text (nothing done).
    pub unchanged: usize,
    /// Chunks indexed.
    pub chunks: usize,
    /// Exact duplicates: `(doc_id, id of the earlier document credited instead)`.
    pub duplicates: Vec<(String, String)>,
    /// Near-duplicates (indexed): `(doc_id, id of the similar earlier document, cosine)`.
    pub near_duplicates: Vec<(String, String, f32)>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Seconds spent embedding.
    pub embed_seconds: f64,
}

impl From<RustReport> for IngestReport {
    fn from(r: RustReport) -> Self {
        IngestReport {
            added: r.added,
            replaced: r.replaced,
            unchanged: r.unchanged,
            chunks: r.chunks,
            duplicates: r
                .duplicates
                .iter()
                .map(|(d, o)| (d.to_string(), o.doc_id.to_string()))
                .collect(),
            near_duplicates: r
                .near_duplicates
                .iter()
                .map(|(d, n)| (d.to_string(), n.origin.doc_id.to_string(), n.cosine))
                .collect(),
            seconds: r.seconds,
            embed_seconds: r.embed_seconds,
        }
    }
}

#[pymethods]
impl IngestReport {
    /// The counts as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("added", self.added)?;
        d.set_item("replaced", self.replaced)?;
        d.set_item("unchanged", self.unchanged)?;
        d.set_item("chunks", self.chunks)?;
        d.set_item("duplicates", self.duplicates.clone())?;
        d.set_item("near_duplicates", self.near_duplicates.clone())?;
        d.set_item("seconds", self.seconds)?;
        d.set_item("embed_seconds", self.embed_seconds)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "IngestReport(added={}, replaced={}, unchanged={}, chunks={}, duplicates={}, seconds={:.3})",
            self.added,
            self.replaced,
            self.unchanged,
            self.chunks,
            self.duplicates.len(),
            self.seconds
        )
    }
}

/// What `Index.sync` did, file by file (paths inside the folder, `/`-separated).
#[pyclass(module = "tribute", frozen, get_all)]
pub struct SyncReport {
    /// Files new to the knowledge base (their documents were added).
    pub added: Vec<String>,
    /// Files whose content changed (their documents were replaced).
    pub replaced: Vec<String>,
    /// Files gone from the folder (their documents were deleted).
    pub deleted: Vec<String>,
    /// Files whose documents were already up to date.
    pub unchanged: usize,
    /// Files that could not be loaded: `(path, reason)`.
    pub failed: Vec<(String, String)>,
    /// Entries left out (unknown types, unreadable files, symlink loops): `(path, reason)`.
    pub skipped: Vec<(String, String)>,
    /// Documents added or replaced.
    pub documents: usize,
    /// Chunks indexed.
    pub chunks: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl From<tribute::index::SyncReport> for SyncReport {
    fn from(r: tribute::index::SyncReport) -> Self {
        let pairs = |files: &[tribute::index::SkippedFile]| -> Vec<(String, String)> {
            files
                .iter()
                .map(|f| (f.path.display().to_string(), f.reason.clone()))
                .collect()
        };
        SyncReport {
            failed: pairs(&r.failed),
            skipped: pairs(&r.skipped),
            added: r.added,
            replaced: r.replaced,
            deleted: r.deleted,
            unchanged: r.unchanged,
            documents: r.documents,
            chunks: r.chunks,
            seconds: r.seconds,
        }
    }
}

#[pymethods]
impl SyncReport {
    /// The report as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("added", self.added.clone())?;
        d.set_item("replaced", self.replaced.clone())?;
        d.set_item("deleted", self.deleted.clone())?;
        d.set_item("unchanged", self.unchanged)?;
        d.set_item("failed", self.failed.clone())?;
        d.set_item("skipped", self.skipped.clone())?;
        d.set_item("documents", self.documents)?;
        d.set_item("chunks", self.chunks)?;
        d.set_item("seconds", self.seconds)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "SyncReport(added={}, replaced={}, deleted={}, unchanged={}, failed={}, skipped={}, chunks={})",
            self.added.len(),
            self.replaced.len(),
            self.deleted.len(),
            self.unchanged,
            self.failed.len(),
            self.skipped.len(),
            self.chunks
        )
    }
}
