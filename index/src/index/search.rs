//! Searching an index: BM25, dense or both fused, with filters.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Chunk, Index, LocalIndex};
use crate::backend::SearchSpec;
use crate::bm25::Bm25Params;
use crate::dense::normalize;
use crate::error::{Error, Result};
use crate::fusion::{Fusion, Mode};
use crate::types::{Contributor, DatanetId};

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
    ///
    /// An empty or whitespace query is [`Error::EmptyQuery`]. A query longer than the
    /// model's window is embedded from its first tokens only; a `WARN` tracing event
    /// (target `tribute_index::query`) says so.
    pub fn embed_query(&self, query: &str) -> Result<Vec<f32>> {
        if query.trim().is_empty() {
            return Err(Error::EmptyQuery);
        }
        let e = self.embedder.as_ref().ok_or(Error::NoEmbedder)?;
        // A token covers at least one byte: only a query longer than the window in bytes
        // can be cut, so most never pay for counting.
        if let Some(window) = e.max_text_tokens().filter(|&w| query.len() > w) {
            let tokens = e.count_tokens(query);
            if tokens > window {
                tracing::warn!(
                    target: "tribute_index::query",
                    tokens,
                    window,
                    "query truncated: the embedding model reads its first {window} of {tokens} tokens (BM25 reads all of it)"
                );
            }
        }
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
    ///
    /// An empty or whitespace query is [`Error::EmptyQuery`] (unless a dense search is
    /// given its vector with [`SearchRequest::query_vector`]).
    pub fn execute(self) -> Result<Vec<Hit>> {
        self.fusion.validate()?;
        if self.query.trim().is_empty() && (self.mode != Mode::Dense || self.query_vector.is_none())
        {
            return Err(Error::EmptyQuery);
        }
        if self.k == 0 {
            return Ok(Vec::new());
        }
        let vector = match (self.mode, self.query_vector) {
            (Mode::Bm25, _) => None,
            (_, Some(v)) => Some(v),
            (_, None) => Some(self.index.embed_query(&self.query)?),
        };
        let vector = vector.map(|mut v| {
            normalize(&mut v);
            v
        });
        self.index.backend.search(&SearchSpec {
            query: &self.query,
            vector: vector.as_deref(),
            k: self.k,
            mode: self.mode,
            fusion: self.fusion,
            depth: self.depth,
            bm25: self.bm25,
            datanets: &self.datanets,
            contributors: &self.contributors,
            per_document: self.per_document,
        })
    }
}

impl LocalIndex {
    /// Runs a search over the local tables (the [`crate::Backend`] entry point).
    pub(crate) fn search_local(&self, spec: &SearchSpec<'_>) -> Result<Vec<Hit>> {
        let index = self;
        let datanets: HashSet<&DatanetId> = spec.datanets.iter().collect();
        let contributors: HashSet<&Contributor> = spec.contributors.iter().collect();
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
        let n = spec.candidates();

        let bm25 = if spec.mode != Mode::Dense {
            index.bm25.search(spec.query, n, spec.bm25, &keep)?
        } else {
            Vec::new()
        };
        let dense = match (spec.mode, spec.vector) {
            (Mode::Bm25, _) => Vec::new(),
            (_, None) => return Err(Error::NoEmbedder),
            (_, Some(q)) => {
                let d = index.dense.as_ref().ok_or(Error::NoEmbedder)?;
                if q.len() != index.meta.embedder.as_ref().map_or(0, |e| e.dim) {
                    return Err(Error::Embedding(format!(
                        "query vector has {} dims, the index {}",
                        q.len(),
                        d.dim()
                    )));
                }
                let allowed = filtered.then(|| {
                    index
                        .chunks
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| keep(*i as u32))
                        .count()
                });
                d.search(q, n, &keep, allowed)
            }
        };

        let ranked: Vec<(u32, f32)> = match spec.mode {
            Mode::Bm25 => bm25.clone(),
            Mode::Dense => dense.clone(),
            Mode::Hybrid => spec.fusion.fuse(&bm25, &dense),
        };
        let (bm25_ranks, dense_ranks) = (rank_of(&bm25), rank_of(&dense));
        let mut seen_docs = HashSet::new();
        let mut hits = Vec::with_capacity(spec.k);
        for (slot, score) in ranked {
            let c = &index.chunks[slot as usize];
            if spec.per_document && !seen_docs.insert(c.doc) {
                continue;
            }
            hits.push(Hit {
                chunk: index.chunk_view(c),
                score,
                bm25: bm25_ranks.get(&slot).copied(),
                dense: dense_ranks.get(&slot).copied(),
            });
            if hits.len() == spec.k {
                break;
            }
        }
        Ok(hits)
    }
}

/// Each entry's score and 1-based rank in a best-first list.
pub(crate) fn rank_of<K: Copy + Eq + std::hash::Hash>(
    list: &[(K, f32)],
) -> HashMap<K, RetrieverScore> {
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
}
