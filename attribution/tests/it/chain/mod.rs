//! On-chain settlement against a local anvil (`--features onchain`). Each test starts its own
//! anvil on a free port: `attribution/contracts/node_modules/.bin/anvil` (`npm ci` there), or
//! `anvil` on PATH.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, U256, keccak256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use tribute_attribution::chain::{self, BatchTree, ChainError, LedgerClient};
use tribute_attribution::receipt::{
    AdapterUse, CitedChunk, Ledger, PayerKey, RECEIPT_VERSION, SettleBatch, SignedReceipt,
    UsageReceipt, payouts_hash,
};

/// Runs a test on a current-thread tokio runtime (tokio is built without `macros`).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

fn anvil_path() -> PathBuf {
    tribute_common::anvil::anvil_binary().unwrap_or_else(|| {
        panic!("anvil not found: run `cd attribution/contracts && npm ci` or put foundry's anvil on PATH")
    })
}

/// A fresh anvil (free port) with a deployed ledger.
struct Node {
    anvil: AnvilInstance,
    ledger: Ledger,
}

impl Node {
    async fn start() -> Node {
        let anvil = Anvil::new()
            .path(anvil_path())
            .try_spawn()
            .expect("spawn anvil");
        let ledger = chain::deploy(&anvil.endpoint(), self_signer(&anvil, 0))
            .await
            .expect("deploy");
        Node { anvil, ledger }
    }

    fn url(&self) -> String {
        self.anvil.endpoint()
    }

    fn signer(&self, i: usize) -> PrivateKeySigner {
        self_signer(&self.anvil, i)
    }

    fn payer_key(&self, i: usize) -> PayerKey {
        PayerKey::from_hex(&self.signer(i).to_bytes().to_string()).expect("payer key")
    }

    fn address(&self, i: usize) -> Address {
        self.anvil.addresses()[i]
    }

    async fn client(&self, i: usize) -> LedgerClient {
        LedgerClient::connect(&self.url(), self.signer(i), self.ledger)
            .await
            .expect("connect")
    }
}

fn self_signer(anvil: &AnvilInstance, i: usize) -> PrivateKeySigner {
    PrivateKeySigner::from(anvil.keys()[i].clone())
}

fn receipt(payer: Address, n: u64, fee: U256, contributors: &[Address]) -> UsageReceipt {
    let weights: Vec<u16> = match contributors.len() {
        1 => vec![10_000],
        2 => vec![7_000, 3_000],
        _ => vec![5_000, 3_000, 2_000],
    };
    UsageReceipt {
        version: RECEIPT_VERSION,
        receiptId: keccak256(format!("receipt-{n}")),
        payer,
        servingNode: contributors[0],
        modelId: keccak256("model"),
        adapters: vec![AdapterUse {
            adapterId: keccak256("adapter"),
            weightMicros: -250_000,
        }],
        queryHash: keccak256(format!("query-{n}")),
        answerHash: keccak256(format!("answer-{n}")),
        chunks: contributors
            .iter()
            .zip(&weights)
            .enumerate()
            .map(|(i, (c, w))| CitedChunk {
                contentHash: keccak256(format!("chunk-{n}-{i}")),
                contributor: *c,
                weightBps: *w,
            })
            .collect(),
        fee,
        nonce: n,
        timestamp: 1_760_000_000 + n,
        attributionHash: Default::default(),
    }
}

fn sign_all(
    key: &PayerKey,
    ledger: &Ledger,
    start: u64,
    count: u64,
    fee: U256,
    payees: &[Address],
) -> Vec<SignedReceipt> {
    (start..start + count)
        .map(|n| {
            key.sign(receipt(key.address(), n, fee, payees), ledger)
                .expect("sign")
        })
        .collect()
}

/// How many transactions `account` has sent (to check that a refused call sent nothing).
async fn sent_by(client: &LedgerClient, account: Address) -> u64 {
    client
        .provider()
        .get_transaction_count(account)
        .await
        .expect("tx count")
}

