//! Settling a journal's pending receipts on chain: batches, every role paid, resumption
//! without paying twice, and failures that leave receipts pending.

use alloy::primitives::{B256, U256};
use tribute_attribution::journal::{Journal, ReceiptState, StateKind};
use tribute_attribution::settle::{
    Owners, SettleError, SettleOptions, batch_payouts, settle_journal,
};
use tribute_attribution::split::RewardConfig;

use super::*;

/// A node with the model and adapter of [`receipt`] registered to accounts 5 and 6, payer 1
/// holding `deposit`, and a journal of `n` of its receipts (contributors 2, 3, 4).
async fn journaled(
    n: u64,
    deposit: U256,
) -> (Node, LedgerClient, PayerKey, Journal, tempfile::TempDir) {
    let node = Node::start().await;
    let client = node.client(1).await;
    let key = node.payer_key(1);
    client
        .register_model(keccak256("model"), node.address(5))
        .await
        .expect("register model");
    client
        .register_adapter(keccak256("adapter"), node.address(6))
        .await
        .expect("register adapter");
    if !deposit.is_zero() {
        client.deposit(deposit).await.expect("deposit");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut journal = Journal::open(dir.path()).expect("journal");
    let payees = [node.address(2), node.address(3), node.address(4)];
    let receipts = sign_all(&key, &node.ledger, 0, n, U256::from(FEE), &payees);
    journal.append_batch(&receipts).expect("append");
    (node, client, key, journal, dir)
}

fn options(node: &Node) -> SettleOptions {
    let mut o = SettleOptions::new(node.address(7));
    o.batch_size = 10;
    o
}

fn kinds(journal: &Journal) -> Vec<StateKind> {
    journal.receipts(None).map(|(_, s)| s.kind()).collect()
}

#[test]
fn journal_settles_in_batches_pays_every_role_and_resumes_without_paying_twice() {
    block_on(journal_settles_impl());
}

async fn journal_settles_impl() {
    let (node, client, key, mut journal, _dir) = journaled(25, U256::from(ETH)).await;
    let mut opts = options(&node);

    // One batch now, the rest later.
    opts.max_batches = Some(1);
    let report = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("settle one batch");
    assert_eq!(report.batches.len(), 1);
    assert_eq!(report.confirmed_receipts(), 10);
    assert_eq!(report.still_pending, 15);
    let stats = journal.stats();
    assert_eq!((stats.confirmed, stats.pending), (10, 15));

    // A crash after sending: the next 10 are sent by hand and journaled `submitted`, the
    // process "dies" before the confirmation is written.
    let next: Vec<SignedReceipt> = journal.pending().take(10).cloned().collect();
    let mut owners = Owners::new(node.address(7));
    owners.models.insert(keccak256("model"), node.address(5));
    owners
        .adapters
        .insert(keccak256("adapter"), node.address(6));
    let pay = batch_payouts(&next, &RewardConfig::default(), &owners).expect("payouts");
    let prepared = client.prepare(key.address(), &next, &pay).expect("prepare");
    let root = prepared.root;
    let authorized = client.authorize(&key, prepared).await.expect("authorize");
    let tx = client.send_batch(&authorized).await.expect("send");
    let ids: Vec<_> = next.iter().map(|r| r.receipt.receiptId).collect();
    journal
        .set_state(
            &ids,
            ReceiptState::Submitted {
                batch_id: root,
                tx_hash: tx,
            },
        )
        .expect("journal submitted");
    // …and 5 more were batched but never sent.
    let last: Vec<SignedReceipt> = journal.pending().take(5).cloned().collect();
    let last_root = BatchTree::of_receipts(&last, &node.ledger)
        .expect("tree")
        .root();
    let last_ids: Vec<_> = last.iter().map(|r| r.receipt.receiptId).collect();
    journal
        .set_state(
            &last_ids,
            ReceiptState::Batched {
                batch_id: last_root,
            },
        )
        .expect("journal batched");
    drop(journal);

    // Restart: the journal reopens, the settler resumes both, pays nothing twice.
    let mut journal = Journal::open(_dir.path()).expect("reopen");
    opts.max_batches = None;
    let report = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("resume");
    assert_eq!(report.batches.len(), 2, "{report:?}");
    assert!(report.batches.iter().all(|b| b.resumed));
    let by_root = |r| {
        report
            .batches
            .iter()
            .find(|b| b.settlement.root == r)
            .expect("batch")
    };
    assert!(by_root(root).settlement.already_settled);
    assert_eq!(by_root(root).settlement.tx_hash, tx);
    assert!(!by_root(last_root).settlement.already_settled);
    assert!(kinds(&journal).iter().all(|k| *k == StateKind::Confirmed));
    assert_eq!(client.batch_nonce(key.address()).await.expect("nonce"), 3);

    // Nothing left: a second run does nothing.
    let again = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("again");
    assert!(again.batches.is_empty());

    // Every wei of the 25 fees reached its payee, per the default 70/10/15/5 split: the
    // contributors 50/30/20 of 70 %, the adapter author 10 % (its only adapter), the model
    // owner 15 %, the treasury 5 %.
    let total = U256::from(25 * FEE);
    let bps = |b: u64| total * U256::from(b) / U256::from(10_000);
    let expect = [
        (2, bps(3_500)),
        (3, bps(2_100)),
        (4, bps(1_400)),
        (6, bps(1_000)),
        (5, bps(1_500)),
        (7, bps(500)),
    ];
    let mut sum = U256::ZERO;
    for (account, want) in expect {
        let got = client
            .balance(node.address(account))
            .await
            .expect("balance");
        assert_eq!(got, want, "account {account}");
        sum += got;
    }
    assert_eq!(sum, total);
    assert_eq!(
        client.deposits(key.address()).await.expect("deposit"),
        U256::from(ETH) - total
    );
    // Each confirmed receipt's leaf is provably in its batch, checked by the contract.
    let settled: Vec<SignedReceipt> = journal
        .receipts(Some(StateKind::Confirmed))
        .filter(|(_, s)| s.batch_id() == Some(last_root))
        .map(|(r, _)| r.clone())
        .collect();
    let tree = BatchTree::of_receipts(&settled, &node.ledger).expect("tree");
    for r in &settled {
        let leaf = r.leaf(&node.ledger);
        let proof = tree.proof(leaf).expect("proof");
        assert!(
            client
                .verify_inclusion(leaf, &proof, last_root)
                .await
                .expect("verify")
        );
    }
}

#[test]
fn settlement_failures_leave_receipts_pending() {
    block_on(settlement_failures_impl());
}

async fn settlement_failures_impl() {
    // A deposit too small: typed, nothing sent, all pending.
    let (node, client, key, mut journal, _dir) = journaled(12, U256::from(5 * FEE)).await;
    let opts = options(&node);
    let e = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect_err("deposit too small");
    assert!(
        matches!(
            e,
            SettleError::Chain(ChainError::InsufficientDeposit { .. })
        ),
        "{e}"
    );
    assert!(kinds(&journal).iter().all(|k| *k == StateKind::Pending));

    // Out of gas under a cap: typed, found by simulation, all pending.
    client.deposit(U256::from(ETH)).await.expect("deposit");
    let capped = client.clone().with_gas_limit(Some(40_000));
    let e = settle_journal(&capped, &mut journal, &key, &opts)
        .await
        .expect_err("out of gas");
    assert!(
        matches!(
            e,
            SettleError::Chain(ChainError::OutOfGas { limit: 40_000, .. })
        ),
        "{e}"
    );
    assert!(kinds(&journal).iter().all(|k| *k == StateKind::Pending));

    // An unregistered model without a fallback owner: refused, all pending.
    let other_model = {
        let mut r = receipt(key.address(), 100, U256::from(FEE), &[node.address(2)]);
        r.modelId = keccak256("unregistered");
        key.sign(r, &node.ledger).expect("sign")
    };
    let mut lone = Journal::open(tempfile::tempdir().expect("dir").keep()).expect("journal");
    lone.append(&other_model).expect("append");
    let e = settle_journal(&client, &mut lone, &key, &opts)
        .await
        .expect_err("unknown model");
    assert!(
        matches!(e, SettleError::UnknownModel(id) if id == keccak256("unregistered")),
        "{e}"
    );
    // With a fallback owner it settles, the model share going to the fallback.
    let mut with_fallback = opts.clone();
    with_fallback.fallback_owner = Some(node.address(8));
    settle_journal(&client, &mut lone, &key, &with_fallback)
        .await
        .expect("fallback");
    assert_eq!(
        client.balance(node.address(8)).await.expect("balance"),
        U256::from(FEE) * U256::from(1_500) / U256::from(10_000)
    );

    // A receipt signed for another ledger is skipped and stays pending.
    let foreign = Ledger {
        chain_id: 1,
        contract: node.ledger.contract,
    };
    let stray = key
        .sign(
            receipt(key.address(), 200, U256::from(FEE), &[node.address(2)]),
            &foreign,
        )
        .expect("sign");
    journal.append(&stray).expect("append");

    let report = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("settle the rest");
    assert_eq!(report.confirmed_receipts(), 12);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, stray.receipt.receiptId);
    assert_eq!(
        journal.state(&stray.receipt.receiptId),
        Some(&ReceiptState::Pending)
    );

    // The node goes down: an RPC error, new receipts stay pending.
    let fresh = sign_all(
        &key,
        &node.ledger,
        300,
        3,
        U256::from(FEE),
        &[node.address(2)],
    );
    journal.append_batch(&fresh).expect("append");
    drop(node);
    let e = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect_err("node down");
    assert!(
        matches!(
            e,
            SettleError::Chain(ChainError::Rpc { .. } | ChainError::Timeout { .. })
        ),
        "{e}"
    );
    for r in &fresh {
        assert_eq!(
            journal.state(&r.receipt.receiptId),
            Some(&ReceiptState::Pending)
        );
    }
}

