//! The reconcile pass of [`settle_journal`](super::settle_journal): the journal's recent
//! confirmations compared with the chain, so that a reorg that drops a settlement never
//! leaves its receipts confirmed but unpaid.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256};

use super::SettleError;
use crate::chain::{ChainError, LedgerClient};
use crate::journal::{JournalBackend, ReceiptState, StateKind};

/// What [`reconcile`] changed.
#[derive(Debug, Default)]
pub(super) struct Reconciled {
    /// Roots the chain no longer holds: their receipts are `batched` again.
    pub(super) reorged: Vec<B256>,
    /// Roots the chain holds in another transaction or block: re-confirmed there.
    pub(super) moved: Vec<B256>,
    /// Roots the ledger holds settled but whose event the node lacks: left confirmed, with
    /// why.
    pub(super) unresolved: Vec<(B256, String)>,
}

/// Re-checks `payer`'s batches confirmed in the last `window` blocks (or in blocks past the
/// node's head, when the chain got shorter) against the ledger's `BatchSettled` events.
pub(super) async fn reconcile(
    client: &LedgerClient,
    journal: &mut dyn JournalBackend,
    payer: Address,
    window: u64,
) -> Result<Reconciled, SettleError> {
    let head = client.block_number().await?;
    let from = head.saturating_sub(window.saturating_sub(1));
    // root → (transaction, block, receipts), as the journal has them.
    let mut confirmed: BTreeMap<B256, (B256, u64, Vec<B256>)> = BTreeMap::new();
    for (r, state) in journal.list(Some(StateKind::Confirmed))? {
        if let ReceiptState::Confirmed {
            batch_id,
            tx_hash,
            block,
        } = state
            && r.receipt.payer == payer
            && block >= from
        {
            confirmed
                .entry(batch_id)
                .or_insert((tx_hash, block, Vec::new()))
                .2
                .push(r.receipt.receiptId);
        }
    }
    let mut found = Reconciled::default();
    if confirmed.is_empty() {
        return Ok(found);
    }
    let on_chain = client.settled_roots_since(payer, from).await?;
    for (root, (tx, block, ids)) in confirmed {
        let now = match on_chain.get(&root) {
            Some(&(tx, block)) => Some((tx, block)),
            // Not in the window's events: the ledger's own record decides (a reorg deeper
            // than the window that re-mined it early, or a node that lost the event).
            None => match client.settlement_of(payer, root).await {
                Ok(s) => s.map(|s| (s.tx_hash, s.block_number.unwrap_or_default())),
                Err(e @ ChainError::SettledWithoutEvent { .. }) => {
                    tracing::warn!(%root, error = %e, "a confirmed settlement lost its event; left confirmed");
                    found.unresolved.push((root, e.to_string()));
                    continue;
                }
                Err(e) => return Err(e.into()),
            },
        };
        match now {
            Some(now) if now == (tx, block) => {}
            Some((tx_hash, block)) => {
                tracing::warn!(%root, %tx_hash, block, "a confirmed settlement moved to another block; re-confirmed there");
                journal.set_state(
                    &ids,
                    ReceiptState::Confirmed {
                        batch_id: root,
                        tx_hash,
                        block,
                    },
                )?;
                found.moved.push(root);
            }
            None => {
                tracing::warn!(%root, %tx, block, receipts = ids.len(), "a confirmed settlement is gone from the chain (reorg); settling its batch again");
                journal.set_state(&ids, ReceiptState::Batched { batch_id: root })?;
                found.reorged.push(root);
            }
        }
    }
    Ok(found)
}