/// Splits `total` over `payees` 50/30/20 (the last one takes the rest).
fn payouts(payees: &[Address], total: U256) -> Vec<(Address, U256)> {
    let a = total * U256::from(5) / U256::from(10);
    let b = total * U256::from(3) / U256::from(10);
    vec![(payees[0], a), (payees[1], b), (payees[2], total - a - b)]
}

const ETH: u128 = 1_000_000_000_000_000_000;
const FEE: u128 = 1_000_000_000_000_000; // 0.001 ether

#[test]
fn settle_credits_payees_verifies_and_is_idempotent() {
    block_on(settle_credits_payees_verifies_and_is_idempotent_impl());
}

async fn settle_credits_payees_verifies_and_is_idempotent_impl() {
    let node = Node::start().await;
    let client = node.client(1).await;
    let key = node.payer_key(1);
    let payer = key.address();
    let payees = [node.address(2), node.address(3), node.address(4)];

    client.deposit(U256::from(ETH)).await.expect("deposit");
    assert_eq!(
        client.deposits(payer).await.expect("deposits"),
        U256::from(ETH)
    );

    let receipts = sign_all(&key, &node.ledger, 0, 3, U256::from(FEE), &payees);
    // Live check: the contract's EIP-712 digest equals ours.
    for r in &receipts {
        assert_eq!(
            client.hash_receipt(&r.receipt).await.expect("hashReceipt"),
            r.receipt.digest(&node.ledger)
        );
    }
    let total = U256::from(3 * FEE);
    let pay = payouts(&payees, total);

    let s = client.settle(&key, &receipts, &pay).await.expect("settle");
    println!(
        "settled 3 receipts / 3 new payees: gas {} tx {}",
        s.gas_used, s.tx_hash
    );
    assert!(!s.already_settled);
    assert_eq!(s.batch_nonce, 0);
    assert_eq!(s.payer, payer);
    assert_eq!(s.total, total);
    assert_eq!(s.payee_count, 3);
    assert!(s.gas_used > 21_000);
    for (p, a) in &pay {
        assert_eq!(client.balance(*p).await.expect("balance"), *a);
    }
    assert_eq!(
        client.deposits(payer).await.expect("deposits"),
        U256::from(ETH) - total
    );
    assert_eq!(client.batch_nonce(payer).await.expect("nonce"), 1);
    assert!(client.is_settled(payer, s.root).await.expect("settled"));
    assert_eq!(
        client.settled_at(payer, s.root).await.expect("settledAt"),
        s.block_number
    );
    // Keyed by payer: another payer's record of the same root is empty.
    assert!(!client.is_settled(payees[0], s.root).await.expect("settled"));
    assert_eq!(
        client
            .settlement_of(payer, s.root)
            .await
            .expect("settlement_of"),
        Some(chain::Settlement {
            already_settled: true,
            ..s.clone()
        })
    );

    // Inclusion proofs, checked by the contract.
    let tree = BatchTree::of_receipts(&receipts, &node.ledger).expect("tree");
    assert_eq!(tree.root(), s.root);
    for r in &receipts {
        let leaf = r.leaf(&node.ledger);
        let proof = tree.proof(leaf).expect("proof");
        assert!(
            client
                .verify_inclusion(leaf, &proof, s.root)
                .await
                .expect("verify")
        );
    }
    let leaf0 = receipts[0].leaf(&node.ledger);
    let proof0 = tree.proof(leaf0).expect("proof");
    assert!(
        !client
            .verify_inclusion(keccak256("not a receipt"), &proof0, s.root)
            .await
            .expect("verify")
    );

    // Idempotent retry, in any receipt order: nothing is sent.
    let sent_before = sent_by(&client, payer).await;
    let mut reordered = receipts.clone();
    reordered.reverse();
    let again = client
        .settle(&key, &reordered, &pay)
        .await
        .expect("settle again");
    assert!(again.already_settled);
    assert_eq!(again.tx_hash, s.tx_hash);
    assert_eq!(again.gas_used, s.gas_used);
    assert_eq!(again.batch_nonce, 0);
    assert_eq!(sent_by(&client, payer).await, sent_before);

    // A replay straight to the contract, freshly signed with the next nonce: the payer's
    // root is settled (`settledAt`), so the contract says Replay().
    let (ps, amounts): (Vec<Address>, Vec<U256>) = pay.iter().copied().unzip();
    let batch = SettleBatch {
        payer,
        root: s.root,
        total,
        payoutsHash: payouts_hash(&ps, &amounts),
        batchNonce: 1,
    };
    let sig = key.sign_batch(&batch, &node.ledger).expect("sign batch");
    let e = client
        .submit_batch(payer, s.root, &pay, 1, &sig)
        .await
        .expect_err("replay");
    assert!(matches!(e, ChainError::Replay), "{e}");
    // The very same call again: its nonce is spent, Replay() is checked first.
    let first_sig = {
        let b = SettleBatch {
            batchNonce: 0,
            ..batch
        };
        key.sign_batch(&b, &node.ledger).expect("sign batch")
    };
    let e = client
        .submit_batch(payer, s.root, &pay, 0, &first_sig)
        .await
        .expect_err("replay");
    assert!(matches!(e, ChainError::Replay), "{e}");

    // A fresh root with a stale nonce.
    let fresh = keccak256("fresh root");
    let batch = SettleBatch {
        root: fresh,
        batchNonce: 0,
        ..batch
    };
    let sig = key.sign_batch(&batch, &node.ledger).expect("sign batch");
    let e = client
        .submit_batch(payer, fresh, &pay, 0, &sig)
        .await
        .expect_err("stale nonce");
    assert!(
        matches!(
            e,
            ChainError::InvalidNonce {
                expected: 1,
                got: 0
            }
        ),
        "{e}"
    );

    // A second batch: the first root is still found settled, in its own block.
    let second = sign_all(&key, &node.ledger, 3, 3, U256::from(FEE), &payees);
    let s2 = client.settle(&key, &second, &pay).await.expect("settle 2");
    assert!(!s2.already_settled);
    assert_eq!(s2.batch_nonce, 1);
    assert!(client.is_settled(payer, s.root).await.expect("settled"));
    assert!(client.is_settled(payer, s2.root).await.expect("settled"));
    assert!(!client.is_settled(payer, fresh).await.expect("settled"));
    assert_eq!(
        client
            .settlement_of(payer, s.root)
            .await
            .expect("settlement_of")
            .map(|found| found.tx_hash),
        Some(s.tx_hash)
    );
    let sent_before = sent_by(&client, payer).await;
    let again = client
        .settle(&key, &reordered, &pay)
        .await
        .expect("settle the first batch again");
    assert!(again.already_settled);
    assert_eq!(again.tx_hash, s.tx_hash);
    assert_eq!(again.batch_nonce, 0);
    assert_eq!(sent_by(&client, payer).await, sent_before);
    // The first batch's own signed call once more: Replay (its root is settled).
    let e = client
        .submit_batch(payer, s.root, &pay, 0, &first_sig)
        .await
        .expect_err("replay of an older batch");
    assert!(matches!(e, ChainError::Replay), "{e}");
    // The older root re-signed for the payer's next nonce, as a settler that lost track of it
    // would: the contract still refuses it, and nothing moves.
    let deposit_before = client.deposits(payer).await.expect("deposits");
    let resigned = key
        .sign_batch(
            &SettleBatch {
                root: s.root,
                batchNonce: 2,
                ..batch
            },
            &node.ledger,
        )
        .expect("sign batch");
    let e = client
        .submit_batch(payer, s.root, &pay, 2, &resigned)
        .await
        .expect_err("an older root re-signed");
    assert!(matches!(e, ChainError::Replay), "{e}");
    assert_eq!(
        client.deposits(payer).await.expect("deposits"),
        deposit_before
    );
    assert_eq!(client.batch_nonce(payer).await.expect("nonce"), 2);

    // Payees withdraw.
    let payee = node.client(2).await;
    let before = payee
        .provider()
        .get_balance(payees[0])
        .await
        .expect("balance");
    let got = payee.withdraw().await.expect("withdraw");
    assert_eq!(got, pay[0].1 * U256::from(2), "paid by both batches");
    assert_eq!(payee.balance(payees[0]).await.expect("balance"), U256::ZERO);
    let after = payee
        .provider()
        .get_balance(payees[0])
        .await
        .expect("balance");
    assert!(after > before, "the payee received ether (net of gas)");
    let e = payee.withdraw().await.expect_err("nothing left");
    assert!(matches!(e, ChainError::NothingToWithdraw), "{e}");
}

