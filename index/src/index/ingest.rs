//! Adding and deleting documents: plan, embed, write, commit.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use super::{DocumentRecord, LocalIndex, NearDuplicate, Origin, embed_text};
use crate::chunker::Span;
use crate::dense::{DenseIndex, dot};
use crate::document::Document;
use crate::error::{Error, Result};
use crate::loaders::SkippedFile;
use crate::store::{ChunkLine, Op};
use crate::types::{ChunkId, ContentHash, DocId, Locator};

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
    /// Files a folder or glob ingest left out, with the reason (filled by whoever loaded
    /// the files, e.g. [`Index::ingest_paths`](super::Index::ingest_paths)).
    pub skipped: Vec<SkippedFile>,
}

/// What an ingest will do with one document, decided before anything is written.
struct Planned {
    doc: Document,
    hash: ContentHash,
    replace: bool,
    duplicate_of: Option<Origin>,
    spans: Vec<Span>,
    locators: Vec<Locator>,
}

impl LocalIndex {
    /// Adds documents. Each is validated first: one bad document means none is added.
    ///
    /// A document whose id exists with the same text is skipped; with other text it
    /// replaces the old version. A document whose text exactly matches another
    /// document's is recorded as its duplicate (credit goes to the first contributor)
    /// and not indexed again.
    pub(crate) fn add_documents(
        &mut self,
        docs: Vec<Document>,
        progress: Option<&dyn Fn(&IngestProgress)>,
    ) -> Result<IngestReport> {
        let started = Instant::now();
        let mut seen = HashSet::new();
        for d in &docs {
            d.validate()?;
            self.config.check_document_bytes(d)?;
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
                doc.chunk_spans(&budget, self.counter())
            };
            self.config.check_chunks(&doc, spans.len())?;
            let locators = doc.locate(&spans);
            plan.push(Planned {
                doc,
                hash,
                replace,
                duplicate_of,
                spans,
                locators,
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

        let groups =
            crate::commit_groups::commit_groups(plan, self.config.commit_every, |p| p.spans.len());

        for group in groups {
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

        // Snapshot the graph once it grew enough since the last one (each dump writes it
        // all; many small ingests into a big index must not each rewrite it). Closing the
        // index dumps the rest, so a reopen searches exactly the graph searched now.
        if let Some(d) = self.dense.as_mut()
            && d.snapshot_due()
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
                locators,
            } = item;
            if replace {
                self.record(Op::Delete {
                    doc: doc.id.clone(),
                })?;
                self.bm25.delete_doc(doc.id.as_str())?;
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
            self.record(Op::Doc(record))?;
            if self.meta.keeps_texts() {
                self.record(Op::Text {
                    doc: doc.id.clone(),
                    text: doc.text.clone(),
                })?;
            }
            for (n, (span, locator)) in spans.iter().zip(locators).enumerate() {
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
                    locator: Some(locator),
                };
                self.bm25
                    .add(slot, doc.id.as_str(), &embed_text(&doc.title, text))?;
                self.record(Op::Chunk(line))?;
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
                    let c = dot(v, dense.vector(s));
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
    pub(crate) fn delete(&mut self, id: &DocId) -> Result<bool> {
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
}
