//! `tribute chain …` and `tribute receipts …` end to end: a real anvil on a free port
//! (`attribution/contracts/node_modules/.bin/anvil`, installed by `npm ci` there, or `anvil`
//! on PATH), the real binary, receipts signed and journaled with the `tribute` crate.
#![cfg(feature = "onchain")]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256, keccak256};
use serde_json::Value;
use tribute::attribution::journal::Journal;
use tribute::attribution::receipt::{
    AdapterUse, CitedChunk, Ledger, PayerKey, RECEIPT_VERSION, SignedReceipt, UsageReceipt,
    named_id,
};
use tribute::attribution::settle::{Owners, batch_payouts};
use tribute::attribution::split::RewardConfig;
use tribute_common::anvil::LocalAnvil;

use crate::{run, stderr, stdout, tribute};

/// Anvil's first development account: a public key, funded on every anvil, for tests only.
pub(crate) const DEV_KEY: &str =
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
pub(crate) const MODEL: &str = "SmolLM2-135M-Instruct";
const ADAPTER: &str = "zephyr";
/// 0.001 ether.
const FEE: u64 = 1_000_000_000_000_000;

/// A local anvil on a free port, killed when dropped.
pub(crate) fn anvil() -> LocalAnvil {
    LocalAnvil::start(&[]).unwrap_or_else(|e| panic!("{e}"))
}

/// `tribute` with the dev key in TRIBUTE_KEY (never on the command line).
pub(crate) fn with_key() -> Command {
    let mut c = tribute();
    c.env("TRIBUTE_KEY", DEV_KEY).env_remove("TRIBUTE_RPC");
    c
}

pub(crate) fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        stderr(o),
        stdout(o)
    );
    stdout(o)
}

pub(crate) fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub(crate) fn addr(v: &Value) -> Address {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {v}"))
}

fn dev_key() -> PayerKey {
    PayerKey::from_hex(DEV_KEY).expect("dev key")
}

pub(crate) fn who(label: &str) -> Address {
    Address::from_word(keccak256(format!("cli-test/{label}")))
}

/// A receipt citing three contributors 50/30/20, with one adapter.
fn receipt(payer: Address, n: u64, contributors: &[Address; 3]) -> UsageReceipt {
    UsageReceipt {
        version: RECEIPT_VERSION,
        receiptId: keccak256(format!("cli-receipt-{n}")),
        payer,
        servingNode: who("node"),
        modelId: named_id(MODEL),
        adapters: vec![AdapterUse {
            adapterId: named_id(ADAPTER),
            weightMicros: 1_000_000,
        }],
        queryHash: keccak256(format!("query-{n}")),
        answerHash: keccak256(format!("answer-{n}")),
        chunks: contributors
            .iter()
            .zip([5_000u16, 3_000, 2_000])
            .enumerate()
            .map(|(i, (c, w))| CitedChunk {
                contentHash: keccak256(format!("chunk-{n}-{i}")),
                contributor: *c,
                weightBps: w,
            })
            .collect(),
        fee: U256::from(FEE),
        nonce: n,
        timestamp: 1_790_000_000 + n,
        attributionHash: Default::default(),
    }
}

fn signed(
    ledger: &Ledger,
    range: std::ops::Range<u64>,
    contributors: &[Address; 3],
) -> Vec<SignedReceipt> {
    let key = dev_key();
    range
        .map(|n| {
            key.sign(receipt(key.address(), n, contributors), ledger)
                .expect("sign")
        })
        .collect()
}

/// A journal in `dir` holding `receipts` (closed again, so the CLI can take its lock).
fn journal_with(dir: &Path, receipts: &[SignedReceipt]) {
    let mut j = Journal::open(dir).expect("open journal");
    for r in receipts {
        j.append(r).expect("append");
    }
}

fn list_json(journal: &Path) -> (Vec<Value>, Value) {
    let out = ok(
        &run(tribute()
            .args(["receipts", "list", "--json", "--journal"])
            .arg(journal)),
        "receipts list",
    );
    let mut lines: Vec<Value> = out.lines().map(json).collect();
    let stats = lines.pop().expect("a stats line");
    (lines, stats["stats"].clone())
}

