//! Settling a batch of receipts: prepare (off chain), authorise (sign and simulate), send,
//! wait; and finding a root's settlement from `settledAt(payer, root)` and its `BatchSettled`
//! event.

use std::collections::{HashMap, HashSet};

use alloy::contract::CallBuilder;
use alloy::primitives::{Address, B256, Bytes, Signature, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, TransactionReceipt};
use alloy::sol_types::SolEvent;

use super::client::timed;
use super::{ChainError, LedgerClient, TributeLedger};
use crate::receipt::{Ledger, MerkleTree, PayerKey, SettleBatch, SignedReceipt, payouts_hash};

/// How far from the block `settledAt` names a settlement's `BatchSettled` event is looked
/// for. A chain records the very block; anvil restarted from a state dump was seen to execute
/// a settlement as block N and mine it into block N + 1.
pub const EVENT_SLACK_BLOCKS: u64 = 64;

/// A settled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The batch's Merkle root.
    pub root: B256,
    /// The payer.
    pub payer: Address,
    /// Σ payouts, debited from the payer's deposit.
    pub total: U256,
    /// The batch nonce it was settled with.
    pub batch_nonce: u64,
    /// The settling transaction.
    pub tx_hash: B256,
    /// Its block.
    pub block_number: Option<u64>,
    /// The gas it used.
    pub gas_used: u64,
    /// The number of payees (from the `BatchSettled` event).
    pub payee_count: u64,
    /// True when the root was already settled and nothing was sent.
    pub already_settled: bool,
}

/// The Merkle tree of a batch: receipt leaves sorted ascending (duplicates refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTree {
    leaves: Vec<B256>,
    tree: MerkleTree,
}

impl BatchTree {
    /// Builds the tree of these leaves (any order); `None` for none.
    pub fn new(mut leaves: Vec<B256>) -> Option<Self> {
        leaves.sort_unstable();
        let tree = MerkleTree::new(leaves.clone())?;
        Some(BatchTree { leaves, tree })
    }

    /// The tree of these receipts' leaves on `ledger` (signatures are not checked).
    pub fn of_receipts(receipts: &[SignedReceipt], ledger: &Ledger) -> Option<Self> {
        Self::new(receipts.iter().map(|r| r.leaf(ledger)).collect())
    }

    /// The root.
    pub fn root(&self) -> B256 {
        self.tree.root()
    }

    /// The sorted leaves.
    pub fn leaves(&self) -> &[B256] {
        &self.leaves
    }

    /// The inclusion proof of `leaf`, if it is in the tree.
    pub fn proof(&self, leaf: B256) -> Option<Vec<B256>> {
        let i = self.leaves.binary_search(&leaf).ok()?;
        self.tree.proof(i)
    }
}

/// A batch checked off chain and ready to be authorised: its root, total and payouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedBatch {
    /// The payer whose receipts these are.
    pub payer: Address,
    /// The Merkle root of the receipts' leaves ([`BatchTree`]).
    pub root: B256,
    /// Σ payouts = Σ receipt fees.
    pub total: U256,
    /// Who is paid what.
    pub payouts: Vec<(Address, U256)>,
    /// How many receipts.
    pub receipts: usize,
}

/// A prepared batch with the payer's signature for the ledger's current batch nonce, its
/// `settleBatch` simulated successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedBatch {
    /// The batch.
    pub batch: PreparedBatch,
    /// The payer's batch nonce it is signed for.
    pub batch_nonce: u64,
    /// The payer's EIP-712 signature over [`SettleBatch`].
    pub signature: Signature,
}

impl LedgerClient {
    /// Settles a batch of receipts owed by `payer` with these payouts (see the module
    /// documentation for the checks). Idempotent: an already settled batch is returned with
    /// `already_settled: true` and nothing is sent.
    pub async fn settle(
        &self,
        payer: &PayerKey,
        receipts: &[SignedReceipt],
        payouts: &[(Address, U256)],
    ) -> Result<Settlement, ChainError> {
        let batch = self.prepare(payer.address(), receipts, payouts)?;
        if let Some(done) = self.settlement_of(batch.payer, batch.root).await? {
            return Ok(done);
        }
        let (key, root) = (batch.payer, batch.root);
        let authorized = match self.authorize(payer, batch).await {
            Ok(a) => a,
            Err(ChainError::Replay) => return self.existing_settlement(key, root).await,
            Err(e) => return Err(e),
        };
        let tx = match self.send_batch(&authorized).await {
            Ok(tx) => tx,
            Err(ChainError::Replay) => return self.existing_settlement(key, root).await,
            Err(e) => return Err(e),
        };
        self.wait_settlement(&authorized, tx).await
    }

