//! One Postgres knowledge base and receipt journal shared by three processes at once: two
//! `tribute` processes ingest their own documents and ask into it, a third settles the
//! shared journal on anvil while they do, and everything is paid exactly once. Needs the
//! server of `TRIBUTE_TEST_PG_URL` (`scripts/with-postgres.sh` starts one); unset, it is
//! skipped with a note, except under `CI=true`, where it fails.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use alloy_primitives::{Address, U256};
use tribute::attribution::receipt::{PayerKey, SignedReceipt};

use crate::chain::{DEV_KEY, MODEL, addr, anvil, json, ok, who, with_key};
use crate::{run, stderr, stdout, tribute};

fn pg_url() -> Option<String> {
    match std::env::var("TRIBUTE_TEST_PG_URL") {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI=true but TRIBUTE_TEST_PG_URL is not set: run the tests through scripts/with-postgres.sh"
            );
            eprintln!("note: TRIBUTE_TEST_PG_URL is not set: the shared Postgres test is skipped");
            None
        }
    }
}

/// One app process's documents, by its own contributor.
fn documents(dir: &Path, app: usize, contributor: Address) -> std::path::PathBuf {
    let facts = [
        "The Orlan lighthouse on Cape Mirel is painted red and white and was lit in 1902.",
        "The Kessa ferry crosses the Tarn strait four times a day and carries forty cars.",
    ];
    let path = dir.join(format!("app{app}.jsonl"));
    let line = serde_json::json!({
        "id": format!("app{app}-fact"),
        "text": facts[app],
        "contributor": contributor.to_checksum(None),
        "datanet": format!("app{app}"),
    });
    std::fs::write(&path, format!("{line}\n")).expect("write documents");
    path
}

/// `tribute receipts settle` of the shared journal, in batches of one.
fn settle(db: &str, rpc: &str, ledger: &Path) {
    let o = run(with_key()
        .args([
            "receipts",
            "settle",
            "--batch",
            "1",
            "--json",
            "--journal",
            db,
        ])
        .args(["--rpc", rpc, "--ledger"])
        .arg(ledger));
    assert!(o.status.success(), "settle: {}{}", stdout(&o), stderr(&o));
}

#[test]
fn two_apps_and_a_settler_share_one_postgres_and_pay_once() {
    let Some(url) = pg_url() else { return };
    let db = tribute_common::scratch_db::fresh_database(&url, "tribute_cli_shared")
        .unwrap_or_else(|e| panic!("TRIBUTE_TEST_PG_URL is unreachable: {e}"));
    let anvil = anvil();
    let rpc = anvil.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.json");
    ok(
        &run(with_key()
            .args(["chain", "deploy", "--rpc", &rpc, "--out"])
            .arg(&ledger)),
        "deploy",
    );
    let model_owner = who("shared-model-owner");
    let chain = |c: &mut Command| {
        c.args(["--rpc", &rpc, "--ledger"]).arg(&ledger);
    };
    let mut c = with_key();
    c.args(["chain", "register-model", MODEL, "--owner"])
        .arg(model_owner.to_string());
    chain(&mut c);
    ok(&run(&mut c), "register-model");
    let mut c = with_key();
    c.args(["chain", "deposit", "0.5ether"]);
    chain(&mut c);
    ok(&run(&mut c), "deposit");

    // Two apps: each ingests its documents into the shared KB and asks twice, journaling
    // into the shared journal; a settler settles batches of one while they run.
    let contributors = [who("app0-contributor"), who("app1-contributor")];
    let questions = [
        "What colours is the Orlan lighthouse painted?",
        "How many cars does the Kessa ferry carry?",
    ];
    let apps_done = Arc::new(AtomicBool::new(false));
    let settler = {
        let (db, rpc, ledger, done) = (db.clone(), rpc.clone(), ledger.clone(), apps_done.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !done.load(Ordering::SeqCst) {
                settle(&db, &rpc, &ledger);
                runs += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            runs
        })
    };
    let apps: Vec<_> = (0..2)
        .map(|app| {
            let docs = documents(dir.path(), app, contributors[app]);
            let (db, ledger, question) = (db.clone(), ledger.clone(), questions[app]);
            std::thread::spawn(move || {
                ok(
                    &run(tribute().args(["ingest", "--kb", &db]).arg(&docs)),
                    "ingest",
                );
                for n in 0..2 {
                    let o = run(with_key()
                        .args([
                            "ask",
                            "--json",
                            "--max-tokens",
                            "8",
                            "--method",
                            "retrieval",
                        ])
                        .args(["--kb", &db, "--journal", &db, "--ledger"])
                        .arg(&ledger)
                        .arg(format!("{question} ({n})")));
                    json(&ok(&o, "ask"));
                }
            })
        })
        .collect();
    for a in apps {
        a.join().expect("app process");
    }
    apps_done.store(true, Ordering::SeqCst);
    let settler_runs = settler.join().expect("settler");
    eprintln!("the settler ran {settler_runs} times while the apps asked");
    assert!(settler_runs > 0);
    // A last settlement for whatever the apps journaled after the settler's last run.
    settle(&db, &rpc, &ledger);

    // Every receipt confirmed once; the deposit paid exactly the fees, to the payees.
    let listed = ok(
        &run(tribute().args(["receipts", "list", "--json", "--journal", &db])),
        "list",
    );
    let mut lines: Vec<serde_json::Value> = listed.lines().map(json).collect();
    let stats = lines.pop().expect("stats");
    assert_eq!(stats["stats"]["receipts"], 4, "{stats}");
    assert_eq!(stats["stats"]["confirmed"], 4, "{stats}");
    let batches: BTreeSet<String> = lines
        .iter()
        .map(|l| l["batchId"].as_str().expect("batch id").to_owned())
        .collect();
    let exported = ok(
        &run(tribute().args(["receipts", "export", "--journal", &db])),
        "export",
    );
    let receipts: Vec<SignedReceipt> = exported
        .lines()
        .map(|l| SignedReceipt::from_json(l).expect("receipt"))
        .collect();
    let fees: U256 = receipts.iter().map(|r| r.receipt.fee).sum();
    let cited: BTreeSet<Address> = receipts
        .iter()
        .flat_map(|r| r.receipt.chunks.iter().map(|c| c.contributor))
        .collect();
    assert_eq!(
        cited,
        contributors.into_iter().collect(),
        "both apps' data cited"
    );
    let payer = PayerKey::from_hex(DEV_KEY).expect("key").address();
    let mut c = tribute();
    c.args(["chain", "balance", "--deposit", "--json"]);
    chain(&mut c);
    for a in cited.iter().chain([&model_owner, &payer]) {
        c.arg(a.to_string());
    }
    let balances = json(&ok(&run(&mut c), "balance"));
    let mut paid = U256::ZERO;
    let mut deposit = U256::ZERO;
    for b in balances.as_array().expect("array") {
        paid += b["balance"]
            .as_str()
            .expect("wei")
            .parse::<U256>()
            .expect("wei");
        if addr(&b["address"]) == payer {
            deposit = b["deposit"].as_str().expect("wei").parse().expect("wei");
        }
    }
    assert_eq!(paid, fees, "the payees hold exactly the fees");
    assert_eq!(
        U256::from(500_000_000_000_000_000_u64) - deposit,
        fees,
        "the deposit paid exactly the fees"
    );
    assert_eq!(batches.len(), 4, "one batch per receipt (--batch 1)");
}
