//! Extractive answers (`answer_mode = "extractive"`): the answer is the retrieved
//! sentences most similar to the question, each cited. No model writes anything, so every
//! word is attributable by construction.
//!
//! Scorer: cosine similarity of the knowledge base's embedder between the question and
//! each sentence of the relevant hits (token overlap when the knowledge base has no
//! embedder). The best sentence is always used; up to `extractive.sentences` are, each at
//! least `extractive.min_ratio` of the best score. A source's weight is the sum of its
//! used sentences' scores, in basis points summing to exactly 10,000.

use std::time::Instant;

use alloy_primitives::B256;
use tribute_attribution::weights::sentences;
use tribute_index::Hit;

use super::answer::citation;
use super::{
    Answer, AnswerSentence, AskOptions, Citation, Engine, SearchOptions, StageTimings, Usage, ms,
};
use crate::config::AnswerMode;
use crate::error::{Error, Result};
use crate::qa::normalize_answer;

/// A sentence of a hit and its score against the question.
struct Candidate {
    hit: usize,
    text: String,
    score: f32,
}

impl Engine {
    /// Whether `options` (or, unset, the config) ask for an extractive answer.
    pub(super) fn is_extractive(&self, options: &AskOptions) -> bool {
        options.answer_mode.unwrap_or(self.inner.config.answer_mode) == AnswerMode::Extractive
    }

    /// Retrieves, picks the best sentences and signs the receipt (model id zero: no model
    /// ran; no adapters).
    pub(super) fn extractive_answer(&self, question: &str, options: &AskOptions) -> Result<Answer> {
        let started = Instant::now();
        let cfg = &self.inner.config;
        if question.trim().is_empty() {
            return Err(Error::InvalidRequest("the question is empty".into()));
        }
        let top_k = options.top_k.unwrap_or(cfg.retrieval.top_k);
        cfg.limits.check_top_k(top_k)?;
        let options = AskOptions {
            adapters: Vec::new(),
            ..options.clone()
        };
        let search = SearchOptions {
            top_k: Some(top_k),
            mode: options.mode,
            datanets: options.datanets.clone(),
        };
        let mut timings = StageTimings::default();
        let t = Instant::now();
        // A conversation's follow-up is searched for, and its sentences picked, as the
        // standalone question it was rewritten into.
        let query = options.retrieval_query.as_deref().unwrap_or(question);
        let (hits, retrieved) = self.relevant_hits_counted(query, &search)?;
        timings.retrieval_ms = ms(t);
        if hits.is_empty() {
            return self.no_sources_answer(question, &options, retrieved, started, timings);
        }

        let t = Instant::now();
        let chosen = self.best_sentences(query, &hits)?;
        let mut bps_scores = vec![0.0f64; hits.len()];
        for c in &chosen {
            bps_scores[c.hit] += f64::from(c.score.max(0.0));
        }
        if bps_scores.iter().all(|s| *s <= 0.0) {
            // Nothing scored above zero: credit the sources the answer quotes equally.
            for c in &chosen {
                bps_scores[c.hit] = 1.0;
            }
        }
        let weights = tribute_attribution::to_bps(&bps_scores)?;
        let mut citations: Vec<Citation> = hits
            .iter()
            .zip(&weights)
            .enumerate()
            .filter(|(_, (_, w))| **w > 0)
            .map(|(i, (h, &w))| citation(i + 1, w, h))
            .collect();
        citations.sort_by(|x, y| {
            y.weight_bps
                .cmp(&x.weight_bps)
                .then(x.marker.cmp(&y.marker))
        });
        let (text, cited_text, answer_sentences) = compose(&chosen);
        timings.attribution_ms = ms(t);

        let t = Instant::now();
        let (receipt, no_receipt) =
            self.sign_receipt_for(B256::ZERO, question, &text, &options, &citations)?;
        timings.receipt_ms = ms(t);
        timings.total_ms = ms(started);
        Ok(Answer {
            question: question.to_owned(),
            retrieval_query: options.retrieval_query.clone(),
            text,
            cited_text,
            citations,
            sentences: answer_sentences,
            citation_audit: None,
            source_alert: None,
            adapters: Vec::new(),
            usage: Usage {
                sources_retrieved: retrieved,
                sources_used: hits.len(),
                timings,
                ..Usage::default()
            },
            receipt,
            no_receipt,
        })
    }