#[test]
fn contract_hashes_version_1_and_version_2_receipts_like_rust() {
    block_on(async {
        let node = Node::start().await;
        let client = node.client(1).await;
        let payees = [node.address(2), node.address(3)];
        let v2 = UsageReceipt {
            attributionHash: keccak256("attribution record"),
            ..receipt(node.address(1), 1, U256::from(FEE), &payees)
        };
        let v1 = UsageReceipt {
            version: 1,
            attributionHash: Default::default(),
            ..v2.clone()
        };
        let zero = UsageReceipt {
            attributionHash: Default::default(),
            ..v2.clone()
        };
        let digests = [
            v1.digest(&node.ledger),
            v2.digest(&node.ledger),
            zero.digest(&node.ledger),
        ];
        // Three different typed-data hashes: the version picks the type, the hash is signed.
        assert_ne!(digests[0], digests[1]);
        assert_ne!(digests[1], digests[2]);
        for (r, d) in [v1, v2, zero].iter().zip(digests) {
            assert_eq!(
                client.hash_receipt(r).await.expect("hashReceipt"),
                d,
                "v{}",
                r.version
            );
        }
    });
}

#[test]
fn batch_signed_by_another_key_is_refused() {
    block_on(batch_signed_by_another_key_is_refused_impl());
}

