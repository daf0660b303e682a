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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bm25::{Bm25Index, Bm25Params};
use crate::chunker::{ChunkerConfig, TokenCounter, WordCounter, chunk_text};
use crate::dense::{DenseIndex, HnswConfig, normalize};
use crate::document::Document;
use crate::embedder::Embedder;
use crate::error::{Error, Result};
use crate::fusion::{Fusion, Mode};
use crate::store::{ChunkLine, Op, OpLog, write_atomic};
use crate::types::{ChunkId, ContentHash, Contributor, DatanetId, DocId};

const FORMAT_VERSION: u32 = 1;

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
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            chunker: ChunkerConfig::default(),
            hnsw: HnswConfig::default(),
            near_duplicate_threshold: Some(0.95),
            commit_every: 4096,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct EmbedderMeta {
    model_id: String,
    dim: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    embedder: Option<EmbedderMeta>,
    chunker: ChunkerConfig,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct CommitRecord {
    log_bytes: u64,
    vectors: usize,
}

/// Where credit for a duplicate document goes: the document that was there first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// The earlier document.
    pub doc_id: DocId,
    /// Its contributor, who is credited.
    pub contributor: Contributor,
    /// Its datanet.
    pub datanet: DatanetId,
}

/// A near-duplicate match: every chunk of the document resembles a chunk of `origin`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NearDuplicate {
    /// The earlier, similar document.
    pub origin: Origin,
    /// The lowest of the per-chunk best cosine similarities.
    pub cosine: f32,
}

/// A document as the index keeps it (the text lives in its chunks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentRecord {
    /// Document id.
    pub id: DocId,
    /// Title.
    pub title: String,
    /// Datanet.
    pub datanet: DatanetId,
    /// Contributor.
    pub contributor: Contributor,
    /// License, if given.
    pub license: Option<String>,
    /// Metadata, if given.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// keccak-256 of the text.
    pub content_hash: ContentHash,
    /// Number of chunks indexed for it (0 for an exact duplicate, which is not indexed again).
    pub chunks: u32,
    /// Set when the text is an exact copy of an earlier document: that document's
    /// contributor is the one to credit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<Origin>,
    /// Set when the text closely resembles an earlier document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_duplicate_of: Option<NearDuplicate>,
}

impl DocumentRecord {
    fn origin(&self) -> Origin {
        Origin {
            doc_id: self.id.clone(),
            contributor: self.contributor,
            datanet: self.datanet.clone(),
        }
    }

    /// Who should be credited for this text: the original author for a duplicate.
    pub fn credited_contributor(&self) -> Contributor {
        self.duplicate_of
            .as_ref()
            .map_or(self.contributor, |o| o.contributor)
    }
}

/// Progress of an ingest, reported after each embedded batch.
#[derive(Clone, Copy, Debug, Default)]
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

/// What an ingest did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestReport {
    /// New documents indexed.
    pub added: usize,
    /// Documents whose id existed with other text: the old version was replaced.
    pub replaced: usize,
    /// Documents whose id existed with the same text: nothing to do.
    pub unchanged: usize,
    /// Chunks indexed.
    pub chunks: usize,
    /// Exact duplicates (recorded, credited to the origin, not indexed again).
    pub duplicates: Vec<(DocId, Origin)>,
    /// Near-duplicates (indexed, and recorded with their origin).
    pub near_duplicates: Vec<(DocId, NearDuplicate)>,
    /// Wall-clock seconds, all of it.
    pub seconds: f64,
    /// Seconds spent embedding chunks.
    pub embed_seconds: f64,
}

struct DocEntry {
    record: DocumentRecord,
    first_slot: u32,
    alive: bool,
}

struct ChunkEntry {
    id: ChunkId,
    doc: u32,
    start: usize,
    end: usize,
    hash: ContentHash,
    text: String,
    alive: bool,
}

