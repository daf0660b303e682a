//! Opening an index directory, replaying its log, and committing and checking what is on disk.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ChunkEntry, DocEntry, IndexConfig, LocalIndex};
use crate::bm25::Bm25Index;
use crate::chunker::ChunkerConfig;
use crate::dense::DenseIndex;
use crate::embedder::Embedder;
use crate::error::{Error, Result};
use crate::store::{Op, OpLog, write_atomic};

/// The `meta.json` format this build writes: 2 keeps each document's whole text in the log
/// (`text` lines). It reads 1 too, and adds no text lines to a format-1 index, which older
/// builds could not read.
const FORMAT_VERSION: u32 = 2;
/// The oldest format this build reads.
const OLDEST_FORMAT: u32 = 1;

/// The embedder an index was built with: a different one would give incomparable vectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct EmbedderMeta {
    model_id: String,
    pub(super) dim: usize,
}

/// `meta.json`: what is fixed when an index is created.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Meta {
    format: u32,
    pub(super) embedder: Option<EmbedderMeta>,
    pub(super) chunker: ChunkerConfig,
}

/// The payload of each tantivy commit: the prefix of the log and of the vectors it covers.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct CommitRecord {
    log_bytes: u64,
    vectors: usize,
}

impl Meta {
    /// Whether the log keeps each document's whole text (format 2 on).
    pub(super) fn keeps_texts(&self) -> bool {
        self.format >= 2
    }

    /// Reads `meta.json` and checks it against the embedder given (if any), or, for a new
    /// index, writes it recording that embedder and the chunker settings.
    fn load_or_create(
        dir: &Path,
        given: Option<EmbedderMeta>,
        chunker: ChunkerConfig,
    ) -> Result<Self> {
        let meta_path = dir.join("meta.json");
        if !meta_path.exists() {
            let meta = Meta {
                format: FORMAT_VERSION,
                embedder: given,
                chunker,
            };
            let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Io {
                path: meta_path.clone(),
                source: e.into(),
            })?;
            write_atomic(&meta_path, &bytes)?;
            return Ok(meta);
        }
        let bytes = std::fs::read(&meta_path).map_err(Error::io(&meta_path))?;
        let meta: Meta =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(dir, format!("meta.json: {e}")))?;
        if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&meta.format) {
            return Err(corrupt(
                dir,
                format!(
                    "format version {} (this build reads {OLDEST_FORMAT} to {FORMAT_VERSION})",
                    meta.format
                ),
            ));
        }
        // Opening without an embedder is fine (BM25 only); opening with another is not.
        if let Some(g) = &given
            && meta.embedder.as_ref() != Some(g)
        {
            let (stored, stored_dim) = match &meta.embedder {
                Some(s) => (s.model_id.clone(), s.dim),
                None => ("none (BM25-only index)".to_owned(), 0),
            };
            return Err(Error::EmbedderMismatch {
                path: dir.to_owned(),
                stored,
                stored_dim,
                given: g.model_id.clone(),
                given_dim: g.dim,
            });
        }
        Ok(meta)
    }
}

impl CommitRecord {
    /// The record of the last tantivy commit (an empty index: nothing committed yet).
    fn last(bm25: &Bm25Index, dir: &Path) -> Result<Self> {
        match bm25.commit_payload()? {
            Some(p) if !p.is_empty() => {
                serde_json::from_str(&p).map_err(|e| corrupt(dir, format!("commit record: {e}")))
            }
            _ => Ok(Self::default()),
        }
    }
}

fn corrupt(dir: &Path, reason: String) -> Error {
    Error::Corrupt {
        path: dir.to_owned(),
        reason,
    }
}

impl LocalIndex {
    /// Opens the local index in `dir`, creating it if missing (see [`super::Index::open`]).
    pub(crate) fn open(
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
        let given = embedder.as_ref().map(|e| EmbedderMeta {
            model_id: e.model_id().to_owned(),
            dim: e.dim(),
        });
        let meta = Meta::load_or_create(&dir, given, config.chunker)?;
        let bm25 = Bm25Index::open_or_create(&dir.join("tantivy"))?;
        let commit = CommitRecord::last(&bm25, &dir)?;
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
        index.check_vector_rows()?;
        Ok(index)
    }

    /// One vector row per chunk, dead ones included (rows are never removed).
    fn check_vector_rows(&self) -> Result<()> {
        match &self.dense {
            Some(d) if d.rows() != self.chunks.len() => Err(corrupt(
                &self.dir,
                format!("{} vectors for {} chunks", d.rows(), self.chunks.len()),
            )),
            _ => Ok(()),
        }
    }

    /// Appends an operation to the log and applies it to the tables in memory.
    pub(super) fn record(&mut self, op: Op) -> Result<()> {
        self.log.append(&op)?;
        self.apply(op)
    }

    pub(super) fn apply(&mut self, op: Op) -> Result<()> {
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
                    text: None,
                });
            }
            Op::Text { doc, text } => {
                let i = *self
                    .by_id
                    .get(&doc)
                    .ok_or_else(|| corrupt(&self.dir, format!("text of unknown document {doc}")))?;
                self.docs[i as usize].text = Some(text);
            }
            Op::Chunk(c) => {
                let doc = *self.by_id.get(&c.doc).ok_or_else(|| {
                    corrupt(&self.dir, format!("chunk {} of unknown document", c.id))
                })?;
                self.chunks.push(ChunkEntry {
                    id: c.id,
                    doc,
                    start: c.start,
                    end: c.end,
                    hash: c.hash,
                    text: c.text,
                    locator: c.locator,
                    alive: true,
                });
            }
            Op::Delete { doc } => {
                if let Some(i) = self.by_id.remove(&doc) {
                    let entry = &mut self.docs[i as usize];
                    entry.alive = false;
                    entry.text = None;
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

    /// Syncs the log and commits tantivy with the commit record covering everything
    /// written so far (vectors must already be synced).
    pub(super) fn commit(&mut self) -> Result<()> {
        self.log.sync()?;
        let record = CommitRecord {
            log_bytes: self.log.len(),
            vectors: self.dense.as_ref().map_or(0, DenseIndex::rows),
        };
        let payload = serde_json::to_string(&record).map_err(|e| Error::Io {
            path: self.dir.clone(),
            source: e.into(),
        })?;
        self.bm25.commit(&payload)?;
        if let Some(d) = self.dense.as_mut() {
            d.mark_committed();
        }
        Ok(())
    }

    /// Checks that the document table, the BM25 index and the vectors agree.
    /// Returns [`Error::Corrupt`] naming the first disagreement.
    pub(crate) fn verify(&self) -> Result<()> {
        let corrupt = |reason: String| corrupt(&self.dir, reason);
        let alive = self.chunk_count() as u64;
        let indexed = self.bm25.num_docs();
        if indexed != alive {
            return Err(corrupt(format!(
                "BM25 holds {indexed} chunks, the log {alive}"
            )));
        }
        self.check_vector_rows()?;
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
    pub(crate) fn optimize(&mut self) -> Result<()> {
        self.bm25.optimize()?;
        if let Some(d) = self.dense.as_mut() {
            d.snapshot()?;
        }
        Ok(())
    }

    pub(super) fn reload_after_failure(&mut self) {
        let _ = self.bm25.rollback();
        match LocalIndex::open(&self.dir, self.embedder.clone(), self.config.clone()) {
            Ok(fresh) => *self = fresh,
            Err(e) => tracing::error!("index reload after a failed ingest failed: {e}"),
        }
    }
}