async fn batch_signed_by_another_key_is_refused_impl() {
    let node = Node::start().await;
    let client = node.client(1).await;
    let key = node.payer_key(1);
    let other = node.payer_key(5);
    let payees = [node.address(2), node.address(3), node.address(4)];
    client.deposit(U256::from(ETH)).await.expect("deposit");
    let receipts = sign_all(&key, &node.ledger, 0, 3, U256::from(FEE), &payees);
    let pay = payouts(&payees, U256::from(3 * FEE));

    // Off chain: the receipts are not owed by the signing key.
    let e = client
        .settle(&other, &receipts, &pay)
        .await
        .expect_err("wrong payer");
    assert!(matches!(e, ChainError::WrongPayer { index: 0, .. }), "{e}");

    // On chain: a SettleBatch for payer 1 signed by key 5.
    let root = BatchTree::of_receipts(&receipts, &node.ledger)
        .expect("tree")
        .root();
    let (ps, amounts): (Vec<Address>, Vec<U256>) = pay.iter().copied().unzip();
    let batch = SettleBatch {
        payer: key.address(),
        root,
        total: U256::from(3 * FEE),
        payoutsHash: payouts_hash(&ps, &amounts),
        batchNonce: 0,
    };
    let sig = other.sign_batch(&batch, &node.ledger).expect("sign");
    let e = client
        .submit_batch(key.address(), root, &pay, 0, &sig)
        .await
        .expect_err("bad signature");
    assert!(matches!(e, ChainError::BadSignature), "{e}");

    // Off chain: a receipt signature that is not the payer's.
    let mut forged = receipts.clone();
    forged[1].signature = other
        .sign(
            receipt(other.address(), 1, U256::from(FEE), &payees),
            &node.ledger,
        )
        .expect("sign")
        .signature;
    let e = client
        .settle(&key, &forged, &pay)
        .await
        .expect_err("forged receipt");
    assert!(
        matches!(e, ChainError::InvalidReceipt { index: 1, .. }),
        "{e}"
    );

    // Payouts that do not match the fees.
    let e = client
        .settle(&key, &receipts, &payouts(&payees, U256::from(2 * FEE)))
        .await
        .expect_err("payout mismatch");
    assert!(matches!(e, ChainError::PayoutMismatch { .. }), "{e}");
    assert!(
        !client
            .is_settled(key.address(), root)
            .await
            .expect("settled")
    );
    assert_eq!(
        client
            .settlement_of(key.address(), root)
            .await
            .expect("settlement_of"),
        None
    );
}

