//! Citation audit: do an answer's markers point at the sources the model used?
//!
//! Every RAG system can print `[n]` markers; Tribute also measures each source's
//! influence on each answer sentence (the attribution pass: for `loo`, the drop in the
//! sentence tokens' log-probability when the source is hidden), so it can check them.
//! The audit reuses those per-sentence measurements; it runs no extra model pass.
//!
//! - A source has **measurable influence** on a sentence when its influence reaches a
//!   threshold: [`MIN_INFLUENCE_NATS`] (1 nat) for the model methods, [`MIN_MATCH`] for
//!   the model-free ones ([`InfluenceUnit`]).
//! - Per sentence: markers shown whose source has no measurable influence on it (*cited
//!   but unused*, [`AnswerSentence::unused_markers`](crate::AnswerSentence)), sources with
//!   measurable influence it does not show (*used but uncited*), and whether any source
//!   supports it at all (`AnswerSentence::supported`).
//! - Per answer ([`CitationAudit`] in [`Answer::citation_audit`](crate::Answer)): citation
//!   precision (shown markers that are used) and recall (influential sources that are
//!   cited).
//!
//! [`CitationBench`] scores citations against gold supporting passages, next to the
//! baseline of markers the model writes itself when prompted to cite ([`markers`] parses
//! them): `tribute eval citations`, numbers in docs/ATTRIBUTION.md.

mod audit;
mod eval;
pub mod markers;

pub use audit::{
    CitationAudit, CitationCounts, InfluenceUnit, MIN_INFLUENCE_NATS, MIN_MATCH, SentenceAudit,
    audit_attribution, audit_sentences,
};
pub use eval::{
    CITE_SYSTEM_PROMPT, CitationBench, CitationReport, CitationRow, GoldScores, SkippedExample,
    ThresholdScores,
};
