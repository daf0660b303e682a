//! Property tests of the `TributeLedger` contract (`--features onchain`): random sequences of
//! deposits, deposit withdrawals, settlements, replays, forged settlements, payee withdrawals
//! and registry registrations/transfers run against one local anvil, each case from the same
//! snapshot (taken after deployment, reverted after the case). After every operation the chain
//! must equal a plain Rust model of the ledger:
//!
//! - **conservation**: the ether the contract holds = Σ paid in − Σ paid out
//!   = Σ payer deposits + Σ payee balances; every deposit, balance, batch nonce, latest root
//!   and registry owner equals the model's;
//! - **payouts = the off-chain split, to the wei**: each settlement credits every payee exactly
//!   Σ over the batch's receipts of `RewardConfig::split` (the case's random policy, owners read
//!   from the ledger's registry), and debits the payer exactly Σ fees;
//! - **no batch settles twice**: settling a settled batch again returns the first settlement and
//!   sends nothing; its signed call relayed again, or the latest root re-signed for the next
//!   nonce, reverts (also when forced on chain without simulation); each settled root has
//!   exactly one `BatchSettled` event;
//! - **a wrong signer or a wrong domain always reverts**: a `SettleBatch` signed by another key
//!   or for another chain id or contract is `BadSignature()`, also when mined; receipts signed
//!   for another chain are refused off chain.
//!
//! 32 cases of 4 to 12 operations (two deposits, then random ones) by default;
//! `PROPTEST_CASES` overrides the count, `PROPTEST_RNG_SEED` fixes the seed. anvil comes from
//! `attribution/contracts/node_modules` (`npm ci` there) or PATH; without it the test fails,
//! it never passes silently.

#![cfg(feature = "onchain")]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::time::Instant;

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, B256, Bytes, Signature, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tribute_attribution::chain::{self, ChainError, LedgerClient, TributeLedger};
use tribute_attribution::receipt::{
    AdapterUse, CitedChunk, Ledger, PayerKey, RECEIPT_VERSION, SettleBatch, SignedReceipt,
    UsageReceipt, payouts_hash,
};
use tribute_attribution::settle::{Owners, batch_payouts};
use tribute_attribution::split::{RewardConfig, SplitPolicy, SplitRequest};

/// Cases run when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 32;
/// The most operations in one case.
const MAX_OPS: usize = 12;
/// anvil's accounts: 0 settles (sends every `settleBatch`), 1-2 pay, 3-8 contribute, own models
/// and adapters and get paid, 9 is the treasury.
const ACCOUNTS: usize = 10;
const SETTLER: usize = 0;
const PAYERS: [usize; 2] = [1, 2];
const PEOPLE: std::ops::RangeInclusive<usize> = 3..=8;
const TREASURY: usize = 9;
/// Model and adapter ids in play (`keccak256("model-i")`, `keccak256("adapter-i")`).
const IDS: usize = 2;
/// Gas of a transaction forced on chain without simulation (a mined revert).
const FORCED_GAS: u64 = 500_000;

fn model_id(i: usize) -> B256 {
    keccak256(format!("model-{i}"))
}

fn adapter_id(i: usize) -> B256 {
    keccak256(format!("adapter-{i}"))
}

fn fail(e: impl Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn anvil_path() -> PathBuf {
    tribute_common::anvil::anvil_binary().unwrap_or_else(|| {
        panic!("anvil not found: run `cd attribution/contracts && npm ci` or put foundry's anvil on PATH")
    })
}

mod model;
mod ops;
mod settlement;
mod world;

use model::*;
use ops::*;
use world::*;

#[test]
fn ledger_invariants_hold_under_random_operation_sequences() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let world = runtime.block_on(World::start());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let config = Config {
        cases,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    };
    let tally = Tally::default();
    let ops = RefCell::new(0_usize);
    let started = Instant::now();
    let outcome = TestRunner::new(config).run(&case(), |case| {
        *ops.borrow_mut() += case.ops.len();
        runtime.block_on(world.run_case(&case, &tally))
    });
    println!(
        "{cases} cases, {} operations in {:.1} s",
        ops.borrow(),
        started.elapsed().as_secs_f64()
    );
    for (what, n) in tally.borrow().iter() {
        println!("  {n:>4}  {what}");
    }
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