#[test]
fn chain_and_receipts_commands_settle_end_to_end() {
    let anvil = anvil();
    let url = anvil.url();
    let rpc = url.as_str();
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger_file = dir.path().join("ledger.json");

    // Deploy.
    let out = ok(
        &run(with_key()
            .args(["chain", "deploy", "--json", "--rpc", rpc, "--out"])
            .arg(&ledger_file)),
        "chain deploy",
    );
    let printed = json(&out);
    assert_eq!(printed["chainId"], 31337, "{printed}");
    let ledger: Ledger = serde_json::from_value(printed.clone()).expect("a ledger");
    let written: Ledger =
        serde_json::from_str(&std::fs::read_to_string(&ledger_file).expect("ledger file"))
            .expect("ledger file JSON");
    assert_eq!(written, ledger);
    let by_file = |c: &mut Command| {
        c.args(["--rpc", rpc, "--ledger"]).arg(&ledger_file);
    };

    // Registry: by file and by --contract (chain id from the node); idempotent for the
    // same owner, refused for another.
    let (model_owner, adapter_owner) = (who("model-owner"), who("adapter-owner"));
    let mut c = with_key();
    c.args(["chain", "register-model", MODEL, "--json", "--owner"])
        .arg(model_owner.to_string());
    by_file(&mut c);
    let v = json(&ok(&run(&mut c), "register-model"));
    assert_eq!(v["already_registered"], false, "{v}");
    assert_eq!(addr(&v["owner"]), model_owner);
    let contract = ledger.contract.to_string();
    let o = run(with_key()
        .args(["chain", "register-adapter", ADAPTER, "--rpc", rpc])
        .args(["--contract", &contract, "--owner"])
        .arg(adapter_owner.to_string()));
    assert!(ok(&o, "register-adapter").contains("registered adapter"));
    let mut c = with_key();
    c.args(["chain", "register-model", MODEL, "--json", "--owner"])
        .arg(model_owner.to_string());
    by_file(&mut c);
    assert_eq!(
        json(&ok(&run(&mut c), "register again"))["already_registered"],
        true
    );
    let mut c = with_key();
    c.args(["chain", "register-model", MODEL, "--owner"])
        .arg(who("squatter").to_string());
    by_file(&mut c);
    let o = run(&mut c);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already registered to"),
        "{}",
        stderr(&o)
    );

    // Deposit half an ether.
    let payer = dev_key().address();
    let mut c = with_key();
    c.args(["chain", "deposit", "0.5ether", "--json"]);
    by_file(&mut c);
    let v = json(&ok(&run(&mut c), "deposit"));
    assert_eq!(v["deposit"], "500000000000000000", "{v}");
    assert_eq!(addr(&v["payer"]), payer);

    // Bench against the same node (it deploys its own ledgers).
    let out = ok(
        &run(with_key().args(["receipts", "bench", "--n", "50", "--json", "--rpc", rpc])),
        "receipts bench",
    );
    let b = json(&out);
    for k in ["sign_per_s", "verify_per_s"] {
        assert!(b[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {b}");
    }
    for k in ["gas_per_receipt", "gas_per_receipt_first"] {
        let m = b[k].as_object().unwrap_or_else(|| panic!("{k}: {b}"));
        assert_eq!(m.len(), 4, "{b}");
        for size in ["1", "10", "100", "1000"] {
            assert!(m[size].as_u64().is_some_and(|g| g > 0), "{k}[{size}]: {b}");
        }
    }
    let steady = |s: &str| b["gas_per_receipt"][s].as_u64().unwrap_or(u64::MAX);
    let first = |s: &str| b["gas_per_receipt_first"][s].as_u64().unwrap_or(0);
    // Batches amortise the fixed cost; a first batch pays for new payee slots.
    assert!(
        steady("1") > steady("10") && steady("10") > steady("100"),
        "{b}"
    );
    assert!(steady("100") > steady("1000"), "{b}");
    assert!(first("100") > steady("100"), "{b}");
    // 8 payees per batch (5 contributors, model and adapter owners, treasury): about
    // 110k gas a batch in steady state (61k fixed, the settled root's fresh slot included,
    // + 6.1k per payee): ≈ 1,100 gas per receipt at batch 100, ≈ 110 at 1,000.
    assert!(steady("1000") <= 115, "{b}");
    assert!(steady("100") <= 1_120, "{b}");

    // Verify: one valid receipt, one tampered.
    let contributors = [who("alice"), who("bob"), who("carol")];
    let good = signed(&ledger, 100..101, &contributors).remove(0);
    let mut tampered = signed(&ledger, 101..102, &contributors).remove(0);
    tampered.receipt.fee += U256::from(1);
    let file = dir.path().join("receipts.jsonl");
    std::fs::write(
        &file,
        format!("{}\n{}\n", good.to_json(), tampered.to_json()),
    )
    .expect("write");
    let o = run(tribute()
        .args(["receipts", "verify", "--ledger"])
        .arg(&ledger_file)
        .arg(&file));
    assert!(!o.status.success(), "a tampered receipt must fail");
    let out = stdout(&o);
    assert!(out.contains("receipts.jsonl:1: ok"), "{out}");
    assert!(out.contains(&payer.to_string()), "{out}");
    assert!(
        out.contains("receipts.jsonl:2: FAIL") && out.contains("not by its payer"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("1 of 2 receipts failed"),
        "{}",
        stderr(&o)
    );
    let only_good = dir.path().join("good.json");
    std::fs::write(&only_good, good.to_json()).expect("write");
    let o = run(tribute()
        .args([
            "receipts",
            "verify",
            "--json",
            "--chain-id",
            "31337",
            "--contract",
            &contract,
        ])
        .arg(&only_good));
    let v = json(&ok(&o, "verify good"));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(addr(&v["signer"]), payer);

    // Settle a journal of five receipts.
    let receipts = signed(&ledger, 0..5, &contributors);
    let journal = dir.path().join("journal");
    journal_with(&journal, &receipts);
    let (rows, stats) = list_json(&journal);
    assert_eq!(rows.len(), 5);
    assert_eq!(stats["pending"], 5);
    // One batch of three (human output), then the rest (JSON).
    let mut c = with_key();
    c.args(["receipts", "settle", "--batch", "3", "--max-batches", "1"])
        .arg("--journal")
        .arg(&journal);
    by_file(&mut c);
    let out = ok(&run(&mut c), "receipts settle --max-batches 1");
    println!("{out}");
    assert!(
        out.contains("batch 1: 3 receipts") && out.contains("  root 0x"),
        "{out}"
    );
    assert!(out.contains("2 pending receipts wait"), "{out}");
    assert!(
        out.contains("journal: 5 receipts: 2 pending, 0 batched, 0 submitted, 3 confirmed"),
        "{out}"
    );
    let mut c = with_key();
    c.args(["receipts", "settle", "--json", "--batch", "3", "--journal"])
        .arg(&journal);
    by_file(&mut c);
    let v = json(&ok(&run(&mut c), "receipts settle"));
    let batches = v["batches"].as_array().expect("batches");
    assert_eq!(batches.len(), 1, "{v}");
    assert_eq!(batches[0]["receipts"], 2);
    assert_eq!(batches[0]["already_settled"], false);
    assert!(
        batches[0]["gas_used"].as_u64().is_some_and(|g| g > 21_000),
        "{v}"
    );
    assert!(v["skipped"].as_array().is_some_and(Vec::is_empty), "{v}");
    assert_eq!(v["stats"]["confirmed"], 5, "{v}");
    let (rows, stats) = list_json(&journal);
    assert!(rows.iter().all(|r| r["state"] == "confirmed"), "{rows:?}");
    assert!(rows.iter().all(|r| r["txHash"].is_string()), "{rows:?}");
    assert_eq!(stats["confirmed"], 5);
    let table = ok(
        &run(tribute()
            .args(["receipts", "list", "--journal"])
            .arg(&journal)),
        "receipts list",
    );
    println!("{table}");
    assert!(
        table.contains("confirmed") && table.contains("5 receipts: 0 pending"),
        "{table}"
    );
    // Again: nothing left to do.
    let mut c = with_key();
    c.args(["receipts", "settle", "--journal"]).arg(&journal);
    by_file(&mut c);
    assert!(ok(&run(&mut c), "settle again").contains("settled 0 receipts"));

    // Export gives back the journaled receipts, canonically.
    let out = ok(
        &run(tribute()
            .args(["receipts", "export", "--journal"])
            .arg(&journal)),
        "receipts export",
    );
    let exported: Vec<SignedReceipt> = out
        .lines()
        .map(|l| SignedReceipt::from_json(l).expect("canonical receipt JSON"))
        .collect();
    assert_eq!(exported, receipts);

    // Everyone is credited exactly what the split policy gives them.
    let owners = Owners {
        treasury: payer,
        models: [(named_id(MODEL), model_owner)].into(),
        adapters: [(named_id(ADAPTER), adapter_owner)].into(),
        fallback: None,
        training: Default::default(),
    };
    let expected = batch_payouts(&receipts, &RewardConfig::default(), &owners).expect("payouts");
    assert_eq!(expected.len(), 6);
    let mut c = tribute();
    c.args(["chain", "balance", "--json"]);
    for (a, _) in &expected {
        c.arg(a.to_string());
    }
    by_file(&mut c);
    let v = json(&ok(&run(&mut c), "chain balance"));
    let rows = v.as_array().expect("an array");
    assert_eq!(rows.len(), expected.len());
    for (row, (a, amount)) in rows.iter().zip(&expected) {
        assert_eq!(addr(&row["address"]), *a);
        assert_eq!(row["balance"], amount.to_string(), "{row}");
    }
    for c in contributors {
        assert!(expected.iter().any(|(a, x)| *a == c && !x.is_zero()));
    }
    let total: U256 = expected.iter().map(|(_, x)| *x).sum();
    assert_eq!(total, U256::from(5 * FEE));

    // The payer's deposit went down by the fees; as treasury it withdraws its share.
    let mut c = with_key();
    c.args(["chain", "balance", "--deposit", "--json"]);
    by_file(&mut c);
    let v = json(&ok(&run(&mut c), "balance of the key"));
    assert_eq!(
        v[0]["deposit"],
        (U256::from(500_000_000_000_000_000u64) - total).to_string()
    );
    let treasury_share = expected
        .iter()
        .find(|(a, _)| *a == payer)
        .map(|(_, x)| *x)
        .expect("treasury share");
    let mut c = with_key();
    c.args(["chain", "withdraw", "--json"]);
    by_file(&mut c);
    let v = json(&ok(&run(&mut c), "withdraw"));
    assert_eq!(v["amount"], treasury_share.to_string());
    let mut c = with_key();
    c.args(["chain", "withdraw"]);
    by_file(&mut c);
    let o = run(&mut c);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nothing to withdraw"), "{}", stderr(&o));
}

/// Output piped into a reader that stops early (`tribute receipts list | head -1`) ends the
/// command quietly: no panic from `println!` (it panicked with "failed printing to stdout:
/// Broken pipe").
#[test]
fn a_reader_that_stops_early_ends_a_listing_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger {
        chain_id: 31337,
        contract: Address::repeat_byte(0x11),
    };
    let journal = dir.path().join("journal");
    // Far more than a pipe buffer (64 KiB) of rows.
    journal_with(
        &journal,
        &signed(&ledger, 0..1500, &[who("a"), who("b"), who("c")]),
    );
    let mut child = tribute()
        .args(["receipts", "list", "--journal"])
        .arg(&journal)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = [0u8; 64];
    let mut out = child.stdout.take().expect("stdout");
    out.read_exact(&mut first).expect("the first row");
    drop(out);
    let o = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        o.status.signal(),
        Some(13),
        "ended by SIGPIPE: {:?} {err}",
        o.status
    );
}

