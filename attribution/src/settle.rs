//! From the journal to the chain: the payouts of a batch of receipts, and (with the
//! `onchain` feature) [`settle_journal`], which settles a journal's pending receipts in
//! Merkle batches and records every step in the journal.
//!
//! # Payouts
//!
//! [`batch_payouts`] splits each receipt's fee with a [`RewardConfig`] ([`crate::split`]):
//! its cited chunks' contributors by their weights, its adapters' owners by their merge
//! weights, the model's owner (the treasury for a zero model id: a retrieval-only receipt)
//! and the treasury. Owners of model and adapter ids come from
//! an [`Owners`] table (filled from the ledger's registry by [`settle_journal`]); an id
//! without an owner is paid to [`Owners::fallback`] when one is set and is an error
//! otherwise, so nobody's share is silently redistributed. The shares are summed per
//! address over the batch (zero amounts dropped), sorted by address: Σ payouts = Σ fees
//! exactly.
//!
//! # Settling a journal
//!
//! For the payer's receipts, [`settle_journal`]:
//! 1. **resumes** unfinished batches first (receipts left `batched` or `submitted` by an
//!    earlier run that stopped): a batch whose root is settled on chain is marked
//!    `confirmed`; any other is authorised and sent again with the same receipts, so the
//!    same root, which the contract settles at most once;
//! 2. takes `pending` receipts in journal order, `batch_size` at a time, and for each batch:
//!    computes payouts and root (off chain), reads the batch nonce, signs and **simulates**
//!    `settleBatch` (an unreachable node, a small deposit or a bad signature stop here and
//!    the receipts stay `pending`), marks the receipts `batched` (root), sends, marks them
//!    `submitted` (tx), waits for the receipt and marks them `confirmed` (block).
//!
//! Each state is synced to the journal before the next step, so a crash at any point
//! leaves receipts in a state from which the next run finishes the job, never paying twice.
//!
//! The journal is any [`JournalBackend`](crate::journal::JournalBackend): receipts and
//! unfinished batches are *claimed* before they are worked on, so several settlers may run
//! at once on one shared (Postgres) journal, each taking other receipts; a settler that
//! dies leaves its claim to run out (the lease), and the next run resumes its batch.
//! Receipts that do not verify on this ledger (signed for another chain or contract) and
//! receipts with a zero fee are left pending and reported in [`SettleReport::skipped`].

use std::collections::{BTreeMap, HashMap};

use alloy_primitives::{Address, B256, U256};

use crate::receipt::SignedReceipt;
use crate::split::{RewardConfig, SplitError, SplitRequest};

/// Why a batch could not be settled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// A model id has no owner and no fallback is set.
    #[error(
        "model {0} has no registered owner on the ledger; register it (tribute chain register-model) or set a fallback owner"
    )]
    UnknownModel(B256),
    /// An adapter id has no owner and no fallback is set.
    #[error(
        "adapter {0} has no registered owner on the ledger; register it (tribute chain register-adapter) or set a fallback owner"
    )]
    UnknownAdapter(B256),
    /// A receipt's fee could not be split.
    #[error("receipt {receipt_id}: {source}")]
    Split {
        /// The receipt.
        receipt_id: B256,
        /// Why.
        source: SplitError,
    },
    /// The batch has no payouts (every fee is zero).
    #[error("the batch pays nothing: every receipt's fee is zero")]
    NothingToPay,
    /// The batch size is zero.
    #[error("the batch size must be at least 1")]
    BatchSize,
    /// The journal refused a state change or could not be read.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The chain refused or could not be reached.
    #[cfg(feature = "onchain")]
    #[error(transparent)]
    Chain(#[from] crate::chain::ChainError),
}

/// The owners of model and adapter ids, and the treasury.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    /// The protocol treasury (paid the treasury share and the rounding dust).
    pub treasury: Address,
    /// Model id → owner.
    pub models: HashMap<B256, Address>,
    /// Adapter id → owner.
    pub adapters: HashMap<B256, Address>,
    /// Paid the share of a model or adapter id without an owner; `None` makes such an id an
    /// error.
    pub fallback: Option<Address>,
}

impl Owners {
    /// No owners yet; `treasury` gets the treasury share.
    pub fn new(treasury: Address) -> Self {
        Owners {
            treasury,
            models: HashMap::new(),
            adapters: HashMap::new(),
            fallback: None,
        }
    }

