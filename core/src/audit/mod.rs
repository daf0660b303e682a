//! Receipt audits: recompute an answer's citation weights and reward split from its
//! attribution record and say whether they match what the receipt claims.
//!
//! A version-2 receipt commits (`attributionHash`) to an
//! [`AttributionRecord`] stored beside the
//! journal. [`Engine::audit`] loads the record and checks its hash, checks the model,
//! tokenizer and adapters it names against the engine's, fetches the cited chunks from the
//! engine's knowledge base by content hash, rebuilds the prompt, re-runs the attribution
//! on the CPU with the recorded method and parameters, recomputes the receipt's cited
//! chunks and the contributors' reward split, and compares. It also compares the locators
//! the record binds (pages, heading path, character span) with the knowledge base's
//! current ones and lists each cited chunk that moved ([`LocatorChange`]). See
//! `docs/ATTRIBUTION.md` ("Receipts anyone can recompute") for the record format and the
//! tolerance.

mod hash_store;
mod hashes;
mod locators;
mod record;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use alloy_primitives::{Address, B256, U256, keccak256};
use serde::Serialize;
use tribute_attribution::journal::JournalError;
use tribute_attribution::receipt::{CitedChunk, SignedReceipt};
use tribute_attribution::record::{AttributionRecord, RecordStore, tokens_hash};
use tribute_attribution::split::SplitRequest;
use tribute_attribution::{Method, Source};
use tribute_index::Chunk;
use tribute_inference::Message;

pub use hashes::{ModelHashes, TOKENIZER_FILES, adapter_hash, file_hash, model_hashes};
pub use locators::LocatorChange;
pub(crate) use record::{RecordInputs, cited_chunks};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::rag::{EmbedderScorer, ModelScorer, PROMPT_TEMPLATE_VERSION, PromptSource, RagPrompt};

/// Largest difference between a recorded and a recomputed raw score, relative to the
/// largest recorded score's magnitude (at least 1), that still counts as a match when the
/// two are not bit-identical. On one machine the CPU re-run is bit-exact; the tolerance
/// covers another CPU or thread count, where ONNX Runtime may sum in another order.
pub const SCORE_TOLERANCE: f64 = 1e-3;
/// Largest difference, in basis points, between a recorded and a recomputed source weight
/// that still counts as a match within [`SCORE_TOLERANCE`].
pub const BPS_TOLERANCE: u32 = 5;

/// Placeholder recipients of the split the audit recomputes: only contributors' payouts
/// depend on the attribution (model owners and adapter authors come from the chain).
const MODEL_OWNER: Address = Address::repeat_byte(0xee);
const TREASURY: Address = Address::repeat_byte(0xff);

/// What an audit concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Scores, weights, cited chunks and split are bit-identical.
    Exact,
    /// Weights, cited chunks and split are identical; scores differ within
    /// [`SCORE_TOLERANCE`] (or weights within [`BPS_TOLERANCE`] where the chunks still match).
    WithinTolerance,
    /// Something differs beyond the tolerance (see [`AuditReport::differences`]).
    Mismatch,
}

impl Verdict {
    /// Whether the receipt is confirmed (exact or within tolerance).
    pub fn is_match(self) -> bool {
        !matches!(self, Verdict::Mismatch)
    }
}