/// anvil's `evm_snapshot`: an id to revert to.
async fn snapshot(client: &LedgerClient) -> U256 {
    client
        .provider()
        .raw_request::<_, U256>("evm_snapshot".into(), ())
        .await
        .expect("evm_snapshot")
}

/// anvil's `evm_revert`: the chain forgets every block after the snapshot (a reorg).
async fn revert(client: &LedgerClient, id: U256) {
    let reverted = client
        .provider()
        .raw_request::<_, bool>("evm_revert".into(), (id,))
        .await
        .expect("evm_revert");
    assert!(reverted, "evm_revert({id}) refused");
}

/// Mines `n` empty blocks.
async fn mine(client: &LedgerClient, n: u64) {
    for _ in 0..n {
        client
            .provider()
            .raw_request::<_, String>("evm_mine".into(), ())
            .await
            .expect("evm_mine");
    }
}

#[test]
fn a_reorg_that_drops_a_confirmed_settlement_is_settled_again() {
    block_on(reorg_impl());
}

async fn reorg_impl() {
    let (node, client, key, mut journal, _dir) = journaled(6, U256::from(ETH)).await;
    let mut opts = options(&node);
    opts.batch_size = 3;
    opts.max_batches = Some(1);
    let first = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("first batch");
    let kept = first.batches[0].settlement.root;

    // The second batch is confirmed, then the chain forgets its block.
    let snapshot = snapshot(&client).await;
    let second = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("second batch");
    let dropped = second.batches[0].settlement.root;
    assert!(kinds(&journal).iter().all(|k| *k == StateKind::Confirmed));
    revert(&client, snapshot).await;
    mine(&client, 1).await;
    assert_eq!(
        client
            .settlement_of(key.address(), dropped)
            .await
            .expect("lookup"),
        None
    );
    assert_eq!(client.batch_nonce(key.address()).await.expect("nonce"), 1);

    // The next run finds it gone, puts its receipts back in their batch and settles it
    // again under the same root; the first batch is left alone.
    let again = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("reconcile");
    assert_eq!(again.reorged, vec![dropped], "{again:?}");
    assert!(again.moved.is_empty());
    assert_eq!(again.batches.len(), 1, "{again:?}");
    assert!(again.batches[0].resumed && !again.batches[0].settlement.already_settled);
    assert_eq!(again.batches[0].settlement.root, dropped);
    assert!(kinds(&journal).iter().all(|k| *k == StateKind::Confirmed));
    let settled = client
        .settled_roots_since(key.address(), 0)
        .await
        .expect("events");
    assert_eq!(settled.len(), 2);
    assert!(settled.contains_key(&kept) && settled.contains_key(&dropped));
    assert_eq!(client.batch_nonce(key.address()).await.expect("nonce"), 2);
    // Paid exactly once: the deposit fell by the six fees.
    assert_eq!(
        client.deposits(key.address()).await.expect("deposit"),
        U256::from(ETH - 6 * FEE)
    );

    // Nothing more to do: a confirmation that still holds is not touched.
    let quiet = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("quiet");
    assert!(
        quiet.reorged.is_empty() && quiet.batches.is_empty(),
        "{quiet:?}"
    );
}