    fn model(&self, id: B256) -> Result<Address, SettleError> {
        self.models
            .get(&id)
            .copied()
            .or(self.fallback)
            .ok_or(SettleError::UnknownModel(id))
    }

    fn adapter(&self, id: B256) -> Result<Address, SettleError> {
        self.adapters
            .get(&id)
            .copied()
            .or(self.fallback)
            .ok_or(SettleError::UnknownAdapter(id))
    }
}

/// The payouts of a batch: each receipt's fee split with `rewards`, summed per address,
/// zero amounts dropped, sorted by address. Σ payouts = Σ fees (receipts with a zero fee
/// add nothing).
pub fn batch_payouts(
    receipts: &[SignedReceipt],
    rewards: &RewardConfig,
    owners: &Owners,
) -> Result<Vec<(Address, U256)>, SettleError> {
    let mut totals: BTreeMap<Address, U256> = BTreeMap::new();
    for signed in receipts {
        let r = &signed.receipt;
        if r.fee.is_zero() {
            continue;
        }
        // A zero model id means no model was used (a retrieval-only receipt): the model
        // owner's share goes to the treasury.
        let model_owner = if r.modelId.is_zero() {
            owners.treasury
        } else {
            owners.model(r.modelId)?
        };
        let mut request = SplitRequest::builder(r.fee)
            .model_owner(model_owner)
            .treasury(owners.treasury);
        for c in &r.chunks {
            request = request.contributor(c.contributor, u32::from(c.weightBps));
        }
        for a in &r.adapters {
            request = request.adapter(
                owners.adapter(a.adapterId)?,
                f64::from(a.weightMicros) / 1e6,
            );
        }
        let split_err = |source| SettleError::Split {
            receipt_id: r.receiptId,
            source,
        };
        let split = rewards
            .split(&request.build().map_err(split_err)?)
            .map_err(split_err)?;
        for p in split.payouts {
            let t = totals.entry(p.address).or_default();
            *t = t.saturating_add(p.amount);
        }
    }
    let payouts: Vec<(Address, U256)> = totals.into_iter().filter(|(_, a)| !a.is_zero()).collect();
    if payouts.is_empty() {
        return Err(SettleError::NothingToPay);
    }
    Ok(payouts)
}

#[cfg(feature = "onchain")]
pub use onchain::*;

#[cfg(feature = "onchain")]
mod onchain {
    use std::collections::HashSet;

    use alloy_primitives::{Address, B256};

    use super::{Owners, SettleError, batch_payouts};
    use crate::chain::{BatchTree, ChainError, LedgerClient, Settlement};
    use crate::journal::{JournalBackend, ReceiptState, StateKind};
    use crate::receipt::{PayerKey, SignedReceipt};
    use crate::split::RewardConfig;

    /// How [`settle_journal`] batches and pays.
    #[derive(Debug, Clone)]
    pub struct SettleOptions {
        /// Receipts per Merkle batch (default 100).
        pub batch_size: usize,
        /// Settle at most this many new batches in this call (`None`: all pending).
        pub max_batches: Option<usize>,
        /// The split policy and governance.
        pub rewards: RewardConfig,
        /// The treasury.
        pub treasury: Address,
        /// Paid the share of model or adapter ids that have no owner on the ledger; `None`
        /// makes them an error ([`SettleError::UnknownModel`]).
        pub fallback_owner: Option<Address>,
    }

    impl SettleOptions {
        /// Batches of 100, the default policy, this treasury, no fallback owner.
        pub fn new(treasury: Address) -> Self {
            SettleOptions {
                batch_size: 100,
                max_batches: None,
                rewards: RewardConfig::default(),
                treasury,
                fallback_owner: None,
            }
        }
    }