    /// The sentences to answer with, best first.
    fn best_sentences(&self, question: &str, hits: &[Hit]) -> Result<Vec<Candidate>> {
        let mut candidates = Vec::new();
        for (i, h) in hits.iter().enumerate() {
            for (span, _) in sentences(&h.text) {
                let text = h.text[span].trim();
                if normalize_answer(text).split(' ').count() >= 3 {
                    candidates.push(Candidate {
                        hit: i,
                        text: text.to_owned(),
                        score: 0.0,
                    });
                }
            }
        }
        if candidates.is_empty() {
            // Sources too short to split: their whole texts are the candidates.
            for (i, h) in hits.iter().enumerate() {
                candidates.push(Candidate {
                    hit: i,
                    text: h.text.trim().to_owned(),
                    score: 0.0,
                });
            }
        }
        match &self.inner.embedder {
            Some(e) => {
                let mut texts: Vec<&str> = vec![question];
                texts.extend(candidates.iter().map(|c| c.text.as_str()));
                let vectors = e.embed(&texts)?;
                let (q, rest) = vectors
                    .split_first()
                    .ok_or_else(|| Error::Task("the embedder returned no vectors".into()))?;
                for (c, v) in candidates.iter_mut().zip(rest) {
                    c.score = q.iter().zip(v).map(|(a, b)| a * b).sum();
                }
            }
            None => {
                for c in &mut candidates {
                    c.score = crate::qa::token_f1(&c.text, question) as f32;
                }
            }
        }
        // Best first; ties keep retrieval order.
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        let x = &self.inner.config.extractive;
        let best = candidates.first().map_or(0.0, |c| c.score);
        let mut chosen: Vec<Candidate> = Vec::new();
        for c in candidates {
            if chosen.len() >= x.sentences.max(1) {
                break;
            }
            let good = chosen.is_empty() || (best > 0.0 && c.score >= x.min_ratio * best);
            let repeat = chosen
                .iter()
                .any(|k| normalize_answer(&k.text) == normalize_answer(&c.text));
            if good && !repeat {
                chosen.push(c);
            }
        }
        Ok(chosen)
    }
}

/// The answer text, the text with markers, and its sentences.
fn compose(chosen: &[Candidate]) -> (String, String, Vec<AnswerSentence>) {
    let mut text = String::new();
    let mut cited = String::new();
    let mut out = Vec::with_capacity(chosen.len());
    for c in chosen {
        if !text.is_empty() {
            text.push(' ');
            cited.push(' ');
        }
        let start = text.len();
        let c0 = text.chars().count();
        text.push_str(&c.text);
        cited.push_str(&c.text);
        cited.push_str(&format!(" [{}]", c.hit + 1));
        out.push(AnswerSentence {
            text: c.text.clone(),
            span: start..text.len(),
            char_span: c0..c0 + c.text.chars().count(),
            markers: vec![c.hit + 1],
            supported: true,
            support: None,
            unused_markers: Vec::new(),
            uncited_markers: Vec::new(),
        });
    }
    (text, cited, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_answer_cites_each_sentence_with_exact_spans() {
        let chosen = [
            Candidate {
                hit: 1,
                text: "Forty times per second.".into(),
                score: 0.9,
            },
            Candidate {
                hit: 0,
                text: "Über alles, twice.".into(),
                score: 0.8,
            },
        ];
        let (text, cited, sentences) = compose(&chosen);
        assert_eq!(text, "Forty times per second. Über alles, twice.");
        assert_eq!(cited, "Forty times per second. [2] Über alles, twice. [1]");
        assert_eq!(sentences[1].markers, vec![1]);
        assert_eq!(&text[sentences[1].span.clone()], "Über alles, twice.");
        assert_eq!(sentences[1].char_span, 24..42);
    }
}
