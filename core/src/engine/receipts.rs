//! Receipts: signing and journaling them, reading the journal, settling on chain.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy_primitives::{B256, keccak256};
use tribute_attribution::journal::{ReceiptState, StateKind};
use tribute_attribution::receipt::{
    AdapterUse, RECEIPT_VERSION, SignedReceipt, UsageReceipt, named_id,
};

use super::{AskOptions, Citation, Engine};

/// A journaled receipt and where it is in settlement.
#[derive(Debug, Clone, PartialEq)]
pub struct JournaledReceipt {
    /// The signed receipt.
    pub receipt: SignedReceipt,
    /// Its settlement state.
    pub state: ReceiptState,
}
use crate::audit::cited_chunks;
use crate::error::{Error, Result};

impl Engine {
    pub(super) fn sign_receipt(
        &self,
        question: &str,
        answer: &str,
        options: &AskOptions,
        citations: &[Citation],
    ) -> Result<(Option<SignedReceipt>, Option<String>)> {
        self.sign_receipt_for(self.inner.model.id, question, answer, options, citations)
    }

    /// Signs and journals the receipt of an answer, or says why there is none.
    pub(super) fn sign_receipt_for(
        &self,
        model_id: B256,
        question: &str,
        answer: &str,
        options: &AskOptions,
        citations: &[Citation],
    ) -> Result<(Option<SignedReceipt>, Option<String>)> {
        self.sign_receipt_recorded(model_id, question, answer, options, citations, None)
    }

