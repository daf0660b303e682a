//! Searching the knowledge base ([`SearchRequest`]) and retrieval-only uses of it with a
//! receipt ([`Engine::retrieve`]).

use alloy_primitives::B256;
use tribute_index::Hit;

use super::answer::citation;
use super::{AskOptions, Engine, Retrieval};
use crate::error::{Error, Result};

/// Options of one search; unset fields take the engine's config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOptions {
    /// Chunks to return.
    pub top_k: Option<usize>,
    /// Retrieval mode.
    pub mode: Option<tribute_index::Mode>,
    /// Only these datanets (empty: every datanet).
    pub datanets: Option<Vec<String>>,
}

/// A search being set up: `engine.search(q).top_k(5).mode(m).datanets(["d"]).run()`.
#[derive(Debug)]
#[must_use = "call .run()"]
pub struct SearchRequest<'a> {
    engine: &'a Engine,
    query: String,
    options: SearchOptions,
}

impl SearchRequest<'_> {
    /// Chunks to return.
    pub fn top_k(mut self, k: usize) -> Self {
        self.options.top_k = Some(k);
        self
    }

    /// Retrieval mode.
    pub fn mode(mut self, mode: tribute_index::Mode) -> Self {
        self.options.mode = Some(mode);
        self
    }

    /// Only these datanets (empty: every datanet).
    pub fn datanets<I: IntoIterator<Item = S>, S: Into<String>>(mut self, d: I) -> Self {
        self.options.datanets = Some(d.into_iter().map(Into::into).collect());
        self
    }

    /// All options at once.
    pub fn options(mut self, options: SearchOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs the search: the best chunks, best first.
    pub fn run(self) -> Result<Vec<Hit>> {
        self.engine.search_hits(&self.query, &self.options)
    }
}

/// A retrieval being set up: `engine.retrieve(q).top_k(4).datanets(["d"]).sign(true).run()`.
#[derive(Debug)]
#[must_use = "call .run()"]
pub struct RetrieveRequest<'a> {
    engine: &'a Engine,
    query: String,
    top_k: Option<usize>,
    datanets: Option<Vec<String>>,
    sign: bool,
}

impl RetrieveRequest<'_> {
    /// Chunks to retrieve (default: the configured `top_k`).
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }

    /// Only these datanets (empty: every datanet; default: the configured ones).
    pub fn datanets<I: IntoIterator<Item = S>, S: Into<String>>(mut self, d: I) -> Self {
        self.datanets = Some(d.into_iter().map(Into::into).collect());
        self
    }

    /// Whether to sign and journal a retrieval receipt (default true; it needs a signing
    /// key and a ledger, else [`Retrieval::no_receipt`] says why there is none).
    pub fn sign(mut self, sign: bool) -> Self {
        self.sign = sign;
        self
    }

    /// Runs the retrieval.
    pub fn run(self) -> Result<Retrieval> {
        let search = SearchOptions {
            top_k: self.top_k,
            mode: None,
            datanets: self.datanets,
        };
        self.engine.retrieve_with(&self.query, &search, self.sign)
    }
}

impl Engine {
    /// Searches the knowledge base; set options on the returned request, then `.run()`.
    /// Unset options take the configured `top_k`, mode and datanets.
    pub fn search(&self, query: impl Into<String>) -> SearchRequest<'_> {
        SearchRequest {
            engine: self,
            query: query.into(),
            options: SearchOptions::default(),
        }
    }

    /// Searches with `options`; unset ones take the configuration (an empty `datanets`
    /// list searches every datanet).
    pub(crate) fn search_hits(&self, query: &str, options: &SearchOptions) -> Result<Vec<Hit>> {
        if let Some(k) = options.top_k {
            self.inner.config.limits.check_top_k(k)?;
        }
        let cfg = &self.inner.config.retrieval;
        let datanets = options.datanets.as_deref().unwrap_or(&cfg.datanets);
        let index = self.read_index()?;
        let mut req = index
            .search(query)
            .k(options.top_k.unwrap_or(cfg.top_k))
            .mode(options.mode.unwrap_or(cfg.mode));
        if !datanets.is_empty() {
            req = req.datanets(datanets.iter().map(String::as_str));
        }
        Ok(req.execute()?)
    }

    /// Searches and keeps the hits above the relevance floor; also returns how many the
    /// search returned.
    pub(super) fn relevant_hits_counted(
        &self,
        query: &str,
        options: &SearchOptions,
    ) -> Result<(Vec<Hit>, usize)> {
        let hits = self.search_hits(query, options)?;
        let retrieved = hits.len();
        let floor = self.inner.config.retrieval.min_similarity;
        let has_embedder = self.inner.embedder.is_some();
        let hits = hits
            .into_iter()
            .filter(|h| match h.dense {
                Some(d) => d.score >= floor,
                None => h.bm25.is_some() && !has_embedder,
            })
            .collect();
        Ok((hits, retrieved))
    }

    /// A retrieval-only use of the knowledge base (for agents that generate elsewhere): set
    /// options on the returned request, then `.run()`. It searches like
    /// [`Engine::search`], keeps the relevant hits and, unless `.sign(false)`, signs and
    /// journals a retrieval receipt crediting their contributors (see [`Retrieval`]).
    pub fn retrieve(&self, query: impl Into<String>) -> RetrieveRequest<'_> {
        RetrieveRequest {
            engine: self,
            query: query.into(),
            top_k: None,
            datanets: None,
            sign: true,
        }
    }

    fn retrieve_with(&self, query: &str, search: &SearchOptions, sign: bool) -> Result<Retrieval> {
        if query.trim().is_empty() {
            return Err(Error::InvalidRequest("the query is empty".into()));
        }
        let (hits, _) = self.relevant_hits_counted(query, search)?;
        let mut citations = Vec::new();
        if !hits.is_empty() {
            let scores: Vec<f64> = hits
                .iter()
                .map(|h| f64::from(h.dense.map_or(h.score, |d| d.score)).max(0.0))
                .collect();
            let bps = tribute_attribution::to_bps(&scores)
                .or_else(|_| tribute_attribution::to_bps(&vec![1.0; hits.len()]))?;
            for (i, (h, w)) in hits.iter().zip(bps).enumerate() {
                if w > 0 {
                    citations.push(citation(i + 1, w, h));
                }
            }
        }
        let (receipt, no_receipt) = if !sign {
            (None, Some("signing was not requested".into()))
        } else if hits.is_empty() && !self.inner.config.receipts.sign_without_sources {
            (
                None,
                Some("no source was relevant to the query, so nothing was cited or paid".into()),
            )
        } else {
            let ids: Vec<&str> = hits.iter().map(|h| h.chunk_id.as_str()).collect();
            let options = AskOptions {
                fee: Some(self.inner.config.receipts.retrieval_fee_wei),
                ..AskOptions::default()
            };
            self.sign_receipt_for(B256::ZERO, query, &ids.join("\n"), &options, &citations)?
        };
        Ok(Retrieval {
            query: query.to_owned(),
            hits,
            citations,
            receipt,
            no_receipt,
        })
    }
}
