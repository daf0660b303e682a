//! Settling a journal on chain ([`settle_journal`]); see the module above for the steps.

use std::collections::{HashMap, HashSet};

use alloy_primitives::{Address, B256};

use super::reconcile::reconcile;
use super::{Owners, SettleError, batch_payouts};
use crate::chain::{BatchTree, ChainError, LedgerClient, Settlement};
use crate::journal::{JournalBackend, ReceiptState, StateKind};
use crate::provenance::ProvenanceManifest;
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
    /// How deep a settlement's block must be (itself included) before its receipts are
    /// `confirmed` (default 1: once mined). A shallower one stays `submitted`, reported in
    /// [`SettleReport::awaiting`]; a later run confirms it, or sends it again when a reorg
    /// dropped it.
    pub confirmations: u64,
    /// How many recent blocks the reconcile pass re-checks (default 128; 0: none): receipts
    /// confirmed in them whose settlement the chain no longer holds (a reorg) are put back
    /// in their batch and settled again; one moved to another block is re-confirmed there.
    pub reconcile_blocks: u64,
    /// The provenance manifests of fine-tuned adapters, by adapter id (`named_id` of its
    /// name): an adapter registered with a manifest hash (`registerTrainedAdapter`) shares
    /// its slice with the manifest's training contributors. Its manifest must be here and
    /// hash to the registered one ([`SettleError::ManifestUnavailable`],
    /// [`SettleError::ManifestMismatch`]); the ledger's registry decides, so a manifest
    /// given for an adapter registered without one is not used.
    pub manifests: HashMap<B256, ProvenanceManifest>,
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
            confirmations: 1,
            reconcile_blocks: 128,
            manifests: HashMap::new(),
        }
    }
}

/// One batch that [`settle_journal`] settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The settlement (with `already_settled: true` when an earlier run had settled it).
    pub settlement: Settlement,
    /// How many receipts.
    pub receipts: usize,
    /// Whether it was an unfinished batch of an earlier run.
    pub resumed: bool,
    /// Whether its receipts are `confirmed`; `false`: mined, but not yet
    /// [`SettleOptions::confirmations`] deep, so they stay `submitted`.
    pub confirmed: bool,
}

/// What [`settle_journal`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// The batches confirmed by this call, in order.
    pub batches: Vec<BatchOutcome>,
    /// Batches mined but not yet deep enough to confirm (left `submitted`).
    pub awaiting: Vec<BatchOutcome>,
    /// Roots the journal had confirmed that the chain no longer holds (a reorg): put back
    /// in their batch and, unless this call failed, settled again (they are in `batches`
    /// or `awaiting` then).
    pub reorged: Vec<B256>,
    /// Confirmed roots the chain now holds in another transaction or block (re-confirmed
    /// there).
    pub moved: Vec<B256>,
    /// Batches left as they were because they could not be finished, with why
    /// ([`ChainError::SettledWithoutEvent`]); the other batches were settled.
    pub unresolved: Vec<(B256, String)>,
    /// Pending receipts left alone because they do not verify on this ledger, with why.
    pub skipped: Vec<(B256, String)>,
    /// Pending receipts of other payers (left alone).
    pub other_payers: usize,
    /// Pending receipts of this payer still waiting (beyond `max_batches`).
    pub still_pending: usize,
}

impl SettleReport {
    fn push(&mut self, outcome: BatchOutcome) {
        if outcome.confirmed {
            self.batches.push(outcome);
        } else {
            self.awaiting.push(outcome);
        }
    }

    /// Receipts confirmed by this call.
    pub fn confirmed_receipts(&self) -> usize {
        self.batches.iter().map(|b| b.receipts).sum()
    }

    /// Receipts mined but not yet deep enough to confirm.
    pub fn awaiting_receipts(&self) -> usize {
        self.awaiting.iter().map(|b| b.receipts).sum()
    }