/// One retriever's view of a hit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrieverScore {
    /// The retriever's raw score (BM25 score, or cosine similarity).
    pub score: f32,
    /// 1-based rank in that retriever's list.
    pub rank: usize,
}

/// A search result: one chunk, with its provenance (reachable directly, `hit.doc_id`,
/// through `Deref`) and its scores. Serialises flat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The chunk and where it comes from.
    #[serde(flatten)]
    pub chunk: Chunk,
    /// Final score: the fused score in hybrid mode, else the retriever's score.
    pub score: f32,
    /// BM25 score and rank, when BM25 found the chunk.
    pub bm25: Option<RetrieverScore>,
    /// Dense score and rank, when the dense retriever found the chunk.
    pub dense: Option<RetrieverScore>,
}

impl std::ops::Deref for Hit {
    type Target = Chunk;
    fn deref(&self) -> &Chunk {
        &self.chunk
    }
}

/// A stored chunk with its provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Chunk id (`doc#n`).
    pub chunk_id: ChunkId,
    /// Document id.
    pub doc_id: DocId,
    /// Document title.
    pub title: String,
    /// Chunk text.
    pub text: String,
    /// UTF-8 byte offset of the chunk in the document text.
    pub start: usize,
    /// UTF-8 byte offset one past the chunk's end.
    pub end: usize,
    /// The document's contributor.
    pub contributor: Contributor,
    /// The document's datanet.
    pub datanet: DatanetId,
    /// keccak-256 of the chunk text.
    pub content_hash: ContentHash,
}

impl Chunk {
    /// The text the embedder saw for this chunk: title, newline, chunk text.
    pub fn embedded_text(&self) -> String {
        embed_text(&self.title, &self.text)
    }
}

/// A hybrid BM25 + dense index of attributed documents, stored in a directory.
pub struct Index {
    dir: PathBuf,
    config: IndexConfig,
    meta: Meta,
    embedder: Option<Arc<dyn Embedder>>,
    log: OpLog,
    bm25: Bm25Index,
    dense: Option<DenseIndex>,
    docs: Vec<DocEntry>,
    by_id: HashMap<DocId, u32>,
    by_hash: HashMap<ContentHash, u32>,
    chunks: Vec<ChunkEntry>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("documents", &self.by_id.len())
            .field("chunks", &self.chunk_count())
            .field("embedder", &self.meta.embedder)
            .finish()
    }
}