#[test]
fn wrong_chain_id_or_address_is_refused_before_sending() {
    block_on(wrong_chain_id_or_address_is_refused_before_sending_impl());
}

async fn wrong_chain_id_or_address_is_refused_before_sending_impl() {
    let node = Node::start().await;
    let wrong_chain = Ledger {
        chain_id: node.ledger.chain_id + 1,
        ..node.ledger
    };
    let e = LedgerClient::connect(&node.url(), node.signer(1), wrong_chain)
        .await
        .expect_err("wrong chain");
    assert!(
        matches!(e, ChainError::WrongChain { expected, actual }
            if expected == node.ledger.chain_id + 1 && actual == node.ledger.chain_id),
        "{e}"
    );
    let nowhere = Ledger {
        contract: Address::repeat_byte(0x42),
        ..node.ledger
    };
    let e = LedgerClient::connect(&node.url(), node.signer(1), nowhere)
        .await
        .expect_err("no contract");
    assert!(matches!(e, ChainError::UnknownContract { .. }), "{e}");
    // Nothing was sent by account 1.
    let client = node.client(1).await;
    assert_eq!(sent_by(&client, node.address(1)).await, 0);
}

#[test]
fn insufficient_deposit_is_typed_and_sends_nothing() {
    block_on(insufficient_deposit_is_typed_and_sends_nothing_impl());
}

async fn insufficient_deposit_is_typed_and_sends_nothing_impl() {
    let node = Node::start().await;
    let client = node.client(1).await;
    let key = node.payer_key(1);
    let payees = [node.address(2), node.address(3), node.address(4)];
    let have = U256::from(FEE); // covers one receipt of three
    client.deposit(have).await.expect("deposit");
    let receipts = sign_all(&key, &node.ledger, 0, 3, U256::from(FEE), &payees);
    let need = U256::from(3 * FEE);
    let count = sent_by(&client, key.address()).await;
    let e = client
        .settle(&key, &receipts, &payouts(&payees, need))
        .await
        .expect_err("insufficient");
    assert!(
        matches!(e, ChainError::InsufficientDeposit { have: h, need: n } if h == have && n == need),
        "{e}"
    );
    assert_eq!(sent_by(&client, key.address()).await, count);
    assert_eq!(
        client.deposits(key.address()).await.expect("deposits"),
        have
    );
}

#[test]
fn unreachable_rpc_is_a_prompt_rpc_error() {
    block_on(unreachable_rpc_is_a_prompt_rpc_error_impl());
}