    /// Gas used by this call's settlement transactions.
    pub fn gas_used(&self) -> u64 {
        self.batches
            .iter()
            .chain(&self.awaiting)
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

    // 0. Reconcile recent confirmations with the chain: a batch a reorg dropped goes back
    //    to `batched`, so step 1 settles it again.
    if options.reconcile_blocks > 0 {
        let found = reconcile(client, journal, key, options.reconcile_blocks).await?;
        report.reorged = found.reorged;
        report.moved = found.moved;
        report.unresolved = found.unresolved;
    }

    // 1. Unfinished batches of earlier runs (or of settlers whose lease ran out).
    for (batch_id, receipts) in journal.claim_unfinished(key)? {
        let outcome = match settle_claimed(
            client,
            journal,
            payer,
            options,
            &mut owners,
            &receipts,
            true,
        )
        .await
        {
            Ok(outcome) => outcome,
            // One batch the node cannot account for must not hold up the others.
            Err(SettleError::Chain(e @ ChainError::SettledWithoutEvent { .. })) => {
                tracing::warn!(%batch_id, error = %e, "left unresolved");
                report.unresolved.push((batch_id, e.to_string()));
                continue;
            }
            Err(e) => return Err(e),
        };
        if outcome.settlement.root != batch_id {
            tracing::warn!(
                %batch_id, root = %outcome.settlement.root,
                "a resumed batch settled under another root than it was journaled with"
            );
        }
        report.push(outcome);
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
        match settle_claimed(client, journal, payer, options, &mut owners, &batch, false).await {
            Ok(outcome) => report.push(outcome),
            // Fresh receipts whose root the ledger calls settled: stop taking new batches
            // (they would be claimed again), keep what is done.
            Err(SettleError::Chain(e @ ChainError::SettledWithoutEvent { root, .. })) => {
                tracing::warn!(%root, error = %e, "left unresolved");
                report.unresolved.push((root, e.to_string()));
                break;
            }
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
    resumed: bool,
) -> Result<BatchOutcome, SettleError> {
    let result = settle_one(client, journal, payer, options, owners, receipts, resumed).await;
    if result.is_err() {
        let ids: Vec<B256> = receipts.iter().map(|r| r.receipt.receiptId).collect();
        release_quietly(journal, &ids);
    }
    result
}

/// Looks up the owners of ids not yet known, and the training contributors of trained
/// adapters by the manifests registered with them.
async fn learn_owners(
    client: &LedgerClient,
    owners: &mut Owners,
    manifests: &HashMap<B256, ProvenanceManifest>,
    receipts: &[SignedReceipt],
) -> Result<(), SettleError> {
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
        if owners.adapters.contains_key(&id) {
            continue;
        }
        let Some(owner) = client.adapter_owner(id).await? else {
            continue;
        };
        if let Some(registered) = client.adapter_manifest(id).await? {
            let manifest = manifests.get(&id).ok_or(SettleError::ManifestUnavailable {
                adapter: id,
                manifest_hash: registered,
            })?;
            let given = manifest.hash();
            if given != registered {
                return Err(SettleError::ManifestMismatch {
                    adapter: id,
                    registered,
                    given,
                });
            }
            owners.training.insert(id, manifest.training_shares());
        }
        owners.adapters.insert(id, owner);
    }
    Ok(())
}

/// Settles one claimed batch. `resumed`: its receipts are already `batched` or `submitted`
/// under its root (so they never move back to `batched`).
async fn settle_one(
    client: &LedgerClient,
    journal: &mut dyn JournalBackend,
    payer: &PayerKey,
    options: &SettleOptions,
    owners: &mut Owners,
    receipts: &[SignedReceipt],
    resumed: bool,
) -> Result<BatchOutcome, SettleError> {
    let ids: Vec<B256> = receipts.iter().map(|r| r.receipt.receiptId).collect();
    // Already settled (by an earlier run whose confirmation was not journaled)?
    let root = BatchTree::of_receipts(receipts, client.ledger())
        .ok_or(ChainError::EmptyBatch)?
        .root();
    if let Some(done) = client.settlement_of(payer.address(), root).await? {
        return finish(client, journal, options, &ids, done, resumed).await;
    }
    learn_owners(client, owners, &options.manifests, receipts).await?;
    let payouts = batch_payouts(receipts, &options.rewards, owners)?;
    let batch = client.prepare(payer.address(), receipts, &payouts)?;
    let authorized = match client.authorize(payer, batch).await {
        Ok(a) => a,
        Err(ChainError::Replay) => {
            // Settled between our check and the simulation (another settler). Gone again
            // by now (a reorg)? Then the Replay stands and a later run settles it.
            let done = client
                .settlement_of(payer.address(), root)
                .await?
                .ok_or(ChainError::Replay)?;
            return finish(client, journal, options, &ids, done, resumed).await;
        }
        Err(e) => return Err(e.into()),
    };
    if !resumed {
        journal.set_state(&ids, ReceiptState::Batched { batch_id: root })?;
    }
    let tx = client.send_batch(&authorized).await?;
    journal.set_state(
        &ids,
        ReceiptState::Submitted {
            batch_id: root,
            tx_hash: tx,
        },
    )?;
    let settlement = client.wait_settlement(&authorized, tx).await?;
    finish(client, journal, options, &ids, settlement, resumed).await
}

/// Journals a mined settlement: `confirmed` once its block is [`SettleOptions::confirmations`]
/// deep, `submitted` in its transaction until then.
async fn finish(
    client: &LedgerClient,
    journal: &mut dyn JournalBackend,
    options: &SettleOptions,
    ids: &[B256],
    settlement: Settlement,
    resumed: bool,
) -> Result<BatchOutcome, SettleError> {
    let block = settlement.block_number.unwrap_or_default();
    let confirmed = options.confirmations <= 1
        || client.block_number().await?.saturating_sub(block) + 1 >= options.confirmations;
    let state = if confirmed {
        ReceiptState::Confirmed {
            batch_id: settlement.root,
            tx_hash: settlement.tx_hash,
            block,
        }
    } else {
        ReceiptState::Submitted {
            batch_id: settlement.root,
            tx_hash: settlement.tx_hash,
        }
    };
    journal.set_state(ids, state)?;
    if !confirmed {
        // A later call (in this process too) must be able to claim it again.
        release_quietly(journal, ids);
    }
    Ok(BatchOutcome {
        settlement,
        receipts: ids.len(),
        resumed,
        confirmed,
    })
}
