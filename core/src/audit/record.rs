//! Writing attribution records: what an ask hands over, and the record built from it.

use alloy_primitives::{Address, B256, U256};
use tribute_attribution::receipt::{CitedChunk, named_id};
use tribute_attribution::record::{
    AttributionRecord, RECORD_VERSION, RecordedAdapter, RecordedModel, RecordedPrompt,
    RecordedResult, RecordedSource, RecordedSplit, RecordedTurn, tokens_hash,
};
use tribute_attribution::split::RewardConfig;
use tribute_attribution::{Attribution, Method};
use tribute_index::Hit;
use tribute_inference::Message;

use super::hashes::{adapter_hash, model_hashes};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::rag::{PROMPT_TEMPLATE_VERSION, RagPrompt};

/// What an ask used and produced, as the record needs it.
pub(crate) struct RecordInputs<'a> {
    pub(crate) prompt: &'a RagPrompt,
    pub(crate) system: &'a str,
    pub(crate) history: &'a [Message],
    pub(crate) question: &'a str,
    pub(crate) hits: &'a [Hit],
    pub(crate) adapters: &'a [(String, f32)],
    pub(crate) method: Method,
    pub(crate) attribution: &'a Attribution,
    pub(crate) answer: &'a str,
    pub(crate) answer_tokens: &'a [u32],
}

impl Engine {
    /// Whether this engine keeps attribution records (beside its receipt journal, or in
    /// its database): not without a journal, a signing key or a ledger (no receipt would
    /// name the record).
    pub(crate) fn keeps_records(&self) -> bool {
        let cfg = &self.config().receipts;
        self.payer().is_some() && cfg.ledger.is_some() && self.journal_handle().is_some()
    }

    /// Hashes the model directory and the configured adapters now, as the first recorded
    /// answer would, so that no answer waits for them: a model's weights take seconds the
    /// first time on a machine (a fresh container, every deploy). Returns whether there was
    /// anything to hash (false when this engine keeps no records). A server calls it in the
    /// background as it starts; an answer that comes meanwhile waits only for the rest of
    /// the same hash, never hashes the same file again beside it.
    pub fn prepare_records(&self) -> Result<bool> {
        if !self.keeps_records() {
            return Ok(false);
        }
        model_hashes(self.loaded_generator()?.dir())?;
        for a in &self.config().adapters {
            adapter_hash(&a.path)?;
        }
        Ok(true)
    }

    /// The record of an answer, without its split inputs (filled in when the receipt is
    /// signed); `None` when no record would be stored.
    pub(crate) fn attribution_record(
        &self,
        inputs: RecordInputs<'_>,
    ) -> Result<Option<AttributionRecord>> {
        if !self.keeps_records() {
            return Ok(None);
        }
        let g = self.loaded_generator()?;
        let hashes = model_hashes(g.dir())?;
        let mut adapters = Vec::with_capacity(inputs.adapters.len());
        for (name, weight) in inputs.adapters {
            let hash = match self.config().adapters.iter().find(|a| &a.id == name) {
                Some(a) => Some(adapter_hash(&a.path)?),
                None => None,
            };
            adapters.push(RecordedAdapter {
                name: name.clone(),
                id: named_id(name),
                hash,
                weight: *weight,
            });
        }
        let a = inputs.attribution;
        Ok(Some(AttributionRecord {
            version: RECORD_VERSION,
            model: RecordedModel {
                name: self.model().name.clone(),
                id: self.model().id,
                hash: hashes.model,
                tokenizer_hash: hashes.tokenizer,
            },
            adapters,
            prompt: RecordedPrompt {
                template: PROMPT_TEMPLATE_VERSION.to_owned(),
                system: inputs.system.to_owned(),
                history: inputs
                    .history
                    .iter()
                    .map(|m| RecordedTurn {
                        role: m.role.clone(),
                        content: m.content.clone(),
                    })
                    .collect(),
                question: inputs.question.to_owned(),
                tokens: inputs.prompt.tokens.len(),
                tokens_hash: tokens_hash(&inputs.prompt.tokens),
            },
            answer: inputs.answer.to_owned(),
            answer_tokens: inputs.answer_tokens.to_vec(),
            sources: inputs
                .hits
                .iter()
                .map(|h| RecordedSource {
                    content_hash: h.content_hash.as_b256(),
                    chunk_id: h.chunk_id.as_str().to_owned(),
                    title: h.title.clone(),
                    contributor: h.contributor.address(),
                    shown_bytes: h.text.len(),
                    retrieval_score: f64::from(h.score),
                    locator: h.locator.as_ref().map(super::locators::recorded),
                })
                .collect(),
            method: inputs.method,
            params: self.config().attribution.config.clone(),
            result: RecordedResult {
                scores: a.scores.clone(),
                weights_bps: a.weights_bps.clone(),
                fallback: a.fallback.clone(),
                model_passes: a.model_passes,
            },
            split: RecordedSplit {
                fee: U256::ZERO,
                chunks: Vec::new(),
                rewards: RewardConfig::default(),
            },
        }))
    }

    /// Fills in the split inputs of `record`, stores it durably and returns its hash.
    pub(crate) fn store_record(
        &self,
        mut record: AttributionRecord,
        fee: U256,
        chunks: &[CitedChunk],
    ) -> Result<B256> {
        record.split = RecordedSplit {
            fee,
            chunks: chunks
                .iter()
                .map(|c| (c.contentHash, c.contributor, c.weightBps))
                .collect(),
            rewards: self.config().rewards.clone(),
        };
        if !self.keeps_records() {
            return Ok(B256::ZERO);
        }
        // Beside the engine's journal, or in its database.
        match self.journal_handle() {
            Some(journal) => Ok(journal
                .lock()
                .map_err(|_| Error::Poisoned("journal"))?
                .put_record(&record)?),
            None => Ok(B256::ZERO),
        }
    }
}

/// The receipt's cited chunks from citations sorted as an answer lists them (weight
/// descending, then marker): anonymous chunks (zero contributor) left out, the others'
/// weights renormalised to 10,000 and chunks left at zero dropped.
pub(crate) fn cited_chunks(citations: &[(B256, Address, u32)]) -> Result<Vec<CitedChunk>> {
    let named: Vec<&(B256, Address, u32)> = citations
        .iter()
        .filter(|(_, c, _)| *c != Address::ZERO)
        .collect();
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let bps = tribute_attribution::to_bps(
        &named
            .iter()
            .map(|(_, _, w)| f64::from(*w))
            .collect::<Vec<_>>(),
    )?;
    Ok(named
        .iter()
        .zip(bps)
        .filter(|(_, w)| *w > 0)
        .map(|((hash, contributor, _), w)| CitedChunk {
            contentHash: *hash,
            contributor: *contributor,
            weightBps: w as u16,
        })
        .collect())
}
