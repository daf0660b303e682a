//! Settlement through the engine against a real anvil (feature `onchain`).

use alloy_primitives::{U256, address};
use tribute::attribution::chain::{self, LedgerClient};
use tribute::attribution::journal::StateKind;
use tribute::attribution::receipt::{PayerKey, named_id};
use tribute::config::ChainConfig;
use tribute_common::anvil::LocalAnvil;

use super::*;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn settle_pays_contributors_and_a_down_chain_keeps_receipts_pending() {
    let anvil = LocalAnvil::start(&[]).unwrap_or_else(|e| panic!("{e}"));
    let url = anvil.url();
    let key = PayerKey::from_hex(KEY0).expect("key");
    let ledger = block_on(chain::deploy(&url, key.signer().clone())).expect("deploy");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = signed_config(dir.path());
    config.receipts.ledger = Some(ledger);
    config.chain = Some(ChainConfig {
        rpc: url.clone(),
        ..ChainConfig::default()
    });
    let engine = engine_in(dir.path(), config, Some(key.clone()), true);
    let model_owner = address!("00000000000000000000000000000000000000aa");
    block_on(async {
        let client = LedgerClient::connect(&url, key.signer().clone(), ledger)
            .await
            .expect("connect");
        client
            .register_model(named_id(&engine.model().name), model_owner)
            .await
            .expect("register");
        client
            .deposit(U256::from(10u128.pow(18)))
            .await
            .expect("deposit");
    });
    let a = engine
        .ask(QUESTION)
        .top_k(3)
        .max_tokens(24)
        .run()
        .expect("ask");
    let b = engine
        .ask("At what gust speed should Zephyr pilots land?")
        .top_k(3)
        .max_tokens(24)
        .run()
        .expect("ask");
    let report = engine.settle_blocking().expect("settle");
    assert_eq!(report.confirmed_receipts(), 2);
    assert_eq!(
        engine
            .receipts(Some(StateKind::Confirmed))
            .expect("r")
            .len(),
        2
    );
    let balances = block_on(async {
        let client = LedgerClient::connect(&url, key.signer().clone(), ledger)
            .await
            .expect("connect");
        let mut out = Vec::new();
        for who in [ALICE, BOB] {
            out.push(
                client
                    .balance(who.parse().expect("addr"))
                    .await
                    .expect("balance"),
            );
        }
        out.push(client.balance(model_owner).await.expect("balance"));
        out
    });
    // Each contributor gets 70 % of each fee × their citation weight; the model owner
    // 15 % + the 10 % adapter pool (no adapters) of both fees.
    let fee = U256::from(10u128.pow(15));
    let share = |who: &str| -> U256 {
        [&a, &b]
            .iter()
            .flat_map(|x| x.citations.iter())
            .filter(|c| c.contributor == who)
            .map(|c| U256::from(c.weight_bps))
            .sum::<U256>()
    };
    for (i, who) in [ALICE, BOB].into_iter().enumerate() {
        let want = fee * U256::from(7_000) * share(who) / U256::from(10_000u64 * 10_000);
        let diff = if balances[i] > want {
            balances[i] - want
        } else {
            want - balances[i]
        };
        assert!(diff <= U256::from(2), "{who}: {} vs {want}", balances[i]);
    }
    assert_eq!(
        balances[2],
        fee * U256::from(2 * 2_500) / U256::from(10_000)
    );

    // The chain goes down: asking still works, settling fails, receipts stay pending.
    drop(anvil);
    let c = engine
        .ask(QUESTION)
        .top_k(2)
        .max_tokens(16)
        .run()
        .expect("ask");
    let id = c.receipt.expect("receipt").receipt.receiptId;
    let e = engine.settle_blocking().expect_err("chain down");
    assert!(matches!(e, Error::Settle(_)), "{e}");
    let pending = engine.receipts(Some(StateKind::Pending)).expect("r");
    assert!(pending.iter().any(|j| j.receipt.receipt.receiptId == id));
}