impl Index {
    /// Opens the index in `dir`, creating it if missing.
    ///
    /// A new index records the embedder it is created with (none: a BM25-only index).
    /// An existing index may be opened without an embedder for BM25 search; with one,
    /// it must be the embedder it was built with.
    pub fn open(
        dir: impl AsRef<Path>,
        embedder: Option<Arc<dyn Embedder>>,
        config: IndexConfig,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        config.chunker.validate()?;
        if let Some(t) = config.near_duplicate_threshold
            && !(-1.0..=1.0).contains(&t)
        {
            return Err(Error::InvalidConfig(format!(
                "near_duplicate_threshold must be in [-1, 1], got {t}"
            )));
        }
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let meta_path = dir.join("meta.json");
        let given = embedder.as_ref().map(|e| EmbedderMeta {
            model_id: e.model_id().to_owned(),
            dim: e.dim(),
        });
        let meta = if meta_path.exists() {
            let bytes = std::fs::read(&meta_path).map_err(Error::io(&meta_path))?;
            let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: dir.clone(),
                reason: format!("meta.json: {e}"),
            })?;
            if meta.format != FORMAT_VERSION {
                return Err(Error::Corrupt {
                    path: dir.clone(),
                    reason: format!(
                        "format version {} (this build reads {FORMAT_VERSION})",
                        meta.format
                    ),
                });
            }
            match (&meta.embedder, &given) {
                (Some(s), Some(g)) if s != g => {
                    return Err(Error::EmbedderMismatch {
                        path: dir.clone(),
                        stored: s.model_id.clone(),
                        stored_dim: s.dim,
                        given: g.model_id.clone(),
                        given_dim: g.dim,
                    });
                }
                (None, Some(g)) => {
                    return Err(Error::EmbedderMismatch {
                        path: dir.clone(),
                        stored: "none (BM25-only index)".into(),
                        stored_dim: 0,
                        given: g.model_id.clone(),
                        given_dim: g.dim,
                    });
                }
                _ => {}
            }
            meta
        } else {
            let meta = Meta {
                format: FORMAT_VERSION,
                embedder: given,
                chunker: config.chunker,
            };
            let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Io {
                path: meta_path.clone(),
                source: e.into(),
            })?;
            write_atomic(&meta_path, &bytes)?;
            meta
        };

        let bm25 = Bm25Index::open_or_create(&dir.join("tantivy"))?;
        let commit: CommitRecord = match bm25.commit_payload()? {
            Some(p) if !p.is_empty() => serde_json::from_str(&p).map_err(|e| Error::Corrupt {
                path: dir.clone(),
                reason: format!("commit record: {e}"),
            })?,
            _ => CommitRecord::default(),
        };
        let (log, ops) = OpLog::open(&dir.join("log.jsonl"), commit.log_bytes)?;
        let dense = match &meta.embedder {
            Some(e) => Some(DenseIndex::open(
                &dir.join("dense"),
                e.dim,
                commit.vectors,
                config.hnsw,
            )?),
            None => None,
        };
        let mut index = Self {
            dir,
            config,
            meta,
            embedder,
            log,
            bm25,
            dense,
            docs: Vec::new(),
            by_id: HashMap::new(),
            by_hash: HashMap::new(),
            chunks: Vec::new(),
        };
        for op in ops {
            index.apply(op)?;
        }
        if let Some(d) = &index.dense
            && d.rows() != index.chunks.len()
        {
            return Err(Error::Corrupt {
                path: index.dir.clone(),
                reason: format!("{} vectors for {} chunks", d.rows(), index.chunks.len()),
            });
        }
        Ok(index)
    }

    fn apply(&mut self, op: Op) -> Result<()> {
        match op {
            Op::Doc(record) => {
                let i = self.docs.len() as u32;
                if record.duplicate_of.is_none() {
                    self.by_hash.entry(record.content_hash).or_insert(i);
                }
                self.by_id.insert(record.id.clone(), i);
                self.docs.push(DocEntry {
                    record,
                    first_slot: self.chunks.len() as u32,
                    alive: true,
                });
            }
            Op::Chunk(c) => {
                let doc = *self.by_id.get(&c.doc).ok_or_else(|| Error::Corrupt {
                    path: self.dir.clone(),
                    reason: format!("chunk {} of unknown document", c.id),
                })?;
                self.chunks.push(ChunkEntry {
                    id: c.id,
                    doc,
                    start: c.start,
                    end: c.end,
                    hash: c.hash,
                    text: c.text,
                    alive: true,
                });
            }
            Op::Delete { doc } => {
                if let Some(i) = self.by_id.remove(&doc) {
                    let entry = &mut self.docs[i as usize];
                    entry.alive = false;
                    let (first, n) = (entry.first_slot as usize, entry.record.chunks as usize);
                    let hash = entry.record.content_hash;
                    for c in &mut self.chunks[first..first + n] {
                        c.alive = false;
                    }
                    if self.by_hash.get(&hash) == Some(&i) {
                        self.by_hash.remove(&hash);
                    }
                }
            }
        }
        Ok(())
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The embedder, if the index was opened with one.
    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref()
    }

    /// Live documents (exact duplicates included).
    pub fn document_count(&self) -> usize {
        self.by_id.len()
    }

    /// Live chunks.
    pub fn chunk_count(&self) -> usize {
        self.chunks.iter().filter(|c| c.alive).count()
    }

    /// A live document's record.
    pub fn document(&self, id: &DocId) -> Option<&DocumentRecord> {
        self.by_id.get(id).map(|&i| &self.docs[i as usize].record)
    }

    /// All live chunks, in ingest order.
    pub fn chunks(&self) -> impl Iterator<Item = Chunk> + '_ {
        self.chunks
            .iter()
            .filter(|c| c.alive)
            .map(|c| self.chunk_view(c))
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
        }
    }

    /// All live document records, in ingest order.
    pub fn documents(&self) -> impl Iterator<Item = &DocumentRecord> {
        self.docs.iter().filter(|d| d.alive).map(|d| &d.record)
    }

    fn counter(&self) -> &dyn TokenCounter {
        match &self.embedder {
            Some(e) => e.as_ref(),
            None => &WordCounter,
        }
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
        let started = Instant::now();
        let mut seen = HashSet::new();
        for d in &docs {
            d.validate()?;
            if !seen.insert(d.id.clone()) {
                return Err(Error::InvalidDocument {
                    id: d.id.to_string(),
                    message: "the same id appears twice in one batch".into(),
                });
            }
        }
        if self.meta.embedder.is_some() && self.embedder.is_none() {
            return Err(Error::NoEmbedder);
        }

        // Plan: what happens to each document, and the chunks of those indexed.
        let mut report = IngestReport::default();
        let mut batch_hashes: HashMap<ContentHash, Origin> = HashMap::new();
        let mut plan = Vec::new();
        for doc in docs {
            let hash = doc.content_hash();
            let existing = self
                .by_id
                .get(&doc.id)
                .map(|&i| &self.docs[i as usize].record);
            if existing.is_some_and(|r| r.content_hash == hash) {
                report.unchanged += 1;
                continue;
            }
            let replace = existing.is_some();
            let duplicate_of = self
                .by_hash
                .get(&hash)
                .map(|&i| &self.docs[i as usize].record)
                .filter(|r| r.id != doc.id)
                .map(DocumentRecord::origin)
                .or_else(|| batch_hashes.get(&hash).cloned());
            if duplicate_of.is_none() {
                batch_hashes.insert(
                    hash,
                    Origin {
                        doc_id: doc.id.clone(),
                        contributor: doc.contributor,
                        datanet: doc.datanet.clone(),
                    },
                );
            }
            let spans = if duplicate_of.is_some() {
                Vec::new()
            } else {
                // The chunker recorded at creation, so every document is cut the same way.
                let budget = self.meta.chunker.text_budget(&doc.title, self.counter());
                chunk_text(&doc.text, &budget, self.counter())
            };
            plan.push(Planned {
                doc,
                hash,
                replace,
                duplicate_of,
                spans,
            });
        }

        let mut p = IngestProgress {
            docs_total: plan.len() + report.unchanged,
            docs_done: report.unchanged,
            chunks_total: plan.iter().map(|x| x.spans.len()).sum(),
            chunks_done: 0,
        };
        if let Some(cb) = progress {
            cb(&p);
        }

        // Commit groups of about `commit_every` chunks.
        let mut groups: Vec<Vec<Planned>> = vec![Vec::new()];
        let mut in_group = 0;
        for item in plan {
            if in_group >= self.config.commit_every.max(1) {
                groups.push(Vec::new());
                in_group = 0;
            }
            in_group += item.spans.len();
            if let Some(g) = groups.last_mut() {
                g.push(item);
            }
        }

        for group in groups {
            if group.is_empty() {
                continue;
            }
            // 1. Embed (fallible, before touching any state).
            let mut vectors: Vec<Vec<f32>> = Vec::new();
            if let Some(embedder) = self.embedder.clone() {
                let embed_started = Instant::now();
                let texts: Vec<String> = group
                    .iter()
                    .flat_map(|item| {
                        item.spans
                            .iter()
                            .map(|s| embed_text(&item.doc.title, &item.doc.text[s.start..s.end]))
                    })
                    .collect();
                for batch in texts.chunks(256) {
                    let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                    vectors.extend(embedder.embed(&refs)?);
                    p.chunks_done += batch.len();
                    if let Some(cb) = progress {
                        cb(&p);
                    }
                }
                report.embed_seconds += embed_started.elapsed().as_secs_f64();
            } else {
                p.chunks_done += group.iter().map(|x| x.spans.len()).sum::<usize>();
            }

            // 2. Apply to log, vectors, BM25; then commit. On failure, reload from disk.
            let docs_in_group = group.len();
            let result = self.apply_group(group, vectors, &mut report);
            if let Err(e) = result {
                self.reload_after_failure();
                return Err(e);
            }
            p.docs_done += docs_in_group;
            if let Some(cb) = progress {
                cb(&p);
            }
        }

        // Snapshot the graph so a reopen searches exactly the graph searched now (rows
        // re-inserted at open would land in a differently shaped graph). Small indexes are
        // searched exactly, so their snapshot can wait.
        if let Some(d) = self.dense.as_mut()
            && d.unsnapshotted() > 0
            && (d.rows() > self.config.hnsw.exact_below || d.unsnapshotted() >= 256)
        {
            d.snapshot()?;
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    fn apply_group(
        &mut self,
        group: Vec<Planned>,
        vectors: Vec<Vec<f32>>,
        report: &mut IngestReport,
    ) -> Result<()> {
        let first_new_row = self.dense.as_ref().map_or(0, DenseIndex::rows);
        let mut vectors = vectors.into_iter();
        for item in group {
            let Planned {
                doc,
                hash,
                replace,
                duplicate_of,
                spans,
            } = item;
            if replace {
                self.log.append(&Op::Delete {
                    doc: doc.id.clone(),
                })?;
                self.bm25.delete_doc(doc.id.as_str())?;
                self.apply(Op::Delete {
                    doc: doc.id.clone(),
                })?;
                report.replaced += 1;
            } else {
                report.added += 1;
            }
            let doc_vectors: Vec<Vec<f32>> = match self.dense {
                Some(_) => vectors.by_ref().take(spans.len()).collect(),
                None => Vec::new(),
            };
            let near_duplicate_of = match self.config.near_duplicate_threshold {
                Some(t) if !doc_vectors.is_empty() => {
                    self.near_duplicate(&doc_vectors, t, first_new_row)
                }
                _ => None,
            };
            if let Some(o) = &duplicate_of {
                report.duplicates.push((doc.id.clone(), o.clone()));
            }
            if let Some(n) = &near_duplicate_of {
                report.near_duplicates.push((doc.id.clone(), n.clone()));
            }
            let record = DocumentRecord {
                id: doc.id.clone(),
                title: doc.title.clone(),
                datanet: doc.datanet.clone(),
                contributor: doc.contributor,
                license: doc.license.clone(),
                metadata: doc.metadata.clone(),
                content_hash: hash,
                chunks: spans.len() as u32,
                duplicate_of,
                near_duplicate_of,
            };
            let op = Op::Doc(record);
            self.log.append(&op)?;
            self.apply(op)?;
            for (n, span) in spans.iter().enumerate() {
                let text = &doc.text[span.start..span.end];
                let slot = self.chunks.len() as u32;
                let line = ChunkLine {
                    id: ChunkId::for_chunk(&doc.id, n),
                    doc: doc.id.clone(),
                    n: n as u32,
                    start: span.start,
                    end: span.end,
                    hash: ContentHash::of(text),
                    text: text.to_owned(),
                };
                self.bm25
                    .add(slot, doc.id.as_str(), &embed_text(&doc.title, text))?;
                let op = Op::Chunk(line);
                self.log.append(&op)?;
                self.apply(op)?;
            }
            if let Some(d) = self.dense.as_mut() {
                if doc_vectors.len() != spans.len() {
                    return Err(Error::Embedding(format!(
                        "{} vectors for {} chunks of {}",
                        doc_vectors.len(),
                        spans.len(),
                        doc.id
                    )));
                }
                d.append(&doc_vectors)?;
            }
            report.chunks += spans.len();
        }
        // Durable: vectors and log first, then the atomic tantivy commit that covers them.
        if let Some(d) = self.dense.as_mut() {
            d.index_pending(first_new_row);
            d.sync()?;
        }
        self.commit()
    }

    /// Syncs the log and commits tantivy with the commit record covering everything
    /// written so far (vectors must already be synced).
    fn commit(&mut self) -> Result<()> {
        self.log.sync()?;
        let record = CommitRecord {
            log_bytes: self.log.len(),
            vectors: self.dense.as_ref().map_or(0, DenseIndex::rows),
        };
        let payload = serde_json::to_string(&record).map_err(|e| Error::Io {
            path: self.dir.clone(),
            source: e.into(),
        })?;
        self.bm25.commit(&payload)
    }

    /// The earlier document every chunk of a new document closely matches, if any.
    fn near_duplicate(
        &self,
        vectors: &[Vec<f32>],
        threshold: f32,
        pending_from: usize,
    ) -> Option<NearDuplicate> {
        let dense = self.dense.as_ref()?;
        let mut origin: Option<u32> = None;
        let mut min_cos = f32::INFINITY;
        for v in vectors {
            let keep = |slot: u32| self.chunks.get(slot as usize).is_some_and(|c| c.alive);
            let mut best = dense.search(v, 1, &keep, None);
            // Rows of this commit group are not in the graph yet: scan them too.
            for slot in pending_from..dense.rows() {
                let s = slot as u32;
                if keep(s) {
                    let c = crate::dense::dot(v, dense.vector(s));
                    if best.first().is_none_or(|b| c > b.1) {
                        best = vec![(s, c)];
                    }
                }
            }
            let (slot, cos) = *best.first()?;
            if cos < threshold {
                return None;
            }
            let doc = self.chunks[slot as usize].doc;
            match origin {
                None => origin = Some(doc),
                Some(o) if o != doc => return None,
                _ => {}
            }
            min_cos = min_cos.min(cos);
        }
        let record = &self.docs[origin? as usize].record;
        Some(NearDuplicate {
            origin: record.origin(),
            cosine: min_cos,
        })
    }

    /// Deletes a document and its chunks. Returns whether it existed.
    pub fn delete(&mut self, id: &DocId) -> Result<bool> {
        if !self.by_id.contains_key(id) {
            return Ok(false);
        }
        let op = Op::Delete { doc: id.clone() };
        let result = (|| {
            self.log.append(&op)?;
            self.bm25.delete_doc(id.as_str())?;
            self.commit()
        })();
        if let Err(e) = result {
            self.reload_after_failure();
            return Err(e);
        }
        self.apply(op)?;
        Ok(true)
    }

    /// Checks that the document table, the BM25 index and the vectors agree.
    /// Returns [`Error::Corrupt`] naming the first disagreement.
    pub fn verify(&self) -> Result<()> {
        let corrupt = |reason: String| Error::Corrupt {
            path: self.dir.clone(),
            reason,
        };
        let alive = self.chunk_count() as u64;
        let indexed = self.bm25.num_docs();
        if indexed != alive {
            return Err(corrupt(format!(
                "BM25 holds {indexed} chunks, the log {alive}"
            )));
        }
        if let Some(d) = &self.dense
            && d.rows() != self.chunks.len()
        {
            return Err(corrupt(format!(
                "{} vectors for {} chunks",
                d.rows(),
                self.chunks.len()
            )));
        }
        for (i, d) in self.docs.iter().enumerate() {
            let range = d.first_slot as usize..d.first_slot as usize + d.record.chunks as usize;
            let Some(chunks) = self.chunks.get(range) else {
                return Err(corrupt(format!("document {} lacks chunks", d.record.id)));
            };
            if chunks
                .iter()
                .any(|c| c.doc as usize != i || c.alive != d.alive)
            {
                return Err(corrupt(format!(
                    "chunks of document {} disagree with it",
                    d.record.id
                )));
            }
        }
        Ok(())
    }

    /// Merges BM25 segments (dropping deleted chunks for good) and snapshots the graph,
    /// so the next open is as fast as it can be.
    pub fn optimize(&mut self) -> Result<()> {
        self.bm25.optimize()?;
        if let Some(d) = self.dense.as_mut() {
            d.snapshot()?;
        }
        Ok(())
    }

    fn reload_after_failure(&mut self) {
        let _ = self.bm25.rollback();
        match Index::open(&self.dir, self.embedder.clone(), self.config.clone()) {
            Ok(fresh) => *self = fresh,
            Err(e) => tracing::error!("index reload after a failed ingest failed: {e}"),
        }
    }
}

struct Planned {
    doc: Document,
    hash: ContentHash,
    replace: bool,
    duplicate_of: Option<Origin>,
    spans: Vec<crate::chunker::Span>,
}

/// The text a chunk is embedded as: its document's title, then the chunk.
pub(crate) fn embed_text(title: &str, chunk: &str) -> String {
    if title.trim().is_empty() {
        chunk.to_owned()
    } else {
        format!("{title}\n{chunk}")
    }
}

/// A search over an [`Index`], configured by chaining and run by [`SearchRequest::execute`].
///
/// ```no_run
/// # fn f(index: &tribute_index::Index) -> tribute_index::Result<()> {
/// use tribute_index::Mode;
/// let hits = index.search("how do LoRA adapters work?").k(5).mode(Mode::Hybrid).datanets(["docs"]).execute()?;
/// # Ok(()) }
/// ```
#[must_use = "a search does nothing until .execute()"]
pub struct SearchRequest<'a> {
    index: &'a Index,
    query: String,
    query_vector: Option<Vec<f32>>,
    k: usize,
    mode: Mode,
    fusion: Fusion,
    depth: usize,
    bm25: Bm25Params,
    datanets: Vec<DatanetId>,
    contributors: Vec<Contributor>,
    per_document: bool,
}