    /// One batch that [`settle_journal`] finished.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct BatchOutcome {
        /// The settlement (with `already_settled: true` when an earlier run had settled it).
        pub settlement: Settlement,
        /// How many receipts.
        pub receipts: usize,
        /// Whether it was an unfinished batch of an earlier run.
        pub resumed: bool,
    }

    /// What [`settle_journal`] did.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct SettleReport {
        /// The batches confirmed by this call, in order.
        pub batches: Vec<BatchOutcome>,
        /// Pending receipts left alone because they do not verify on this ledger, with why.
        pub skipped: Vec<(B256, String)>,
        /// Pending receipts of other payers (left alone).
        pub other_payers: usize,
        /// Pending receipts of this payer still waiting (beyond `max_batches`).
        pub still_pending: usize,
    }

    impl SettleReport {
        /// Receipts confirmed by this call.
        pub fn confirmed_receipts(&self) -> usize {
            self.batches.iter().map(|b| b.receipts).sum()
        }

        /// Gas used by this call's settlement transactions.
        pub fn gas_used(&self) -> u64 {
            self.batches
                .iter()
                .filter(|b| !b.settlement.already_settled)
                .map(|b| b.settlement.gas_used)
                .sum()
        }
    }

    /// Settles `payer`'s receipts in `journal` on `client`'s ledger (see the module
    /// documentation). Stops at the first batch that fails, with its error; batches settled
    /// before it stay confirmed in the journal and the failed one's receipts keep the state
    /// they reached (pending when nothing was sent), their claims given back.
    pub async fn settle_journal(
        client: &LedgerClient,
        journal: &mut dyn JournalBackend,
        payer: &PayerKey,
        options: &SettleOptions,
    ) -> Result<SettleReport, SettleError> {
        if options.batch_size == 0 {
            return Err(SettleError::BatchSize);
        }
        let key = payer.address();
        let ledger = *client.ledger();
        let mut report = SettleReport::default();
        let mut owners = Owners::new(options.treasury);
        owners.fallback = options.fallback_owner;
        // Why a pending receipt cannot be settled on this ledger, if it cannot.
        let unsettleable = |r: &SignedReceipt| -> Option<String> {
            if r.receipt.fee.is_zero() {
                return Some("its fee is zero: nothing to settle".into());
            }
            r.verify(&ledger).err().map(|e| e.to_string())
        };

        // 1. Unfinished batches of earlier runs (or of settlers whose lease ran out).
        for (batch_id, receipts) in journal.claim_unfinished(key)? {
            let outcome =
                settle_claimed(client, journal, payer, options, &mut owners, &receipts).await?;
            if outcome.settlement.root != batch_id {
                tracing::warn!(
                    %batch_id, root = %outcome.settlement.root,
                    "a resumed batch settled under another root than it was journaled with"
                );
            }
            report.batches.push(BatchOutcome {
                resumed: true,
                ..outcome
            });
        }

        // 2. Pending receipts, in journal order, claimed a batch at a time; those that
        //    cannot be settled here stay claimed (so they are not handed out again) until
        //    the end.
        let mut skipped: Vec<B256> = Vec::new();
        let mut done = 0;
        while options.max_batches.is_none_or(|m| done < m) {
            let mut batch: Vec<SignedReceipt> = Vec::new();
            while batch.len() < options.batch_size {
                let claimed = match journal.claim_pending(key, options.batch_size - batch.len()) {
                    Ok(c) => c,
                    Err(e) => {
                        let held: Vec<B256> = batch.iter().map(|r| r.receipt.receiptId).collect();
                        release_quietly(journal, &held);
                        release_quietly(journal, &skipped);
                        return Err(e.into());
                    }
                };
                if claimed.is_empty() {
                    break;
                }
                for r in claimed {
                    match unsettleable(&r) {
                        Some(why) => {
                            skipped.push(r.receipt.receiptId);
                            report.skipped.push((r.receipt.receiptId, why));
                        }
                        None => batch.push(r),
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            match settle_claimed(client, journal, payer, options, &mut owners, &batch).await {
                Ok(outcome) => report.batches.push(outcome),
                Err(e) => {
                    release_quietly(journal, &skipped);
                    return Err(e);
                }
            }
            done += 1;
        }

        // 3. What is left: other payers' receipts, and this payer's beyond `max_batches`
        //    (or held by another settler).
        let skipped_set: HashSet<B256> = skipped.iter().copied().collect();
        for (r, _) in journal.list(Some(StateKind::Pending))? {
            if r.receipt.payer != key {
                report.other_payers += 1;
            } else if !skipped_set.contains(&r.receipt.receiptId) {
                match unsettleable(&r) {
                    Some(why) => report.skipped.push((r.receipt.receiptId, why)),
                    None => report.still_pending += 1,
                }
            }
        }
        journal.release(&skipped)?;
        Ok(report)
    }

    /// Gives back claims after a failure; a failure to do so only delays other settlers
    /// until the lease runs out.
    fn release_quietly(journal: &mut dyn JournalBackend, ids: &[B256]) {
        if let Err(e) = journal.release(ids) {
            tracing::warn!(error = %e, "could not release claimed receipts; their lease will run out");
        }
    }

    /// [`settle_one`] on claimed receipts, giving the claim back if it fails.
    async fn settle_claimed(
        client: &LedgerClient,
        journal: &mut dyn JournalBackend,
        payer: &PayerKey,
        options: &SettleOptions,
        owners: &mut Owners,
        receipts: &[SignedReceipt],
    ) -> Result<BatchOutcome, SettleError> {
        let result = settle_one(client, journal, payer, options, owners, receipts).await;
        if result.is_err() {
            let ids: Vec<B256> = receipts.iter().map(|r| r.receipt.receiptId).collect();
            release_quietly(journal, &ids);
        }
        result
    }

    /// Looks up the owners of ids not yet known.
    async fn learn_owners(
        client: &LedgerClient,
        owners: &mut Owners,
        receipts: &[SignedReceipt],
    ) -> Result<(), ChainError> {
        let models: HashSet<B256> = receipts.iter().map(|r| r.receipt.modelId).collect();
        for id in models {
            if !owners.models.contains_key(&id)
                && let Some(owner) = client.model_owner(id).await?
            {
                owners.models.insert(id, owner);
            }
        }
        let adapters: HashSet<B256> = receipts
            .iter()
            .flat_map(|r| r.receipt.adapters.iter().map(|a| a.adapterId))
            .collect();
        for id in adapters {
            if !owners.adapters.contains_key(&id)
                && let Some(owner) = client.adapter_owner(id).await?
            {
                owners.adapters.insert(id, owner);
            }
        }
        Ok(())
    }

    async fn settle_one(
        client: &LedgerClient,
        journal: &mut dyn JournalBackend,
        payer: &PayerKey,
        options: &SettleOptions,
        owners: &mut Owners,
        receipts: &[SignedReceipt],
    ) -> Result<BatchOutcome, SettleError> {
        let ids: Vec<B256> = receipts.iter().map(|r| r.receipt.receiptId).collect();
        let confirm = |journal: &mut dyn JournalBackend, s: &Settlement| {
            journal.set_state(
                &ids,
                ReceiptState::Confirmed {
                    batch_id: s.root,
                    tx_hash: s.tx_hash,
                    block: s.block_number.unwrap_or_default(),
                },
            )
        };
        let outcome = |settlement: Settlement| BatchOutcome {
            settlement,
            receipts: receipts.len(),
            resumed: false,
        };
        // Already settled (by an earlier run whose confirmation was not journaled)?
        let root = BatchTree::of_receipts(receipts, client.ledger())
            .ok_or(ChainError::EmptyBatch)?
            .root();
        if let Some(done) = client.settlement_of(root).await? {
            confirm(journal, &done)?;
            return Ok(outcome(done));
        }
        learn_owners(client, owners, receipts).await?;
        let payouts = batch_payouts(receipts, &options.rewards, owners)?;
        let batch = client.prepare(payer.address(), receipts, &payouts)?;
        let authorized = match client.authorize(payer, batch).await {
            Ok(a) => a,
            Err(ChainError::Replay) => {
                // Settled between our check and the simulation (another settler).
                let done = client
                    .settlement_of(root)
                    .await?
                    .ok_or(ChainError::Replay)?;
                confirm(journal, &done)?;
                return Ok(outcome(done));
            }
            Err(e) => return Err(e.into()),
        };
        journal.set_state(&ids, ReceiptState::Batched { batch_id: root })?;
        let tx = client.send_batch(&authorized).await?;
        journal.set_state(
            &ids,
            ReceiptState::Submitted {
                batch_id: root,
                tx_hash: tx,
            },
        )?;
        let settlement = client.wait_settlement(&authorized, tx).await?;
        confirm(journal, &settlement)?;
        Ok(outcome(settlement))
    }
}