    /// [`Engine::sign_receipt_for`] committing to an attribution record (stored durably
    /// beside the journal first; see `tribute_attribution::record`).
    pub(super) fn sign_receipt_recorded(
        &self,
        model_id: B256,
        question: &str,
        answer: &str,
        options: &AskOptions,
        citations: &[Citation],
        record: Option<tribute_attribution::record::AttributionRecord>,
    ) -> Result<(Option<SignedReceipt>, Option<String>)> {
        let inner = &self.inner;
        let Some(key) = &inner.key else {
            return Ok((
                None,
                Some(format!(
                    "no signing key: set {} (hex) or a keystore to sign receipts",
                    inner.config.receipts.key_env
                )),
            ));
        };
        let Some(ledger) = inner.config.receipts.ledger else {
            return Ok((
                None,
                Some("no ledger configured (receipts.ledger: chain id and contract)".into()),
            ));
        };
        // Chunks with a contributor; weights renormalised over them (anonymous chunks' share
        // goes to the contributor pool's fallback, the treasury, at settlement).
        let mut cited = Vec::with_capacity(citations.len());
        for c in citations {
            cited.push((
                c.content_hash.parse().map_err(|_| {
                    Error::Task(format!("content hash {:?} does not parse", c.content_hash))
                })?,
                c.contributor.parse().map_err(|_| {
                    Error::Task(format!("contributor {:?} does not parse", c.contributor))
                })?,
                c.weight_bps,
            ));
        }
        let chunks = cited_chunks(&cited)?;
        let fee = options.fee.unwrap_or(inner.config.receipts.fee_wei);
        // The record is durable before the receipt that names it is signed and journaled.
        let attribution_hash = match record {
            Some(record) => self.store_record(record, fee, &chunks)?,
            None => B256::ZERO,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let nonce = inner.nonce.fetch_add(1, Ordering::Relaxed);
        let query_hash = keccak256(question.as_bytes());
        let answer_hash = keccak256(answer.as_bytes());
        let mut id_input = Vec::with_capacity(128);
        id_input.extend_from_slice(key.address().as_slice());
        id_input.extend_from_slice(&nonce.to_be_bytes());
        id_input.extend_from_slice(&now.as_nanos().to_be_bytes());
        id_input.extend_from_slice(&std::process::id().to_be_bytes());
        id_input.extend_from_slice(query_hash.as_slice());
        id_input.extend_from_slice(answer_hash.as_slice());
        let receipt = UsageReceipt {
            version: RECEIPT_VERSION,
            receiptId: keccak256(&id_input),
            payer: key.address(),
            servingNode: inner
                .config
                .receipts
                .serving_node
                .unwrap_or_else(|| key.address()),
            modelId: model_id,
            adapters: options
                .adapters
                .iter()
                .map(|(id, w)| AdapterUse {
                    adapterId: named_id(id),
                    weightMicros: (f64::from(*w) * 1e6).round() as i32,
                })
                .collect(),
            queryHash: query_hash,
            answerHash: answer_hash,
            chunks,
            fee,
            nonce,
            timestamp: now.as_secs(),
            attributionHash: attribution_hash,
        };
        let signed = key.sign(receipt, &ledger)?;
        if let Some(journal) = &inner.journal {
            journal
                .lock()
                .map_err(|_| Error::Poisoned("journal"))?
                .append(&signed)?;
        }
        Ok((Some(signed), None))
    }

    /// The journaled receipts and their settlement states (optionally one state only).
    pub fn receipts(&self, state: Option<StateKind>) -> Result<Vec<JournaledReceipt>> {
        let Some(journal) = &self.inner.journal else {
            return Ok(Vec::new());
        };
        let j = journal.lock().map_err(|_| Error::Poisoned("journal"))?;
        Ok(j.list(state)?
            .into_iter()
            .map(|(receipt, state)| JournaledReceipt { receipt, state })
            .collect())
    }

    /// Receipt counts by state.
    pub fn receipt_stats(&self) -> Result<tribute_attribution::journal::Stats> {
        let Some(journal) = &self.inner.journal else {
            return Ok(Default::default());
        };
        let j = journal.lock().map_err(|_| Error::Poisoned("journal"))?;
        Ok(j.summary()?)
    }

    /// Settles the journal's pending receipts on the configured chain (`[chain]` and
    /// `receipts.ledger`), in batches; see `tribute_attribution::settle`. Receipts stay
    /// pending when the chain is down.
    #[cfg(feature = "onchain")]
    pub fn settle_blocking(&self) -> Result<tribute_attribution::settle::SettleReport> {
        use tribute_attribution::chain::LedgerClient;
        use tribute_attribution::settle::{SettleOptions, settle_journal};
        let inner = &self.inner;
        let chain = inner.config.chain.as_ref().ok_or_else(|| {
            Error::NoChain("set [chain] (rpc) in the config to settle receipts".into())
        })?;
        let ledger = inner.config.receipts.ledger.ok_or_else(|| {
            Error::NoChain("set receipts.ledger (chain id and contract) to settle".into())
        })?;
        let key = inner
            .key
            .as_ref()
            .ok_or_else(|| Error::NoChain("settling needs the payer's signing key".into()))?;
        let journal = inner
            .journal
            .as_ref()
            .ok_or_else(|| Error::NoChain("settling needs a receipt journal".into()))?;
        let mut options = SettleOptions::new(chain.treasury.unwrap_or(key.address()));
        options.fallback_owner = chain.fallback_owner;
        options.batch_size = chain.batch_size.max(1);
        options.confirmations = chain.confirmations.max(1);
        options.reconcile_blocks = chain.reconcile_blocks;
        options.rewards = inner.config.rewards.clone();
        // Trained adapters pay their data's contributors by the manifest beside them.
        for a in &inner.config.adapters {
            if let Some(m) = tribute_attribution::provenance::verified_manifest(&a.path)? {
                options.manifests.insert(named_id(&a.id), m);
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Task(format!("tokio runtime: {e}")))?;
        let mut journal = journal.lock().map_err(|_| Error::Poisoned("journal"))?;
        let timeout = std::time::Duration::from_secs(chain.timeout_secs.max(1));
        runtime.block_on(async {
            let client = LedgerClient::connect(&chain.rpc, key.signer().clone(), ledger)
                .await
                .map_err(tribute_attribution::settle::SettleError::from)?
                .with_timeout(timeout);
            Ok(settle_journal(&client, &mut **journal, key, &options).await?)
        })
    }

    /// [`Engine::settle_blocking`] on tokio's blocking pool.
    #[cfg(feature = "onchain")]
    pub async fn settle(&self) -> Result<tribute_attribution::settle::SettleReport> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.settle_blocking())
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }
}
