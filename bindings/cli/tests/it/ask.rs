//! `tribute ask` end to end: the sample datanet, the real models, receipts journaled.

use super::{ingest_sample, run, stderr, stdout, tribute};

const KEY0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const ALICE: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

#[test]
fn ask_prints_cited_json_and_journals_the_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = dir.path().join("kb");
    ingest_sample(&kb);
    let ledger = dir.path().join("ledger.json");
    std::fs::write(
        &ledger,
        r#"{"chainId":31337,"contract":"0x5FbDB2315678afecb367f032d93F642f64180aa3"}"#,
    )
    .expect("ledger");
    let journal = dir.path().join("receipts");
    let o = run(tribute()
        .env("TRIBUTE_KEY", KEY0)
        .args([
            "ask",
            "--json",
            "--top-k",
            "3",
            "--max-tokens",
            "32",
            "--kb",
        ])
        .arg(&kb)
        .arg("--ledger")
        .arg(&ledger)
        .arg("--journal")
        .arg(&journal)
        .arg("How many times per second does the Zephyr flight controller correct the attitude?"));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("JSON");
    assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()));
    let citations = v["citations"].as_array().expect("citations");
    let sum: u64 = citations
        .iter()
        .filter_map(|c| c["weight_bps"].as_u64())
        .sum();
    assert_eq!(sum, 10_000);
    assert_eq!(citations[0]["doc_id"], "zephyr-intro");
    assert_eq!(citations[0]["contributor"], ALICE);
    for key in ["marker", "chunk_id", "datanet", "weight_bps"] {
        assert!(!citations[0][key].is_null(), "{key}");
    }
    assert!(v["timings"]["total_ms"].as_f64().is_some_and(|t| t > 0.0));
    let receipt_id = v["receipt"]["receiptId"]
        .as_str()
        .expect("receipt id")
        .to_owned();

    // The receipt is in the journal, pending, and verifies.
    let o = run(tribute()
        .args(["receipts", "export", "--journal"])
        .arg(&journal));
    assert!(o.status.success(), "{}", stderr(&o));
    let exported = stdout(&o);
    assert!(exported.contains(&receipt_id));
    let file = dir.path().join("r.jsonl");
    std::fs::write(&file, exported).expect("write");
    let o = run(tribute()
        .args(["receipts", "verify", "--ledger"])
        .arg(&ledger)
        .arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));

    // Its attribution recomputes from the record beside the journal: by id and from a file.
    let o = run(tribute()
        .args(["receipts", "audit", &receipt_id, "--journal"])
        .arg(&journal)
        .arg("--kb")
        .arg(&kb));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("1 receipts: 1 match"), "{}", stdout(&o));
    let o = run(tribute()
        .args(["receipts", "audit", "--json", "--journal"])
        .arg(&journal)
        .arg("--kb")
        .arg(&kb)
        .arg(&file));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("\"verdict\":\"exact\""),
        "{}",
        stdout(&o)
    );
    // An unknown receipt id is refused, naming it.
    let unknown = format!("0x{}", "ab".repeat(32));
    let o = run(tribute()
        .args(["receipts", "audit", &unknown, "--journal"])
        .arg(&journal)
        .arg("--kb")
        .arg(&kb));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is not in the journal"),
        "{}",
        stderr(&o)
    );

    // Without a key: the answer, and a line saying no receipt was signed.
    let o = run(tribute()
        .env_remove("TRIBUTE_KEY")
        .args(["ask", "--top-k", "2", "--max-tokens", "16", "--kb"])
        .arg(&kb)
        .arg("At what gust speed should Zephyr pilots land?"));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("no receipt was signed"), "{out}");
    assert!(out.contains("pilot-notes"), "{out}");

    // Bad input: an unknown method, a missing knowledge base flag.
    let o = run(tribute()
        .args(["ask", "--method", "vibes", "--kb"])
        .arg(&kb)
        .arg("q?"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown attribution method"),
        "{}",
        stderr(&o)
    );
    let o = run(tribute().args(["ask", "q?"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--kb"), "{}", stderr(&o));
}