    /// Checks a batch off chain (no RPC): every receipt verifies on this ledger, is owed by
    /// `payer` and appears once; payouts go to non-zero addresses and sum exactly to the
    /// receipts' fees. Returns the batch with its root (receipt order does not matter).
    pub fn prepare(
        &self,
        payer: Address,
        receipts: &[SignedReceipt],
        payouts: &[(Address, U256)],
    ) -> Result<PreparedBatch, ChainError> {
        if receipts.is_empty() || payouts.is_empty() {
            return Err(ChainError::EmptyBatch);
        }
        if payouts.iter().any(|(a, _)| *a == Address::ZERO) {
            return Err(ChainError::ZeroAddress);
        }
        let mut seen = HashSet::with_capacity(receipts.len());
        let mut leaves = Vec::with_capacity(receipts.len());
        let mut fees = U256::ZERO;
        for (index, r) in receipts.iter().enumerate() {
            let digest = r
                .verify(&self.ledger)
                .map_err(|source| ChainError::InvalidReceipt { index, source })?;
            if r.receipt.payer != payer {
                return Err(ChainError::WrongPayer {
                    index,
                    payer: r.receipt.payer,
                    key: payer,
                });
            }
            if !seen.insert(digest) {
                return Err(ChainError::DuplicateReceipt(r.receipt.receiptId));
            }
            fees = fees
                .checked_add(r.receipt.fee)
                .ok_or(ChainError::Overflow)?;
            leaves.push(crate::receipt::receipt_leaf(digest));
        }
        let total = payouts
            .iter()
            .try_fold(U256::ZERO, |acc, (_, a)| acc.checked_add(*a))
            .ok_or(ChainError::Overflow)?;
        if total != fees {
            return Err(ChainError::PayoutMismatch {
                fees,
                payouts: total,
            });
        }
        let root = BatchTree::new(leaves).ok_or(ChainError::EmptyBatch)?.root();
        Ok(PreparedBatch {
            payer,
            root,
            total,
            payouts: payouts.to_vec(),
            receipts: receipts.len(),
        })
    }

    /// The settlement of `payer`'s batch `root` if it is settled (with `already_settled:
    /// true`), `None` if it is not. One storage read (`settledAt`) decides; a settled root's
    /// `BatchSettled` event is then looked up around that block (±[`EVENT_SLACK_BLOCKS`]),
    /// so no `eth_getLogs` spans the chain. A root the ledger holds settled but whose event
    /// the node lacks (a node that lost blocks but kept their state, or prunes logs) is
    /// [`ChainError::SettledWithoutEvent`]: never a reason to pay it again.
    pub async fn settlement_of(
        &self,
        payer: Address,
        root: B256,
    ) -> Result<Option<Settlement>, ChainError> {
        let Some(block) = self.settled_at(payer, root).await? else {
            return Ok(None);
        };
        let head = self.block_number().await?;
        let from = block.saturating_sub(EVENT_SLACK_BLOCKS);
        // Past the node's head (state from blocks it no longer has), asking is an RPC error.
        if from > head {
            return Err(ChainError::SettledWithoutEvent { root, block });
        }
        let to = block.saturating_add(EVENT_SLACK_BLOCKS).min(head);
        let logs = self
            .batch_settled_logs(from, Some(to), Some(payer), Some(root))
            .await?;
        // A pending log has no transaction hash yet.
        let Some(tx) = logs.iter().find_map(|l| l.transaction_hash) else {
            return Err(ChainError::SettledWithoutEvent { root, block });
        };
        self.settlement_in(root, block, tx).await.map(Some)
    }

    /// The number of the chain's latest block, as this node sees it.
    pub async fn block_number(&self) -> Result<u64, ChainError> {
        timed(
            &self.url,
            "eth_blockNumber",
            self.timeout,
            self.provider.get_block_number(),
        )
        .await
    }

