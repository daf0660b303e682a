//! The knowledge base's records: documents in, hits and ingest reports out.

use crate::error::{Result, TributeError};
use crate::types::count;

/// How the knowledge base is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SearchMode {
    /// BM25 only.
    Bm25,
    /// Dense vectors only.
    Dense,
    /// Both, fused (the default).
    Hybrid,
}

impl From<SearchMode> for tribute::Mode {
    fn from(m: SearchMode) -> Self {
        match m {
            SearchMode::Bm25 => tribute::Mode::Bm25,
            SearchMode::Dense => tribute::Mode::Dense,
            SearchMode::Hybrid => tribute::Mode::Hybrid,
        }
    }
}

impl From<tribute::Mode> for SearchMode {
    fn from(m: tribute::Mode) -> Self {
        match m {
            tribute::Mode::Bm25 => SearchMode::Bm25,
            tribute::Mode::Dense => SearchMode::Dense,
            _ => SearchMode::Hybrid,
        }
    }
}

/// A document to add to the knowledge base.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Document {
    /// Its id (unique in the knowledge base; the same id with other text replaces it).
    pub id: String,
    /// Its text.
    pub text: String,
    /// Its title.
    #[uniffi(default = None)]
    pub title: Option<String>,
    /// Its datanet (else the `datanet` of the call, else `default`).
    #[uniffi(default = None)]
    pub datanet: Option<String>,
    /// Its contributor, an EVM address (else the `contributor` of the call).
    #[uniffi(default = None)]
    pub contributor: Option<String>,
    /// Its license.
    #[uniffi(default = None)]
    pub license: Option<String>,
    /// Metadata: a JSON object as text.
    #[uniffi(default = None)]
    pub metadata_json: Option<String>,
}

impl Document {
    /// The `tribute` document; `datanet` and `contributor` apply when it names none.
    pub(crate) fn into_rust(
        self,
        i: usize,
        datanet: Option<&str>,
        contributor: Option<tribute::Contributor>,
    ) -> Result<tribute::Document> {
        let bad = |m: String| TributeError::KnowledgeBase(format!("document {i}: {m}"));
        let mut doc = tribute::Document::new(self.id, self.text);
        if let Some(t) = self.title {
            doc = doc.with_title(t);
        }
        if let Some(d) = self.datanet.as_deref().or(datanet) {
            doc = doc.with_datanet(d);
        }
        match self.contributor {
            Some(c) => {
                doc = doc.with_contributor(
                    tribute::Contributor::parse(&c).map_err(|e| bad(e.to_string()))?,
                )
            }
            None => {
                if let Some(c) = contributor {
                    doc = doc.with_contributor(c);
                }
            }
        }
        if let Some(l) = self.license {
            doc = doc.with_license(l);
        }
        if let Some(m) = self.metadata_json {
            let value: serde_json::Value = serde_json::from_str(&m)
                .map_err(|e| bad(format!("metadata_json is not JSON: {e}")))?;
            match value {
                serde_json::Value::Object(map) => doc.metadata = map,
                _ => return Err(bad("metadata_json must be a JSON object".into())),
            }
        }
        Ok(doc)
    }
}

/// A search result: one chunk of a document, with its provenance and scores.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
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
    pub start: u64,
    /// UTF-8 byte offset one past the chunk's end.
    pub end: u64,
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
            start: h.start as u64,
            end: h.end as u64,
            bm25_score: h.bm25.map(|s| s.score),
            dense_score: h.dense.map(|s| s.score),
            locator: h.locator.as_ref().map(Locator::from),
        }
    }
}

/// Where a chunk lies in its document: its pages (paged formats such as PDF), the heading
/// path of its section (Markdown, HTML, DOCX) and its character span in the document's
/// extracted text.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Locator {
    /// The 1-based pages the chunk spans, in order; empty for formats without pages.
    pub pages: Vec<u32>,
    /// The headings above the chunk, outermost first; empty before the first heading and
    /// for formats without headings.
    pub headings: Vec<String>,
    /// The chunk's first character (Unicode scalar value, 0-based) in the document's text.
    pub char_start: u64,
    /// One past the chunk's last character.
    pub char_end: u64,
}

impl From<&tribute::Locator> for Locator {
    fn from(l: &tribute::Locator) -> Self {
        Locator {
            pages: l.pages.clone(),
            headings: l.headings.clone(),
            char_start: l.char_start as u64,
            char_end: l.char_end as u64,
        }
    }
}

/// A document recorded as a duplicate of an earlier one.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Duplicate {
    /// The new document.
    pub doc_id: String,
    /// The earlier document it duplicates (credited instead).
    pub original_id: String,
    /// Cosine similarity (1.0 for an exact duplicate).
    pub cosine: f32,
}

/// What an ingest did.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct IngestReport {
    /// New documents indexed.
    pub added: u32,
    /// Documents whose id existed with other text (the old version was replaced).
    pub replaced: u32,
    /// Documents whose id existed with the same text (nothing done).
    pub unchanged: u32,
    /// Chunks indexed.
    pub chunks: u32,
    /// Exact duplicates: recorded, credited to the earlier document, not indexed.
    pub duplicates: Vec<Duplicate>,
    /// Near-duplicates: indexed, and recorded with the similar earlier document.
    pub near_duplicates: Vec<Duplicate>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Seconds spent embedding.
    pub embed_seconds: f64,
}

impl From<tribute::IngestReport> for IngestReport {
    fn from(r: tribute::IngestReport) -> Self {
        IngestReport {
            added: count(r.added),
            replaced: count(r.replaced),
            unchanged: count(r.unchanged),
            chunks: count(r.chunks),
            duplicates: r
                .duplicates
                .iter()
                .map(|(d, o)| Duplicate {
                    doc_id: d.to_string(),
                    original_id: o.doc_id.to_string(),
                    cosine: 1.0,
                })
                .collect(),
            near_duplicates: r
                .near_duplicates
                .iter()
                .map(|(d, n)| Duplicate {
                    doc_id: d.to_string(),
                    original_id: n.origin.doc_id.to_string(),
                    cosine: n.cosine,
                })
                .collect(),
            seconds: r.seconds,
            embed_seconds: r.embed_seconds,
        }
    }
}

/// How far an ingest (`Index.add`, `Index.addFiles`) has come, reported to an
/// [`IngestListener`](crate::index::IngestListener) after each embedded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct IngestProgress {
    /// Documents processed.
    pub docs_done: u32,
    /// Documents in this call.
    pub docs_total: u32,
    /// Chunks embedded and indexed.
    pub chunks_done: u32,
    /// Chunks to index in this call.
    pub chunks_total: u32,
}

impl From<&tribute::IngestProgress> for IngestProgress {
    fn from(p: &tribute::IngestProgress) -> Self {
        IngestProgress {
            docs_done: count(p.docs_done),
            docs_total: count(p.docs_total),
            chunks_done: count(p.chunks_done),
            chunks_total: count(p.chunks_total),
        }
    }
}