/// The result of [`Engine::audit`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditReport {
    /// The receipt.
    pub receipt_id: B256,
    /// The record it commits to.
    pub attribution_hash: B256,
    /// The recorded attribution method.
    pub method: Method,
    /// The verdict.
    pub verdict: Verdict,
    /// What differed, one line each (empty on an exact match).
    pub differences: Vec<String>,
    /// Raw scores in the record, in prompt order.
    pub recorded_scores: Vec<f64>,
    /// Raw scores recomputed.
    pub recomputed_scores: Vec<f64>,
    /// Weights in the record (basis points, prompt order).
    pub recorded_bps: Vec<u32>,
    /// Weights recomputed.
    pub recomputed_bps: Vec<u32>,
    /// Largest score difference, relative (see [`SCORE_TOLERANCE`]).
    pub max_score_diff: f64,
    /// Largest weight difference in basis points.
    pub max_bps_diff: u32,
    /// Per contributor: the payout from the receipt's chunks and the recomputed one (wei).
    pub contributor_payouts: Vec<(Address, U256, U256)>,
    /// Whether the model's hash was checked (methods that run the model).
    pub model_checked: bool,
    /// Cited chunks whose text is unchanged but that no longer lie where the record says
    /// (another page, section or character span), in prompt order. They do not affect the
    /// verdict: the attribution and payouts depend on the text only.
    pub locator_changes: Vec<LocatorChange>,
    /// Seconds the audit took.
    pub seconds: f64,
}

/// The receipt with this id from the journal in `journal_dir` (opened, and so locked,
/// for the lookup only), or in the shared journal at a `postgres://` URL.
/// [`JournalError::UnknownReceipt`] when it is not there.
pub fn journaled_receipt(journal_dir: &Path, id: B256) -> Result<SignedReceipt> {
    let is_url = tribute_attribution::journal::is_postgres_url(journal_dir);
    if !is_url
        && !journal_dir
            .join(tribute_attribution::journal::LOG_FILE)
            .is_file()
    {
        return Err(Error::Config(format!(
            "{} is not a receipt journal",
            journal_dir.display()
        )));
    }
    let journal = tribute_attribution::journal::open(journal_dir)?;
    Ok(journal
        .receipt(&id)?
        .map(|(r, _)| r)
        .ok_or(JournalError::UnknownReceipt(id))?)
}

impl Engine {
    /// The receipt with this id from the engine's own journal.
    pub fn journaled(&self, id: B256) -> Result<SignedReceipt> {
        let journal = self
            .journal_handle()
            .ok_or_else(|| Error::Config("this engine has no receipt journal".into()))?;
        let j = journal.lock().map_err(|_| Error::Poisoned("journal"))?;
        Ok(j.receipt(&id)?
            .map(|(r, _)| r)
            .ok_or(JournalError::UnknownReceipt(id))?)
    }

