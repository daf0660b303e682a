//! BM25 over tantivy: tantivy stores the inverted index (English analyzer with stop
//! words and stemming) and we score its postings with configurable `k1`/`b`
//! (tantivy's own scorer fixes k1 = 1.2, b = 0.75).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tantivy::postings::Postings;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TERMINATED, TantivyDocument, Term,
};

use crate::error::{Error, Result};

const ANALYZER: &str = "tribute_en";

/// BM25 parameters, applied at query time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bm25Params {
    /// Term-frequency saturation.
    pub k1: f32,
    /// Length normalisation.
    pub b: f32,
}

impl Default for Bm25Params {
    /// k1 = 0.9, b = 0.4: Anserini's defaults, tuned across TREC and BEIR collections.
    fn default() -> Self {
        Self { k1: 0.9, b: 0.4 }
    }
}

fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder
            .filter(stop)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

pub(crate) struct Bm25Index {
    index: Index,
    reader: IndexReader,
    writer: Option<IndexWriter>,
    slot: Field,
    doc_id: Field,
    body: Field,
}

/// One BM25 result: the chunk's slot and its score.
pub(crate) type Scored = (u32, f32);

impl Bm25Index {
    pub(crate) fn open_or_create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let mut schema = Schema::builder();
        let slot = schema.add_u64_field("slot", FAST | INDEXED);
        let doc_id = schema.add_text_field("doc_id", STRING);
        let body_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let body = schema.add_text_field("body", body_options);
        let schema = schema.build();
        let mmap = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| Error::Tantivy(tantivy::TantivyError::from(e)))?;
        let index = Index::open_or_create(mmap, schema)?;
        index.tokenizers().register(ANALYZER, analyzer());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            reader,
            writer: None,
            slot,
            doc_id,
            body,
        })
    }

    /// The payload of the last commit (our commit record), if any.
    pub(crate) fn commit_payload(&self) -> Result<Option<String>> {
        Ok(self.index.load_metas()?.payload)
    }

    fn writer(&mut self) -> Result<&mut IndexWriter> {
        if self.writer.is_none() {
            self.writer = Some(self.index.writer_with_num_threads(1, 64 << 20)?);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| Error::InvalidConfig("tantivy writer unavailable".into()))
    }

    pub(crate) fn add(&mut self, slot: u32, doc_id: &str, body: &str) -> Result<()> {
        let (f_slot, f_doc, f_body) = (self.slot, self.doc_id, self.body);
        let mut doc = TantivyDocument::default();
        doc.add_u64(f_slot, u64::from(slot));
        doc.add_text(f_doc, doc_id);
        doc.add_text(f_body, body);
        self.writer()?.add_document(doc)?;
        Ok(())
    }

    pub(crate) fn delete_doc(&mut self, doc_id: &str) -> Result<()> {
        let term = Term::from_field_text(self.doc_id, doc_id);
        self.writer()?.delete_term(term);
        Ok(())
    }

    /// Commits everything added or deleted, atomically with `payload`.
    pub(crate) fn commit(&mut self, payload: &str) -> Result<()> {
        let writer = self.writer()?;
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(payload);
        prepared.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    /// Drops uncommitted changes.
    pub(crate) fn rollback(&mut self) -> Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.rollback()?;
        }
        Ok(())
    }

    /// Merges segments and removes deleted documents for good.
    pub(crate) fn optimize(&mut self) -> Result<()> {
        let ids = self.index.searchable_segment_ids()?;
        if ids.len() > 1 {
            let writer = self.writer()?;
            writer.merge(&ids).wait()?;
        }
        let writer = self.writer()?;
        writer.garbage_collect_files().wait()?;
        Ok(())
    }

    /// The analyzed terms of a query, with their counts.
    pub(crate) fn query_terms(&self, query: &str) -> Vec<(String, u32)> {
        let mut analyzer = self
            .index
            .tokenizers()
            .get(ANALYZER)
            .unwrap_or_else(analyzer);
        let mut stream = analyzer.token_stream(query);
        let mut counts: Vec<(String, u32)> = Vec::new();
        while stream.advance() {
            let t = &stream.token().text;
            match counts.iter_mut().find(|(s, _)| s == t) {
                Some((_, c)) => *c += 1,
                None => counts.push((t.clone(), 1)),
            }
        }
        counts
    }

    /// Top `k` chunks by BM25, skipping slots that `keep` rejects.
    pub(crate) fn search(
        &self,
        query: &str,
        k: usize,
        params: Bm25Params,
        keep: &dyn Fn(u32) -> bool,
    ) -> Result<Vec<Scored>> {
        let terms = self.query_terms(query);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let n_docs = searcher.num_docs() as f32;
        if n_docs == 0.0 {
            return Ok(Vec::new());
        }
        let mut total_tokens = 0u64;
        for seg in searcher.segment_readers() {
            total_tokens += seg.inverted_index(self.body)?.total_num_tokens();
        }
        let max_docs: f32 = searcher
            .segment_readers()
            .iter()
            .map(|s| s.max_doc() as f32)
            .sum();
        let avgdl = (total_tokens as f32 / max_docs.max(1.0)).max(1.0);
        let weights: Vec<(Term, f32)> = terms
            .iter()
            .map(|(t, qtf)| {
                let term = Term::from_field_text(self.body, t);
                let df = searcher.doc_freq(&term).unwrap_or(0) as f32;
                let idf = (1.0 + (n_docs - df + 0.5) / (df + 0.5)).ln();
                (term, idf * *qtf as f32)
            })
            .filter(|(_, w)| *w > 0.0)
            .collect();

        let mut top: Vec<Scored> = Vec::new();
        let (k1, b) = (params.k1, params.b);
        for seg in searcher.segment_readers() {
            let inverted = seg.inverted_index(self.body)?;
            let norms = seg.get_fieldnorms_reader(self.body)?;
            let slots = seg.fast_fields().u64("slot")?;
            let alive = seg.alive_bitset();
            // Dense accumulator plus the list of touched docs: cheaper than a map.
            let mut acc = vec![0f32; seg.max_doc() as usize];
            let mut touched: Vec<u32> = Vec::new();
            for (term, weight) in &weights {
                let Some(mut postings) = inverted
                    .read_postings(term, IndexRecordOption::WithFreqs)
                    .map_err(|e| Error::Tantivy(e.into()))?
                else {
                    continue;
                };
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    if alive.is_none_or(|a| a.is_alive(doc)) {
                        let tf = postings.term_freq() as f32;
                        let dl = norms.fieldnorm(doc) as f32;
                        let s = weight * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * dl / avgdl));
                        let cell = &mut acc[doc as usize];
                        if *cell == 0.0 {
                            touched.push(doc);
                        }
                        *cell += s;
                    }
                    doc = postings.advance();
                }
            }
            for doc in touched {
                let score = acc[doc as usize];
                let Some(slot) = slots.first(doc) else {
                    continue;
                };
                let slot = slot as u32;
                if keep(slot) {
                    top.push((slot, score));
                }
            }
        }
        sort_top(&mut top, k);
        Ok(top)
    }
}

impl Bm25Index {
    /// Live (not deleted) indexed chunks.
    pub(crate) fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}

/// Sorts by score descending (ties by slot, for determinism) and keeps `k`.
pub(crate) fn sort_top(v: &mut Vec<Scored>, k: usize) {
    let cmp = |a: &Scored, b: &Scored| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if v.len() > k {
        v.select_nth_unstable_by(k, cmp);
        v.truncate(k);
    }
    v.sort_unstable_by(cmp);
}
