//! From the journal to the chain: the payouts of a batch of receipts, and (with the
//! `onchain` feature) [`settle_journal`], which settles a journal's pending receipts in
//! Merkle batches and records every step in the journal.
//!
//! # Payouts
//!
//! [`batch_payouts`] splits each receipt's fee with a [`RewardConfig`] ([`crate::split`]):
//! its cited chunks' contributors by their weights, its adapters' owners by their merge
//! weights, the model's owner (the treasury for a zero model id: a retrieval-only receipt)
//! and the treasury. A fine-tuned adapter registered with a provenance manifest
//! (`registerTrainedAdapter`) shares its slice with the contributors of its training data,
//! pro rata by training tokens ([`Owners::training`], [`crate::split`]). Owners of model and
//! adapter ids come from
//! an [`Owners`] table (filled from the ledger's registry by [`settle_journal`]); an id
//! without an owner is paid to [`Owners::fallback`] when one is set and is an error
//! otherwise, so nobody's share is silently redistributed. The shares are summed per
//! address over the batch (zero amounts dropped), sorted by address: Σ payouts = Σ fees
//! exactly.
//!
//! # Settling a journal
//!
//! For the payer's receipts, [`settle_journal`]:
//! 0. **reconciles** the batches it confirmed in the last
//!    [`reconcile_blocks`](SettleOptions::reconcile_blocks) blocks with the ledger's
//!    `BatchSettled` events: a root the chain no longer holds (a reorg dropped its block)
//!    goes back to `batched`, so step 1 settles it again under the same root (the payer's
//!    on-chain nonce was rolled back with it); one the chain holds in another transaction
//!    or block is confirmed there;
//! 1. **resumes** unfinished batches first (receipts left `batched` or `submitted` by an
//!    earlier run that stopped): a batch whose root is settled on chain is marked
//!    `confirmed`; any other is authorised and sent again with the same receipts, so the
//!    same root, which the contract settles at most once;
//! 2. takes `pending` receipts in journal order, `batch_size` at a time, and for each batch:
//!    computes payouts and root (off chain), reads the batch nonce, signs and **simulates**
//!    `settleBatch` (an unreachable node, a small deposit or a bad signature stop here and
//!    the receipts stay `pending`), marks the receipts `batched` (root), sends, marks them
//!    `submitted` (tx), waits for the receipt and marks them `confirmed` (block) once the
//!    block is [`confirmations`](SettleOptions::confirmations) deep (default 1); a
//!    shallower settlement stays `submitted` and a later run confirms it, or sends it again
//!    if a reorg dropped it meanwhile.
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
use crate::split::{RewardConfig, SplitError, SplitRequest, TrainingShare};

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
    /// A fine-tuned adapter is registered with a provenance manifest the settler was not
    /// given: its training contributors could not be paid.
    #[error(
        "adapter {adapter} is registered with provenance manifest {manifest_hash}, which this settler was not given: pass the adapter's directory (its provenance.json) so the contributors of its training data are paid"
    )]
    ManifestUnavailable {
        /// The adapter id.
        adapter: B256,
        /// The manifest hash registered on the ledger.
        manifest_hash: B256,
    },
    /// The provenance manifest given for an adapter is not the one registered with it.
    #[error(
        "adapter {adapter} is registered with provenance manifest {registered}, but the manifest given for it hashes to {given}: it belongs to another adapter or was changed after registration"
    )]
    ManifestMismatch {
        /// The adapter id.
        adapter: B256,
        /// The manifest hash registered on the ledger.
        registered: B256,
        /// The hash of the manifest the settler was given.
        given: B256,
    },
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
    /// Trained adapter id → the training tokens of each contributor of its data (from the
    /// provenance manifest registered with it): the adapter's slice is split between its
    /// owner and them. Adapters not listed pay their owner alone.
    pub training: HashMap<B256, Vec<TrainingShare>>,
}

impl Owners {
    /// No owners yet; `treasury` gets the treasury share.
    pub fn new(treasury: Address) -> Self {
        Owners {
            treasury,
            models: HashMap::new(),
            adapters: HashMap::new(),
            fallback: None,
            training: HashMap::new(),
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
            let owner = owners.adapter(a.adapterId)?;
            let weight = f64::from(a.weightMicros) / 1e6;
            request = match owners.training.get(&a.adapterId) {
                Some(training) => request.trained_adapter(owner, weight, training.iter().copied()),
                None => request.adapter(owner, weight),
            };
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
mod onchain;
#[cfg(feature = "onchain")]
mod reconcile;

#[cfg(feature = "onchain")]
pub use onchain::*;
