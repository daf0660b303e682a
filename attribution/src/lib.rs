//! Citation weights, reward splits and signed usage receipts.
//!
//! - [`weights`]: how much each retrieved source contributed to an answer, measured with a
//!   model through the [`weights::ContextScorer`] trait (leave-one-out, ContextCite-style
//!   ablation) or estimated without one (similarity, retrieval scores); basis points that
//!   sum to exactly 10,000 and per-sentence support for inline citation markers.
//! - [`receipt`]: EIP-712 usage receipts signed by the payer, canonical JSON, Merkle
//!   leaves and proofs for batch settlement.
//! - `chain` (feature `onchain`): the `TributeLedger` contract client (deploy, deposit,
//!   settle, withdraw, registry, inclusion proofs) over HTTP JSON-RPC with alloy.
//! - [`record`]: attribution records (model, prompt, sources by content hash, method and
//!   parameters, scores, split inputs) that a version-2 receipt commits to, stored
//!   content-addressed and crash-safe beside the journal, so anyone can recompute a split.
//! - [`journal`]: a crash-safe, append-only, checksummed journal of signed receipts and
//!   their settlement state (pending → batched → submitted → confirmed), and (feature
//!   `postgres`) the same journal in PostgreSQL, shared by many processes and settlers,
//!   behind one [`journal::JournalBackend`] trait.
//! - [`settle`]: the payouts of a batch of receipts and (feature `onchain`) settling a
//!   journal's pending receipts on the ledger in Merkle batches, every step journaled.
//! - [`split`]: an exact reward split of a fee in wei between data contributors, adapter
//!   authors (and the contributors of the data an adapter was trained on), the model owner
//!   and a treasury.
//! - [`provenance`]: signed provenance manifests (`provenance.json`) of fine-tuned adapters:
//!   base model, training config and the training documents' contributors and tokens.
//!
//! The crate takes plain inputs (ids, contributors, texts, scores) and never depends on
//! `tribute-index` or `tribute-inference`; `tribute` (core) wires them.

#[cfg(feature = "onchain")]
pub mod chain;
mod error;
pub mod journal;
pub mod provenance;
pub mod receipt;
pub mod record;
pub mod settle;
pub mod split;
pub mod weights;

pub use error::{Error, Result};
pub use weights::{
    AnswerAndQuestion, Attribution, AttributionConfig, ContextScorer, DuplicatePolicy, Method,
    ScorerError, SentenceSupport, Source, TextEmbedder, attribute, to_bps,
};