#[test]
fn settlements_wait_for_their_confirmation_depth() {
    block_on(depth_impl());
}

async fn depth_impl() {
    let (node, client, key, mut journal, _dir) = journaled(3, U256::from(ETH)).await;
    let mut opts = options(&node);
    opts.confirmations = 3;
    let sent = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("settle");
    assert!(sent.batches.is_empty(), "{sent:?}");
    assert_eq!(sent.awaiting.len(), 1);
    assert_eq!(sent.awaiting_receipts(), 3);
    assert!(!sent.awaiting[0].confirmed && sent.gas_used() > 0);
    assert!(kinds(&journal).iter().all(|k| *k == StateKind::Submitted));
    let txs = sent_by(&client, node.address(1)).await;

    // One block later it is two deep: still waiting, nothing sent again.
    mine(&client, 1).await;
    let waiting = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("still waiting");
    assert_eq!(waiting.awaiting.len(), 1, "{waiting:?}");
    assert!(waiting.awaiting[0].settlement.already_settled);
    assert_eq!(sent_by(&client, node.address(1)).await, txs);

    // Three deep: confirmed in the block it was mined in.
    mine(&client, 1).await;
    let done = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("confirmed");
    assert_eq!(done.confirmed_receipts(), 3, "{done:?}");
    let block = sent.awaiting[0].settlement.block_number.expect("block");
    for r in journal.receipts(None) {
        assert!(
            matches!(r.1, ReceiptState::Confirmed { block: b, .. } if *b == block),
            "{}",
            r.1
        );
    }
    assert_eq!(sent_by(&client, node.address(1)).await, txs);
}