/// Candidates each retriever contributes to fusion, unless `k` is larger.
pub const DEFAULT_DEPTH: usize = 100;

impl Index {
    /// Starts a search for `query` (defaults: 10 hits, hybrid, the default fusion).
    pub fn search(&self, query: impl Into<String>) -> SearchRequest<'_> {
        SearchRequest {
            index: self,
            query: query.into(),
            query_vector: None,
            k: 10,
            mode: Mode::Hybrid,
            fusion: Fusion::default(),
            depth: DEFAULT_DEPTH,
            bm25: Bm25Params::default(),
            datanets: Vec::new(),
            contributors: Vec::new(),
            per_document: false,
        }
    }

    /// Embeds a query with the index's embedder.
    pub fn embed_query(&self, query: &str) -> Result<Vec<f32>> {
        let e = self.embedder.as_ref().ok_or(Error::NoEmbedder)?;
        e.embed(&[query])?
            .pop()
            .ok_or_else(|| Error::Embedding("no vector returned".into()))
    }
}

impl<'a> SearchRequest<'a> {
    /// Number of hits to return.
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }
    /// Which retrievers run.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// How hybrid results are fused.
    pub fn fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }
    /// How many candidates each retriever contributes to fusion.
    pub fn depth(mut self, depth: usize) -> Self {
        self.depth = depth;
        self
    }
    /// BM25 parameters.
    pub fn bm25_params(mut self, params: Bm25Params) -> Self {
        self.bm25 = params;
        self
    }
    /// Only chunks from these datanets (none given: all).
    pub fn datanets<I, D>(mut self, datanets: I) -> Self
    where
        I: IntoIterator<Item = D>,
        D: Into<DatanetId>,
    {
        self.datanets.extend(datanets.into_iter().map(Into::into));
        self
    }
    /// Only chunks from these contributors (none given: all).
    pub fn contributors(mut self, contributors: impl IntoIterator<Item = Contributor>) -> Self {
        self.contributors.extend(contributors);
        self
    }
    /// Uses this (already computed) query vector instead of embedding the query.
    pub fn query_vector(mut self, vector: Vec<f32>) -> Self {
        self.query_vector = Some(vector);
        self
    }
    /// At most one hit (the best chunk) per document.
    pub fn per_document(mut self, yes: bool) -> Self {
        self.per_document = yes;
        self
    }

    /// Runs the search.
    pub fn execute(self) -> Result<Vec<Hit>> {
        self.fusion.validate()?;
        let index = self.index;
        if self.k == 0 {
            return Ok(Vec::new());
        }
        let datanets: HashSet<&DatanetId> = self.datanets.iter().collect();
        let contributors: HashSet<&Contributor> = self.contributors.iter().collect();
        let keep = |slot: u32| -> bool {
            let Some(c) = index.chunks.get(slot as usize) else {
                return false;
            };
            if !c.alive {
                return false;
            }
            if datanets.is_empty() && contributors.is_empty() {
                return true;
            }
            let r = &index.docs[c.doc as usize].record;
            (datanets.is_empty() || datanets.contains(&r.datanet))
                && (contributors.is_empty() || contributors.contains(&r.contributor))
        };
        let filtered = !(datanets.is_empty() && contributors.is_empty());
        // Candidates per retriever: enough for fusion and for grouping by document.
        let mut depth = self.depth.max(self.k);
        if self.per_document {
            depth = depth.max(self.k * 3);
        }
        let n = if self.mode == Mode::Hybrid || self.per_document {
            depth
        } else {
            self.k
        };

        let bm25 = if self.mode != Mode::Dense {
            index.bm25.search(&self.query, n, self.bm25, &keep)?
        } else {
            Vec::new()
        };
        let dense = if self.mode != Mode::Bm25 {
            let d = index.dense.as_ref().ok_or(Error::NoEmbedder)?;
            let mut q = match self.query_vector {
                Some(v) => v,
                None => index.embed_query(&self.query)?,
            };
            if q.len() != index.meta.embedder.as_ref().map_or(0, |e| e.dim) {
                return Err(Error::Embedding(format!(
                    "query vector has {} dims, the index {}",
                    q.len(),
                    d.dim()
                )));
            }
            normalize(&mut q);
            let allowed = filtered.then(|| {
                index
                    .chunks
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| keep(*i as u32))
                    .count()
            });
            d.search(&q, n, &keep, allowed)
        } else {
            Vec::new()
        };

        let ranked: Vec<(u32, f32)> = match self.mode {
            Mode::Bm25 => bm25.clone(),
            Mode::Dense => dense.clone(),
            Mode::Hybrid => self.fusion.fuse(&bm25, &dense),
        };
        let rank_of = |list: &[(u32, f32)]| -> HashMap<u32, RetrieverScore> {
            list.iter()
                .enumerate()
                .map(|(i, (s, score))| {
                    (
                        *s,
                        RetrieverScore {
                            score: *score,
                            rank: i + 1,
                        },
                    )
                })
                .collect()
        };
        let (bm25_ranks, dense_ranks) = (rank_of(&bm25), rank_of(&dense));
        let mut seen_docs = HashSet::new();
        let mut hits = Vec::with_capacity(self.k);
        for (slot, score) in ranked {
            let c = &index.chunks[slot as usize];
            if self.per_document && !seen_docs.insert(c.doc) {
                continue;
            }
            hits.push(Hit {
                chunk: index.chunk_view(c),
                score,
                bm25: bm25_ranks.get(&slot).copied(),
                dense: dense_ranks.get(&slot).copied(),
            });
            if hits.len() == self.k {
                break;
            }
        }
        Ok(hits)
    }
}
