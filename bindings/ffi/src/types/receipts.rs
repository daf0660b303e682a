//! The receipt journal and settlement: receipt states, counts and settlement reports.

use std::sync::Arc;

use tribute::attribution::receipt::Ledger as RustLedger;

use crate::receipt::Receipt;
use crate::types::count;

/// Where a journaled receipt is in settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ReceiptState {
    /// Journaled, not yet in a batch.
    Pending,
    /// In a Merkle batch, not yet sent.
    Batched,
    /// Its batch was sent to the chain.
    Submitted,
    /// Its batch's settlement transaction was mined.
    Confirmed,
}

impl From<ReceiptState> for tribute::attribution::journal::StateKind {
    fn from(s: ReceiptState) -> Self {
        use tribute::attribution::journal::StateKind;
        match s {
            ReceiptState::Pending => StateKind::Pending,
            ReceiptState::Batched => StateKind::Batched,
            ReceiptState::Submitted => StateKind::Submitted,
            ReceiptState::Confirmed => StateKind::Confirmed,
        }
    }
}

/// A journaled receipt and its settlement state.
#[derive(Debug, Clone, uniffi::Record)]
pub struct JournaledReceipt {
    /// The receipt.
    pub receipt: Arc<Receipt>,
    /// Its state.
    pub state: ReceiptState,
    /// Its batch (0x-hex), once batched.
    pub batch_id: Option<String>,
    /// The settlement transaction (0x-hex), once submitted.
    pub tx_hash: Option<String>,
    /// The block its settlement was mined in, once confirmed.
    pub block: Option<u64>,
}

impl JournaledReceipt {
    pub(crate) fn new(
        r: tribute::attribution::receipt::SignedReceipt,
        s: tribute::attribution::journal::ReceiptState,
        ledger: Option<RustLedger>,
    ) -> Self {
        use tribute::attribution::journal::{ReceiptState as S, StateKind};
        JournaledReceipt {
            receipt: Arc::new(Receipt::new(r, ledger)),
            state: match s.kind() {
                StateKind::Pending => ReceiptState::Pending,
                StateKind::Batched => ReceiptState::Batched,
                StateKind::Submitted => ReceiptState::Submitted,
                StateKind::Confirmed => ReceiptState::Confirmed,
            },
            batch_id: s.batch_id().map(|b| b.to_string()),
            tx_hash: s.tx_hash().map(|t| t.to_string()),
            block: match s {
                S::Confirmed { block, .. } => Some(block),
                _ => None,
            },
        }
    }
}

/// Receipt counts by state.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReceiptStats {
    /// All receipts.
    pub receipts: u32,
    /// Pending receipts.
    pub pending: u32,
    /// Batched receipts.
    pub batched: u32,
    /// Submitted receipts.
    pub submitted: u32,
    /// Confirmed receipts.
    pub confirmed: u32,
}

impl From<tribute::attribution::journal::Stats> for ReceiptStats {
    fn from(s: tribute::attribution::journal::Stats) -> Self {
        ReceiptStats {
            receipts: count(s.receipts),
            pending: count(s.pending),
            batched: count(s.batched),
            submitted: count(s.submitted),
            confirmed: count(s.confirmed),
        }
    }
}

/// One batch of receipts settled on chain.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SettledBatch {
    /// The batch's Merkle root (0x-hex).
    pub root: String,
    /// The settlement transaction (0x-hex).
    pub tx_hash: String,
    /// Its block.
    pub block: Option<u64>,
    /// Gas it used.
    pub gas_used: u64,
    /// The payouts' total in wei (decimal), debited from the payer's deposit.
    pub total_wei: String,
    /// Receipts in the batch.
    pub receipts: u32,
    /// Whether it finished a batch an earlier run had started.
    pub resumed: bool,
}

/// What `Engine.settle()` did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SettleReport {
    /// The batches confirmed, in order.
    pub batches: Vec<SettledBatch>,
    /// Batches mined but not yet `ChainOptions.confirmations` deep: their receipts stay
    /// submitted, and a later `settle()` confirms them.
    pub awaiting: Vec<SettledBatch>,
    /// Roots the journal had confirmed that a reorg dropped from the chain (settled again:
    /// they are in `batches` or `awaiting` unless the call failed).
    pub reorged: Vec<String>,
    /// Confirmed roots the chain now holds in another transaction or block (re-confirmed
    /// there).
    pub moved: Vec<String>,
    /// Batches that could not be finished, left as they were: `root: why`.
    pub unresolved: Vec<String>,
    /// Pending receipts left alone because they do not verify on this ledger:
    /// `receipt id: why`.
    pub skipped: Vec<String>,
    /// Pending receipts of other payers (left alone).
    pub other_payers: u32,
    /// Pending receipts of this payer still waiting.
    pub still_pending: u32,
}

#[cfg(feature = "onchain")]
impl From<tribute::attribution::settle::SettleReport> for SettleReport {
    fn from(r: tribute::attribution::settle::SettleReport) -> Self {
        let batch = |b: &tribute::attribution::settle::BatchOutcome| SettledBatch {
            root: b.settlement.root.to_string(),
            tx_hash: b.settlement.tx_hash.to_string(),
            block: b.settlement.block_number,
            gas_used: b.settlement.gas_used,
            total_wei: b.settlement.total.to_string(),
            receipts: count(b.receipts),
            resumed: b.resumed,
        };
        SettleReport {
            batches: r.batches.iter().map(batch).collect(),
            awaiting: r.awaiting.iter().map(batch).collect(),
            reorged: r.reorged.iter().map(ToString::to_string).collect(),
            moved: r.moved.iter().map(ToString::to_string).collect(),
            unresolved: r
                .unresolved
                .iter()
                .map(|(root, why)| format!("{root}: {why}"))
                .collect(),
            skipped: r
                .skipped
                .iter()
                .map(|(id, why)| format!("{id}: {why}"))
                .collect(),
            other_payers: count(r.other_payers),
            still_pending: count(r.still_pending),
        }
    }
}