    /// `payer`'s `BatchSettled` events from block `from` on, as root → (transaction, block)
    /// of each root's first event, in one `eth_getLogs`. A reconcile pass compares them with
    /// the journal's recent confirmations.
    pub async fn settled_roots_since(
        &self,
        payer: Address,
        from: u64,
    ) -> Result<HashMap<B256, (B256, u64)>, ChainError> {
        let logs = self
            .batch_settled_logs(from, None, Some(payer), None)
            .await?;
        let mut roots = HashMap::new();
        for log in &logs {
            // A pending log has no transaction or block yet; topic 2 is the root.
            if let (Some(tx), Some(block), Some(root)) =
                (log.transaction_hash, log.block_number, log.topics().get(2))
            {
                roots.entry(*root).or_insert((tx, block));
            }
        }
        Ok(roots)
    }

    /// Reads the payer's batch nonce, signs the [`SettleBatch`] with `payer` and simulates
    /// `settleBatch`, so that every contract check (deposit, nonce, signature, replay)
    /// fails here, typed, before anything is sent. An already settled root is
    /// [`ChainError::Replay`], also when the simulation says `InvalidNonce` because the nonce
    /// moved on since it was read and the ledger now holds the root settled.
    pub async fn authorize(
        &self,
        payer: &PayerKey,
        batch: PreparedBatch,
    ) -> Result<AuthorizedBatch, ChainError> {
        let key = payer.address();
        if key != batch.payer {
            return Err(ChainError::WrongPayer {
                index: 0,
                payer: batch.payer,
                key,
            });
        }
        let batch_nonce = self.batch_nonce(key).await?;
        let (payees, amounts): (Vec<Address>, Vec<U256>) = batch.payouts.iter().copied().unzip();
        let message = SettleBatch {
            payer: key,
            root: batch.root,
            total: batch.total,
            payoutsHash: payouts_hash(&payees, &amounts),
            batchNonce: batch_nonce,
        };
        let signature = payer
            .sign_batch(&message, &self.ledger)
            .map_err(ChainError::Signing)?;
        let call = self.settle_call(&batch, batch_nonce, &signature);
        if let Err(e) = self.simulate("settleBatch", &call).await {
            return Err(self.settle_error(key, batch.root, e).await);
        }
        Ok(AuthorizedBatch {
            batch,
            batch_nonce,
            signature,
        })
    }

    fn settle_call(
        &self,
        batch: &PreparedBatch,
        batch_nonce: u64,
        signature: &Signature,
    ) -> CallBuilder<&DynProvider, std::marker::PhantomData<TributeLedger::settleBatchCall>> {
        let (payees, amounts): (Vec<Address>, Vec<U256>) = batch.payouts.iter().copied().unzip();
        self.contract.settleBatch(
            batch.payer,
            batch.root,
            payees,
            amounts,
            batch_nonce,
            Bytes::from(signature.as_bytes().to_vec()),
        )
    }

    /// Sends an authorised batch (simulated again first); returns the transaction hash
    /// without waiting for it to be mined. A root settled since it was authorised is
    /// [`ChainError::Replay`].
    pub async fn send_batch(&self, batch: &AuthorizedBatch) -> Result<B256, ChainError> {
        let call = self.settle_call(&batch.batch, batch.batch_nonce, &batch.signature);
        match self.send_checked("settleBatch", call).await {
            Ok(tx) => Ok(tx),
            Err(e) => Err(self
                .settle_error(batch.batch.payer, batch.batch.root, e)
                .await),
        }
    }

    /// What a failed `settleBatch` for `root` means to a settler: an `InvalidNonce` for a
    /// root that is settled (the nonce moved on because this very batch landed, sent by
    /// another settler or an earlier try) is [`ChainError::Replay`]; anything else is
    /// returned as is. Costs one storage read, on `InvalidNonce` only; if that read fails,
    /// the `InvalidNonce` is returned.
    async fn settle_error(&self, payer: Address, root: B256, err: ChainError) -> ChainError {
        match err {
            ChainError::InvalidNonce { .. } => match self.settled_at(payer, root).await {
                Ok(Some(_)) => ChainError::Replay,
                _ => err,
            },
            err => err,
        }
    }

    /// Waits for a sent batch's transaction and returns its settlement.
    pub async fn wait_settlement(
        &self,
        batch: &AuthorizedBatch,
        tx: B256,
    ) -> Result<Settlement, ChainError> {
        let receipt = self.wait_for("settleBatch", tx).await?;
        settlement_from_receipt(&receipt, batch.batch.root, false).ok_or_else(|| {
            ChainError::Reverted {
                what: "settleBatch".into(),
                reason: format!(
                    "transaction {} emitted no BatchSettled event",
                    receipt.transaction_hash
                ),
            }
        })
    }