#[test]
fn settle_against_an_unreachable_node_fails_and_keeps_receipts_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger {
        chain_id: 31337,
        contract: Address::repeat_byte(0x11),
    };
    let ledger_file = dir.path().join("ledger.json");
    std::fs::write(&ledger_file, serde_json::to_string(&ledger).expect("json")).expect("write");
    let journal = dir.path().join("journal");
    journal_with(
        &journal,
        &signed(&ledger, 0..2, &[who("a"), who("b"), who("c")]),
    );

    let started = Instant::now();
    let o = run(with_key()
        .args([
            "receipts",
            "settle",
            "--rpc",
            "http://127.0.0.1:1",
            "--ledger",
        ])
        .arg(&ledger_file)
        .arg("--journal")
        .arg(&journal));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("RPC http://127.0.0.1:1"), "{err}");
    assert!(err.contains("2 pending"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "not prompt");

    // The same with --contract (the chain id read fails) and --json.
    let o = run(with_key()
        .args([
            "receipts",
            "settle",
            "--json",
            "--rpc",
            "http://127.0.0.1:1",
        ])
        .args(["--contract", &ledger.contract.to_string(), "--journal"])
        .arg(&journal));
    assert!(!o.status.success());
    let v = json(&stdout(&o));
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("RPC")),
        "{v}"
    );
    assert_eq!(v["stats"]["pending"], 2, "{v}");

    let (rows, stats) = list_json(&journal);
    assert!(rows.iter().all(|r| r["state"] == "pending"), "{rows:?}");
    assert_eq!(stats["pending"], 2);

    // No key: the error says where one is looked for; no journal: said so.
    let o = run(tribute()
        .env_remove("TRIBUTE_KEY")
        .args(["receipts", "settle", "--ledger"])
        .arg(&ledger_file)
        .arg("--journal")
        .arg(&journal));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no signing key: set TRIBUTE_KEY"),
        "{}",
        stderr(&o)
    );
    let o = run(tribute()
        .args(["receipts", "list", "--journal"])
        .arg(dir.path().join("missing")));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a receipt journal"),
        "{}",
        stderr(&o)
    );
    assert!(
        !dir.path().join("missing").exists(),
        "list must not create a journal"
    );
}