#[test]
fn a_submitted_batch_whose_transaction_vanished_is_sent_again() {
    block_on(vanished_impl());
}

async fn vanished_impl() {
    let (node, client, key, mut journal, _dir) = journaled(3, U256::from(ETH)).await;
    let opts = options(&node);
    // Journaled as submitted in a transaction no node ever saw (dropped from the pool).
    let all: Vec<SignedReceipt> = journal.pending().cloned().collect();
    let root = BatchTree::of_receipts(&all, &node.ledger)
        .expect("tree")
        .root();
    let ids: Vec<_> = all.iter().map(|r| r.receipt.receiptId).collect();
    journal
        .set_state(&ids, ReceiptState::Batched { batch_id: root })
        .expect("batched");
    journal
        .set_state(
            &ids,
            ReceiptState::Submitted {
                batch_id: root,
                tx_hash: keccak256("a transaction that was dropped"),
            },
        )
        .expect("submitted");
    let report = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("resend");
    assert_eq!(report.batches.len(), 1, "{report:?}");
    assert!(report.batches[0].resumed && !report.batches[0].settlement.already_settled);
    assert_eq!(report.batches[0].settlement.root, root);
    assert!(kinds(&journal).iter().all(|k| *k == StateKind::Confirmed));
}

/// The storage slot of `settledAt[payer][root]` (the ledger's third state variable: slot 2,
/// after `_accounts` and `balances`), for writing a settlement into the node's state.
fn settled_at_slot(payer: Address, root: B256) -> U256 {
    let mut inner = [0u8; 64];
    inner[..32].copy_from_slice(payer.into_word().as_slice());
    inner[32..].copy_from_slice(&U256::from(2).to_be_bytes::<32>());
    let mut outer = [0u8; 64];
    outer[..32].copy_from_slice(root.as_slice());
    outer[32..].copy_from_slice(keccak256(inner).as_slice());
    keccak256(outer).into()
}

/// anvil's `anvil_setStorageAt` on the ledger.
async fn set_ledger_storage(client: &LedgerClient, slot: U256, value: U256) {
    let set = client
        .provider()
        .raw_request::<_, bool>(
            "anvil_setStorageAt".into(),
            (client.ledger().contract, slot, B256::from(value)),
        )
        .await
        .expect("anvil_setStorageAt");
    assert!(set, "anvil_setStorageAt refused");
}

#[test]
fn a_settlement_the_node_cannot_show_is_never_paid_again() {
    block_on(lost_event_impl());
}

