//! A chain node that goes away in the middle of `POST /v1/receipts/settle`: between the
//! server and a real anvil sits a proxy that cuts every connection after a given number of
//! JSON-RPC requests, at a later point on each try. Each cut settlement answers 502 with an
//! OpenAI-shaped error, the server goes on serving, and once the node is back the next
//! settlement finishes the job: every receipt confirmed, the deposit down by exactly the
//! fees, nobody paid twice.
#![cfg(feature = "onchain")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tribute::attribution::chain::{LedgerClient, deploy};
use tribute::attribution::journal::StateKind;
use tribute::attribution::receipt::{PayerKey, named_id};
use tribute::{Address, U256};
use tribute_common::anvil::LocalAnvil;
use tribute_server::ServerOptions;

use super::{KEY0, LEDGER, base_model, engine_with, get_json, post_json, start};

/// The plug between the server and the node: `budget` JSON-RPC requests pass (negative:
/// any number), then every connection is cut and new ones are closed at once.
struct Plug {
    budget: AtomicI64,
    down: AtomicBool,
    cut: Notify,
}

impl Plug {
    fn set(&self, budget: i64) {
        self.budget.store(budget, Ordering::SeqCst);
        self.down.store(false, Ordering::SeqCst);
    }

    /// Counts the requests in a chunk sent to the node; `false` once the budget is spent.
    fn pass(&self, chunk: &[u8]) -> bool {
        if self.down.load(Ordering::SeqCst) {
            return false;
        }
        let requests = chunk.windows(8).filter(|w| w == b"\"method\"").count() as i64;
        if requests > 0 && self.budget.load(Ordering::SeqCst) >= 0 {
            let left = self.budget.fetch_sub(requests, Ordering::SeqCst) - requests;
            if left < 0 {
                self.down.store(true, Ordering::SeqCst);
                self.cut.notify_waiters();
                return false;
            }
        }
        true
    }
}

async fn proxy(listener: TcpListener, node: u16, plug: Arc<Plug>) {
    while let Ok((mut client, _)) = listener.accept().await {
        if plug.down.load(Ordering::SeqCst) {
            continue; // closed at once: the node is gone
        }
        let plug = plug.clone();
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", node)).await else {
                return;
            };
            let (mut buf_in, mut buf_out) = ([0u8; 16_384], [0u8; 16_384]);
            loop {
                tokio::select! {
                    n = client.read(&mut buf_in) => match n {
                        Ok(n) if n > 0 && plug.pass(&buf_in[..n]) => {
                            if upstream.write_all(&buf_in[..n]).await.is_err() { break; }
                        }
                        _ => break,
                    },
                    n = upstream.read(&mut buf_out) => match n {
                        Ok(n) if n > 0 && !plug.down.load(Ordering::SeqCst) => {
                            if client.write_all(&buf_out[..n]).await.is_err() { break; }
                        }
                        _ => break,
                    },
                    () = plug.cut.notified() => break,
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_goes_away_mid_settlement_loses_and_doubles_nothing() {
    let anvil = LocalAnvil::start(&[]).unwrap_or_else(|e| panic!("{e}"));
    let node_url = anvil.url();
    let key = PayerKey::from_hex(KEY0).expect("key");
    let ledger = deploy(&node_url, key.signer().clone())
        .await
        .expect("deploy");
    assert_eq!(
        ledger, LEDGER,
        "the first contract of anvil's first account"
    );
    let chain = LedgerClient::connect(&node_url, key.signer().clone(), ledger)
        .await
        .expect("connect");
    let deposit = U256::from(10_u128.pow(18));
    chain.deposit(deposit).await.expect("deposit");

    let plug = Arc::new(Plug {
        budget: AtomicI64::new(-1),
        down: AtomicBool::new(false),
        cut: Notify::new(),
    });
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let proxy_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(proxy(listener, anvil.port(), plug.clone()));

    let dir = tempfile::tempdir().expect("tempdir");
    let owner = Address::from_word(named_id("owner"));
    let engine = engine_with(dir.path(), |c| {
        c.chain = Some(tribute::config::ChainConfig {
            rpc: proxy_url.clone(),
            batch_size: 1,
            fallback_owner: Some(owner),
            timeout_secs: 5,
            ..Default::default()
        });
    });
    let server = start(engine, ServerOptions::default()).await;
    let model = base_model(&server);
    chain
        .register_model(named_id(&model), owner)
        .await
        .expect("register model");
    for n in 0..3 {
        let (status, v) = post_json(
            &server,
            "/v1/chat/completions",
            &json!({
                "model": model,
                "messages": [{"role": "user", "content": format!("{} (ask {n})", super::QUESTION)}],
                "max_tokens": 4,
                "method": "retrieval",
            }),
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    let receipts = server.engine.receipts(None).expect("receipts");
    assert_eq!(receipts.len(), 3);
    let fees: U256 = receipts.iter().map(|r| r.receipt.receipt.fee).sum();

    // Cut the node after 1, 4, 7, … requests until a settlement gets through.
    let mut cuts = 0;
    let mut budget = 1;
    loop {
        plug.set(budget);
        let (status, v) = post_json(&server, "/v1/receipts/settle", &json!({})).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 502, "{v}");
        assert_eq!(v["error"]["code"], "chain_error", "{v}");
        cuts += 1;
        // The server goes on serving while the node is away.
        let (status, _) = get_json(&server, "/v1/receipts").await;
        assert_eq!(status, 200);
        budget += 3;
        assert!(budget < 400, "no settlement got through");
    }
    eprintln!("settlement cut {cuts} times; it got through with {budget} requests");
    assert!(cuts >= 3, "the node was cut {cuts} times only");

    // Back for good: whatever the cuts left behind is finished, and paid once.
    plug.set(-1);
    let (status, v) = post_json(&server, "/v1/receipts/settle", &json!({})).await;
    assert_eq!(status, 200, "{v}");
    let after = server.engine.receipts(None).expect("receipts");
    assert!(
        after.iter().all(|r| r.state.kind() == StateKind::Confirmed),
        "{:?}",
        after.iter().map(|r| r.state.kind()).collect::<Vec<_>>()
    );
    let left = chain.deposits(key.address()).await.expect("deposit");
    assert_eq!(deposit - left, fees, "the deposit paid exactly the fees");
    let mut payees: Vec<Address> = receipts
        .iter()
        .flat_map(|r| r.receipt.receipt.chunks.iter().map(|c| c.contributor))
        .chain([owner, key.address()])
        .collect();
    payees.sort();
    payees.dedup();
    let mut paid = U256::ZERO;
    for p in payees {
        paid += chain.balance(p).await.expect("balance");
    }
    assert_eq!(paid, fees, "the payees hold exactly the fees");
    let roots: std::collections::BTreeSet<_> =
        after.iter().filter_map(|r| r.state.batch_id()).collect();
    assert_eq!(
        chain.batch_nonce(key.address()).await.expect("nonce"),
        roots.len() as u64,
        "one settlement per batch"
    );
}