    /// Audits a receipt against this engine's knowledge base and model, with the records in
    /// `records_dir` (default: beside the engine's journal). See the [module docs](self).
    ///
    /// # Errors
    ///
    /// [`Error::NoAttributionRecord`] (a version-1 receipt or one without a record),
    /// [`Error::Record`] (record missing, altered or malformed), [`Error::ModelMismatch`],
    /// [`Error::ChunksMissing`] (the audit cannot decide). A mismatch is not an error: it is
    /// the report's [`Verdict::Mismatch`].
    pub fn audit(
        &self,
        receipt: &SignedReceipt,
        records_dir: Option<&Path>,
    ) -> Result<AuditReport> {
        let t0 = Instant::now();
        let r = &receipt.receipt;
        let receipt_id = r.receiptId;
        if r.attributionHash == B256::ZERO {
            let reason = if r.version == 1 {
                "it is a version-1 receipt, which commits to no attribution record".to_owned()
            } else {
                "it was signed without an attribution record (no sources, or no journal)".to_owned()
            };
            return Err(Error::NoAttributionRecord { receipt_id, reason });
        }
        let record = match records_dir {
            Some(d) => RecordStore::new(d).get(&r.attributionHash)?,
            // Beside the engine's journal, or in its database.
            None => self
                .journal_handle()
                .ok_or_else(|| {
                    Error::Config(
                        "no records directory: give one or configure receipts.journal".into(),
                    )
                })?
                .lock()
                .map_err(|_| Error::Poisoned("journal"))?
                .get_record(&r.attributionHash)?,
        };
        let mut differences = Vec::new();
        if keccak256(record.prompt.question.as_bytes()) != r.queryHash {
            differences
                .push("the record's question does not hash to the receipt's queryHash".into());
        }
        if keccak256(record.answer.as_bytes()) != r.answerHash {
            differences
                .push("the record's answer does not hash to the receipt's answerHash".into());
        }
        if record.model.id != r.modelId {
            differences.push(format!(
                "the record names model {}, the receipt {}",
                record.model.id, r.modelId
            ));
        }
        if record.prompt.template != PROMPT_TEMPLATE_VERSION {
            return Err(Error::InvalidRequest(format!(
                "the record's prompt template is {:?}; this version rebuilds {PROMPT_TEMPLATE_VERSION:?}",
                record.prompt.template
            )));
        }
        let model_checked = record.method.needs_model();
        if model_checked {
            self.check_model(&record)?;
        }
        let kb_chunks = self.read_index()?.chunks()?;
        let sources = fetch_sources(receipt_id, &record, &kb_chunks)?;
        let locator_changes =
            locators::locator_changes(record.version, &record.sources, &kb_chunks);
        drop(kb_chunks);
        let recomputed = self.reattribute(&record, &sources, &mut differences)?;
        let (max_score_diff, max_bps_diff, exact) = compare(&record, &recomputed, &mut differences);

        // The receipt's chunks and the contributors' split, from the recomputed weights.
        let chunks = receipt_chunks(&record, &recomputed.weights_bps)?;
        if chunks != r.chunks {
            differences.push(format!(
                "cited chunks: the receipt has {}, recomputed {}",
                chunks_text(&r.chunks),
                chunks_text(&chunks)
            ));
        }
        let recorded_chunks: Vec<CitedChunk> = record
            .split
            .chunks
            .iter()
            .map(|&(h, c, w)| CitedChunk {
                contentHash: h,
                contributor: c,
                weightBps: w,
            })
            .collect();
        if recorded_chunks != r.chunks || record.split.fee != r.fee {
            differences
                .push("the record's split inputs (fee, chunks) differ from the receipt's".into());
        }
        let paid = contributor_payouts(&record, &r.chunks)?;
        let repaid = contributor_payouts(&record, &chunks)?;
        let mut contributor_payouts: Vec<(Address, U256, U256)> = paid
            .iter()
            .map(|(a, v)| (*a, *v, repaid.get(a).copied().unwrap_or_default()))
            .collect();
        for (a, v) in &repaid {
            if !paid.contains_key(a) {
                contributor_payouts.push((*a, U256::ZERO, *v));
            }
        }
        contributor_payouts.sort();
        if contributor_payouts.iter().any(|(_, x, y)| x != y) {
            differences.push("contributor payouts differ".into());
        }

        let verdict = if differences.is_empty() && exact {
            Verdict::Exact
        } else if differences.is_empty() {
            Verdict::WithinTolerance
        } else {
            Verdict::Mismatch
        };
        Ok(AuditReport {
            receipt_id,
            attribution_hash: r.attributionHash,
            method: record.method,
            verdict,
            differences,
            recorded_scores: record.result.scores.clone(),
            recomputed_scores: recomputed.scores,
            recorded_bps: record.result.weights_bps.clone(),
            recomputed_bps: recomputed.weights_bps,
            max_score_diff,
            max_bps_diff,
            contributor_payouts,
            model_checked,
            locator_changes,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// The model, tokenizer and adapters must be the ones the record names.
    fn check_model(&self, record: &AttributionRecord) -> Result<()> {
        let g = self.loaded_generator()?;
        let given = model_hashes(g.dir())?;
        if given.model != record.model.hash {
            return Err(Error::ModelMismatch {
                what: "model".into(),
                recorded: record.model.hash,
                given: given.model,
            });
        }
        if given.tokenizer != record.model.tokenizer_hash {
            return Err(Error::ModelMismatch {
                what: "tokenizer".into(),
                recorded: record.model.tokenizer_hash,
                given: given.tokenizer,
            });
        }
        for a in &record.adapters {
            let registered = self.config().adapters.iter().find(|c| c.id == a.name);
            match (a.hash, registered) {
                (Some(recorded), Some(c)) => {
                    let given = adapter_hash(&c.path)?;
                    if given != recorded {
                        return Err(Error::ModelMismatch {
                            what: format!("adapter {}", a.name),
                            recorded,
                            given,
                        });
                    }
                }
                (Some(_), None) => {
                    return Err(Error::InvalidRequest(format!(
                        "the answer merged adapter {:?}: register it to audit (--adapter PATH)",
                        a.name
                    )));
                }
                (None, _) => {}
            }
        }
        Ok(())
    }

    /// Re-runs the recorded method on the CPU.
    fn reattribute(
        &self,
        record: &AttributionRecord,
        sources: &[(Source, String)],
        differences: &mut Vec<String>,
    ) -> Result<tribute_attribution::Attribution> {
        let plain: Vec<Source> = sources.iter().map(|(s, _)| s.clone()).collect();
        let embedder = self.embedder_handle().cloned().map(EmbedderScorer);
        let embedder_ref = embedder
            .as_ref()
            .map(|e| e as &dyn tribute_attribution::TextEmbedder);
        if !record.method.needs_model() {
            return Ok(tribute_attribution::attribute(
                record.method,
                &record.answer,
                &plain,
                None,
                embedder_ref,
                &record.params,
            )?);
        }
        let g = self.loaded_generator()?;
        let history: Vec<Message> = record
            .prompt
            .history
            .iter()
            .map(|t| Message::new(t.role.clone(), t.content.clone()))
            .collect();
        let shown: Vec<PromptSource> = sources
            .iter()
            .map(|(s, title)| PromptSource {
                title: title.clone(),
                text: s.text.clone(),
            })
            .collect();
        let prompt = RagPrompt::build_with_history(
            g,
            &record.prompt.system,
            &history,
            &record.prompt.question,
            &shown,
        )?;
        if tokens_hash(&prompt.tokens) != record.prompt.tokens_hash {
            differences.push(format!(
                "the rebuilt prompt ({} tokens) differs from the recorded one ({} tokens)",
                prompt.tokens.len(),
                record.prompt.tokens
            ));
        }
        let adapters: Vec<(String, f32)> = record
            .adapters
            .iter()
            .map(|a| (a.name.clone(), a.weight))
            .collect();
        let scorer = ModelScorer::from_tokens(g, &prompt, record.answer_tokens.clone(), adapters)?;
        Ok(tribute_attribution::attribute(
            record.method,
            &record.answer,
            &plain,
            Some(&scorer),
            embedder_ref,
            &record.params,
        )?)
    }
}

/// The record's sources with their text from the knowledge base's `chunks`, in prompt
/// order.
fn fetch_sources(
    receipt_id: B256,
    record: &AttributionRecord,
    chunks: &[Chunk],
) -> Result<Vec<(Source, String)>> {
    let mut by_hash: HashMap<B256, &str> = HashMap::with_capacity(chunks.len());
    for c in chunks {
        by_hash
            .entry(c.content_hash.as_b256())
            .or_insert(c.text.as_str());
    }
    let missing: Vec<B256> = record
        .sources
        .iter()
        .map(|s| s.content_hash)
        .filter(|h| !by_hash.contains_key(h))
        .collect();
    if !missing.is_empty() {
        return Err(Error::ChunksMissing {
            receipt_id,
            missing,
        });
    }
    let mut out = Vec::with_capacity(record.sources.len());
    for s in &record.sources {
        let text = by_hash.get(&s.content_hash).copied().unwrap_or_default();
        let shown = text.get(..s.shown_bytes).ok_or_else(|| {
            Error::InvalidRequest(format!(
                "the record shows {} bytes of chunk {}, which has {} (not a character boundary or too long)",
                s.shown_bytes,
                s.content_hash,
                text.len()
            ))
        })?;
        let source = Source::new(s.chunk_id.clone(), shown)
            .with_contributor(s.contributor)
            .with_content_hash(s.content_hash)
            .with_retrieval_score(s.retrieval_score);
        out.push((source, s.title.clone()));
    }
    Ok(out)
}

/// Compares recorded and recomputed scores and weights: (largest relative score
/// difference, largest bps difference, bit-identical).
fn compare(
    record: &AttributionRecord,
    recomputed: &tribute_attribution::Attribution,
    differences: &mut Vec<String>,
) -> (f64, u32, bool) {
    let (a, b) = (&record.result.scores, &recomputed.scores);
    let (wa, wb) = (&record.result.weights_bps, &recomputed.weights_bps);
    if a.len() != b.len() || wa.len() != wb.len() {
        differences.push(format!(
            "{} sources recorded, {} recomputed",
            a.len(),
            b.len()
        ));
        return (f64::INFINITY, u32::MAX, false);
    }
    let scale = a.iter().fold(1.0_f64, |m, x| m.max(x.abs()));
    let max_score_diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / scale)
        .fold(0.0, f64::max);
    let max_bps_diff = wa
        .iter()
        .zip(wb)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    let exact = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()) && wa == wb;
    if max_score_diff.is_nan() || max_score_diff > SCORE_TOLERANCE {
        differences.push(format!(
            "scores differ by up to {max_score_diff:.3e} (relative; tolerance {SCORE_TOLERANCE:e}): recorded {a:?}, recomputed {b:?}"
        ));
    }
    if max_bps_diff > BPS_TOLERANCE {
        differences.push(format!(
            "weights differ by up to {max_bps_diff} bps (tolerance {BPS_TOLERANCE}): recorded {wa:?}, recomputed {wb:?}"
        ));
    }
    if record.result.fallback.is_some() != recomputed.fallback.is_some() {
        differences.push(format!(
            "fallback to retrieval scores: recorded {}, recomputed {}",
            record.result.fallback.is_some(),
            recomputed.fallback.is_some()
        ));
    }
    (max_score_diff, max_bps_diff, exact)
}

/// The receipt's cited chunks from weights in prompt order, as the engine signs them.
fn receipt_chunks(record: &AttributionRecord, weights_bps: &[u32]) -> Result<Vec<CitedChunk>> {
    let mut cited: Vec<(usize, u32)> = weights_bps
        .iter()
        .enumerate()
        .filter(|(_, w)| **w > 0)
        .map(|(i, w)| (i, *w))
        .collect();
    // As an answer lists its citations: by weight, highest first, then by marker.
    cited.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    let triples: Vec<(B256, Address, u32)> = cited
        .iter()
        .filter_map(|&(i, w)| {
            record
                .sources
                .get(i)
                .map(|s| (s.content_hash, s.contributor, w))
        })
        .collect();
    cited_chunks(&triples)
}

/// Contributors' payouts of the recorded fee and reward policy for these chunks.
fn contributor_payouts(
    record: &AttributionRecord,
    chunks: &[CitedChunk],
) -> Result<HashMap<Address, U256>> {
    let mut request = SplitRequest::builder(record.split.fee)
        .model_owner(MODEL_OWNER)
        .treasury(TREASURY);
    for c in chunks {
        request = request.contributor(c.contributor, u32::from(c.weightBps));
    }
    let split = request
        .build()
        .and_then(|req| record.split.rewards.split(&req))
        .map_err(|e| Error::InvalidRequest(format!("recomputing the reward split: {e}")))?;
    Ok(split
        .payouts
        .iter()
        .filter(|p| !p.by_role.contributor.is_zero())
        .map(|p| (p.address, p.by_role.contributor))
        .collect())
}

fn chunks_text(chunks: &[CitedChunk]) -> String {
    let parts: Vec<String> = chunks
        .iter()
        .map(|c| format!("{}…:{}", &c.contentHash.to_string()[..10], c.weightBps))
        .collect();
    format!("[{}]", parts.join(", "))
}