/// A node that kept a settlement's state but lost its block (an anvil restarted from a state
/// dump newer than its blocks) shows `settledAt(payer, root)` without a `BatchSettled`
/// event. The settler must leave such a batch unresolved, never sign it again.
async fn lost_event_impl() {
    let (node, client, key, mut journal, _dir) = journaled(6, U256::from(ETH)).await;
    let payer = key.address();
    let mut opts = options(&node);
    opts.batch_size = 3;
    opts.max_batches = Some(1);
    let first = settle_journal(&client, &mut journal, &key, &opts)
        .await
        .expect("first batch");
    let settled = first.batches[0].settlement.clone();
    // The slot formula is right: it holds the real settlement's block.
    let slot = settled_at_slot(payer, settled.root);
    let stored = client
        .provider()
        .get_storage_at(client.ledger().contract, slot)
        .await
        .expect("eth_getStorageAt");
    assert_eq!(Some(stored.to::<u64>()), settled.block_number);
    // A record one block off (anvil restarted from a state dump executes a settlement as
    // block N and mines it into N + 1) still finds its event nearby.
    set_ledger_storage(&client, slot, stored - U256::from(1)).await;
    let found = client
        .settlement_of(payer, settled.root)
        .await
        .expect("lookup")
        .expect("settled");
    assert_eq!(
        (found.tx_hash, found.block_number),
        (settled.tx_hash, settled.block_number)
    );
    set_ledger_storage(&client, slot, stored).await;

    // The other three receipts: the node's state says they were settled, in blocks past its
    // head and then in an old block without the event.
    let pending: Vec<SignedReceipt> = journal
        .receipts(Some(StateKind::Pending))
        .map(|(r, _)| r.clone())
        .collect();
    assert_eq!(pending.len(), 3);
    let root = BatchTree::of_receipts(&pending, &node.ledger)
        .expect("tree")
        .root();
    let head = client.block_number().await.expect("head");
    let deposit = client.deposits(payer).await.expect("deposit");
    let txs = sent_by(&client, node.address(1)).await;
    // Past the head beyond the slack (no lookup at all), past it within the slack, and an
    // old block without the event.
    for block in [head + chain::EVENT_SLACK_BLOCKS + 10, head + 10, 1] {
        set_ledger_storage(&client, settled_at_slot(payer, root), U256::from(block)).await;
        let e = client
            .settlement_of(payer, root)
            .await
            .expect_err("no event to show");
        assert!(
            matches!(e, ChainError::SettledWithoutEvent { root: r, block: b } if r == root && b == block),
            "{e}"
        );
        opts.max_batches = None;
        let report = settle_journal(&client, &mut journal, &key, &opts)
            .await
            .expect("settle");
        assert!(
            report.batches.is_empty() && report.awaiting.is_empty(),
            "{report:?}"
        );
        assert_eq!(report.unresolved.len(), 1, "{report:?}");
        assert_eq!(report.unresolved[0].0, root);
        assert!(
            report.unresolved[0].1.contains("no BatchSettled event"),
            "{report:?}"
        );
        // Nothing sent, nothing paid, and the receipts are still pending.
        assert_eq!(sent_by(&client, node.address(1)).await, txs);
        assert_eq!(client.deposits(payer).await.expect("deposit"), deposit);
        assert_eq!(client.batch_nonce(payer).await.expect("nonce"), 1);
        // Still pending, and their claims given back: the next round claims them again.
        assert_eq!(journal.receipts(Some(StateKind::Pending)).count(), 3);
    }

    // Even signed and sent straight to the ledger, the batch is refused: the ledger's own
    // record, not the node's logs, decides.
    let pay = batch_payouts(
        &pending,
        &opts.rewards,
        &Owners {
            treasury: node.address(7),
            models: [(keccak256("model"), node.address(5))].into(),
            adapters: [(keccak256("adapter"), node.address(6))].into(),
            fallback: None,
            training: Default::default(),
        },
    )
    .expect("payouts");
    let (payees, amounts): (Vec<Address>, Vec<U256>) = pay.iter().copied().unzip();
    let batch = SettleBatch {
        payer,
        root,
        total: U256::from(3 * FEE),
        payoutsHash: payouts_hash(&payees, &amounts),
        batchNonce: 1,
    };
    let sig = key.sign_batch(&batch, &node.ledger).expect("sign batch");
    let e = client
        .submit_batch(payer, root, &pay, 1, &sig)
        .await
        .expect_err("a root the ledger holds settled");
    assert!(matches!(e, ChainError::Replay), "{e}");
    assert_eq!(client.deposits(payer).await.expect("deposit"), deposit);
}