    /// Submits an already signed batch as is (no off-chain checks): simulates, sends, waits.
    /// [`LedgerClient::settle`] is the checked path; this one exists for settlers that
    /// relay batches signed elsewhere, and for tests of the contract's own checks.
    pub async fn submit_batch(
        &self,
        payer: Address,
        root: B256,
        payouts: &[(Address, U256)],
        batch_nonce: u64,
        signature: &Signature,
    ) -> Result<Settlement, ChainError> {
        let total = payouts
            .iter()
            .fold(U256::ZERO, |acc, (_, a)| acc.saturating_add(*a));
        let batch = AuthorizedBatch {
            batch: PreparedBatch {
                payer,
                root,
                total,
                payouts: payouts.to_vec(),
                receipts: 0,
            },
            batch_nonce,
            signature: *signature,
        };
        let tx = self.send_batch(&batch).await?;
        self.wait_settlement(&batch, tx).await
    }

    /// This ledger's `BatchSettled` logs in blocks `from..=to` (to the head when `to` is
    /// `None`), of one payer and one root, or of all.
    async fn batch_settled_logs(
        &self,
        from: u64,
        to: Option<u64>,
        payer: Option<Address>,
        root: Option<B256>,
    ) -> Result<Vec<alloy::rpc::types::Log>, ChainError> {
        let mut filter = Filter::new()
            .address(self.ledger.contract)
            .event_signature(TributeLedger::BatchSettled::SIGNATURE_HASH)
            .from_block(from);
        if let Some(to) = to {
            filter = filter.to_block(to);
        }
        if let Some(payer) = payer {
            filter = filter.topic1(payer.into_word());
        }
        if let Some(root) = root {
            filter = filter.topic2(root);
        }
        timed(
            &self.url,
            "eth_getLogs",
            self.timeout,
            self.provider.get_logs(&filter),
        )
        .await
    }

    /// The settlement of a root the ledger refused as a replay. A root no longer settled by
    /// the time it is read (a reorg in between) is the [`ChainError::Replay`] again.
    async fn existing_settlement(
        &self,
        payer: Address,
        root: B256,
    ) -> Result<Settlement, ChainError> {
        self.settlement_of(payer, root)
            .await?
            .ok_or(ChainError::Replay)
    }

    /// The settlement of `root` in transaction `tx` of `block` (its receipt's `BatchSettled`
    /// event).
    async fn settlement_in(
        &self,
        root: B256,
        block: u64,
        tx: B256,
    ) -> Result<Settlement, ChainError> {
        let receipt = timed(
            &self.url,
            "eth_getTransactionReceipt",
            self.timeout,
            self.provider.get_transaction_receipt(tx),
        )
        .await?
        .ok_or(ChainError::SettledWithoutEvent { root, block })?;
        settlement_from_receipt(&receipt, root, true)
            .ok_or(ChainError::SettledWithoutEvent { root, block })
    }
}

fn settlement_from_receipt(
    receipt: &TransactionReceipt,
    root: B256,
    already_settled: bool,
) -> Option<Settlement> {
    let ev = receipt.logs().iter().find_map(|l| {
        l.log_decode::<TributeLedger::BatchSettled>()
            .ok()
            .filter(|e| e.inner.data.root == root)
    })?;
    let e = &ev.inner.data;
    Some(Settlement {
        root,
        payer: e.payer,
        total: e.total,
        batch_nonce: e.batchNonce,
        tx_hash: receipt.transaction_hash,
        block_number: receipt.block_number,
        gas_used: receipt.gas_used,
        payee_count: e.payeeCount.saturating_to(),
        already_settled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_tree_is_order_independent_and_proves() {
        let leaves: Vec<B256> = (0u8..5).map(|i| B256::repeat_byte(i + 1)).collect();
        let mut rev = leaves.clone();
        rev.reverse();
        let a = BatchTree::new(leaves.clone()).expect("tree");
        let b = BatchTree::new(rev).expect("tree");
        assert_eq!(a.root(), b.root());
        for l in &leaves {
            let p = a.proof(*l).expect("proof");
            assert!(crate::receipt::verify_proof(*l, &p, a.root()));
        }
        assert!(a.proof(B256::repeat_byte(0xee)).is_none());
    }
}