#[test]
fn verify_reports_malformed_json_by_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger {
        chain_id: 31337,
        contract: Address::repeat_byte(0x11),
    };
    let contract = ledger.contract.to_string();
    let good = signed(&ledger, 0..1, &[who("a"), who("b"), who("c")]).remove(0);
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{{\"version\": 1, \n", good.to_json())).expect("write");
    let o = run(tribute()
        .args([
            "receipts",
            "verify",
            "--chain-id",
            "31337",
            "--contract",
            &contract,
        ])
        .arg(&bad));
    assert!(!o.status.success());
    let out = stdout(&o);
    assert!(out.contains("bad.jsonl:1: ok"), "{out}");
    assert!(
        out.contains("bad.jsonl:2: FAIL malformed receipt JSON"),
        "{out}"
    );

    // A pretty-printed receipt is one receipt; broken, its error names the line.
    let value: Value = serde_json::from_str(&good.to_json()).expect("json");
    let pretty = serde_json::to_string_pretty(&value).expect("json");
    let file = dir.path().join("pretty.json");
    std::fs::write(&file, &pretty).expect("write");
    let o = run(tribute()
        .args([
            "receipts",
            "verify",
            "--chain-id",
            "31337",
            "--contract",
            &contract,
        ])
        .arg(&file));
    assert!(ok(&o, "verify pretty").contains("all 1 receipts verify"));
    let broken = pretty.replacen("\"nonce\":", "\"nonce\"", 1);
    let line = broken
        .lines()
        .position(|l| l.contains("\"nonce\""))
        .expect("a nonce line")
        + 1;
    std::fs::write(&file, &broken).expect("write");
    let o = run(tribute()
        .args([
            "receipts",
            "verify",
            "--chain-id",
            "31337",
            "--contract",
            &contract,
        ])
        .arg(&file));
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains(&format!("pretty.json:{line}: FAIL malformed JSON")),
        "{}",
        stdout(&o)
    );

    // Another ledger: the signature recovers someone else.
    let o = run(tribute()
        .args([
            "receipts",
            "verify",
            "--chain-id",
            "1",
            "--contract",
            &contract,
        ])
        .arg(&bad));
    assert!(!o.status.success());
    assert!(stdout(&o).contains("bad.jsonl:1: FAIL"), "{}", stdout(&o));

    // Stdin.
    let mut child = tribute()
        .args([
            "receipts",
            "verify",
            "--chain-id",
            "31337",
            "--contract",
            &contract,
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(good.to_json().as_bytes())
            .expect("write stdin");
    }
    let o = child.wait_with_output().expect("wait");
    assert!(ok(&o, "verify stdin").contains("<stdin>:1: ok"));
}