async fn unreachable_rpc_is_a_prompt_rpc_error_impl() {
    let url = "http://127.0.0.1:1";
    let started = Instant::now();
    let e = LedgerClient::connect(
        url,
        PrivateKeySigner::random(),
        Ledger {
            chain_id: 31_337,
            contract: Address::repeat_byte(1),
        },
    )
    .await
    .expect_err("unreachable");
    let took = started.elapsed();
    assert!(
        matches!(&e, ChainError::Rpc { url: u, .. } if u == url),
        "{e}"
    );
    assert!(e.to_string().contains(url), "{e}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let e = chain::deploy(url, PrivateKeySigner::random())
        .await
        .expect_err("unreachable");
    assert!(matches!(e, ChainError::Rpc { .. }), "{e}");
}

#[test]
fn gas_per_receipt_for_100_receipts_and_3_payees() {
    block_on(gas_per_receipt_for_100_receipts_and_3_payees_impl());
}

async fn gas_per_receipt_for_100_receipts_and_3_payees_impl() {
    let node = Node::start().await;
    let client = node.client(1).await;
    let key = node.payer_key(1);
    let payees = [node.address(2), node.address(3), node.address(4)];
    client.deposit(U256::from(ETH)).await.expect("deposit");

    let mut gas = Vec::new();
    for (batch, start) in [0u64, 100].into_iter().enumerate() {
        let receipts = sign_all(&key, &node.ledger, start, 100, U256::from(FEE), &payees);
        let pay = payouts(&payees, U256::from(100 * FEE));
        let s = client.settle(&key, &receipts, &pay).await.expect("settle");
        assert_eq!(s.batch_nonce, batch as u64);
        gas.push(s.gas_used);
    }
    println!(
        "gas for 100 receipts / 3 payees: first batch (new payees) {} ({} per receipt), \
         next batch (payees with a balance) {} ({} per receipt)",
        gas[0],
        gas[0] / 100,
        gas[1],
        gas[1] / 100
    );
    assert!(
        gas[1] / 100 <= 850,
        "steady-state gas per receipt {} > 850",
        gas[1] / 100
    );
}

#[test]
fn gas_per_receipt_for_100_receipts_and_8_payees() {
    block_on(gas_per_receipt_for_100_receipts_and_8_payees_impl());
}

/// The realistic batch: 8 payees (5 contributors, the model owner, the adapter owner, the
/// treasury), 100 receipts, all costs included (the transaction's 21,000 and its calldata).
/// Each batch writes one fresh slot (`settledAt(payer, root)`, ≈ 17k more than the
/// overwritten `lastRoot` slot it replaced): ≈ 1,100 gas per receipt at batch 100, under
/// 1,000 from batch 110 on.
async fn gas_per_receipt_for_100_receipts_and_8_payees_impl() {
    let node = Node::start().await;
    let client = node.client(1).await;
    let key = node.payer_key(1);
    let contributors: Vec<Address> = (2..7).map(|i| node.address(i)).collect();
    let (model_owner, adapter_owner, treasury) =
        (node.address(7), node.address(8), node.address(9));
    client.deposit(U256::from(ETH)).await.expect("deposit");

    // Per batch of 100 fees: contributors 70 % (uneven), adapter 10 %, model 15 %, treasury 5 %.
    let total = U256::from(100 * FEE);
    let bps = |b: u64| total * U256::from(b) / U256::from(10_000);
    let mut pay: Vec<(Address, U256)> = contributors
        .iter()
        .zip([2_100, 1_750, 1_400, 1_050, 700])
        .map(|(c, b)| (*c, bps(b)))
        .collect();
    pay.push((adapter_owner, bps(1_000)));
    pay.push((model_owner, bps(1_500)));
    let rest = total - pay.iter().fold(U256::ZERO, |acc, (_, a)| acc + *a);
    pay.push((treasury, rest));
    assert_eq!(pay.len(), 8);

    let mut gas = Vec::new();
    for (batch, start) in [0u64, 100, 200].into_iter().enumerate() {
        let receipts = sign_all(
            &key,
            &node.ledger,
            start,
            100,
            U256::from(FEE),
            &contributors[..3],
        );
        let s = client.settle(&key, &receipts, &pay).await.expect("settle");
        assert_eq!(s.batch_nonce, batch as u64);
        assert_eq!(s.payee_count, 8);
        gas.push(s.gas_used);
    }
    println!(
        "gas for 100 receipts / 8 payees: first batch (new payees) {} ({} per receipt), \
         next batches (payees with a balance) {} and {} ({} per receipt)",
        gas[0],
        gas[0] / 100,
        gas[1],
        gas[2],
        gas[2] / 100
    );
    // Steady state costs the same every batch: one fresh slot (the settled root) each.
    assert!(gas[1].abs_diff(gas[2]) < 100, "{gas:?}");
    for g in &gas[1..] {
        assert!(
            g / 100 <= 1_120,
            "steady-state gas per receipt {} > 1,120 (batch gas {g})",
            g / 100
        );
        assert!(
            g / 110 <= 1_000,
            "steady-state gas per receipt at batch 110 {} > 1,000 (batch gas {g})",
            g / 110
        );
    }
}

mod journal;
mod trained;
