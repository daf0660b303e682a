//! `tribute eval citations` and the citation audit in `tribute ask`.

use std::path::Path;

use serde_json::Value;

use super::{ingest_sample, run, stderr, stdout, tribute};

#[test]
fn eval_citations_scores_prompted_and_measured_markers() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/data/attribution/dev-small.jsonl");
    let o = run(tribute()
        .args([
            "eval",
            "citations",
            "--json",
            "--limit",
            "2",
            "--max-tokens",
            "24",
            "--data",
        ])
        .arg(&data));
    assert!(o.status.success(), "eval citations failed: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v["examples"], 2, "{v}");
    assert_eq!(v["method"], "loo");
    assert_eq!(v["unit"], "nats");
    assert_eq!(v["threshold"], 1.0);
    for k in ["prompted", "tribute", "measured"] {
        let r = v[k]["recall"].as_f64().expect(k);
        assert!((0.0..=1.0).contains(&r), "{k}: {v}");
    }
    assert_eq!(v["rows"].as_array().map(Vec::len), Some(2));
    // A line without passages is named with its line number.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"id\": \"x\", \"question\": \"q\", \"answer\": \"a\"}\n",
    )
    .expect("write");
    let o = run(tribute().args(["eval", "citations", "--data"]).arg(&bad));
    assert!(!o.status.success());
    assert!(stderr(&o).contains(":1:"), "{}", stderr(&o));
}

#[test]
fn ask_json_carries_the_citation_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = dir.path().join("kb");
    ingest_sample(&kb);
    let o = run(tribute()
        .args(["ask", "--json", "--max-tokens", "32", "--kb"])
        .arg(&kb)
        .arg("How long does a full charge take?"));
    assert!(o.status.success(), "ask failed: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let audit = &v["citation_audit"];
    assert_eq!(audit["method"], "loo", "{v}");
    assert_eq!(audit["threshold"], 1.0);
    assert!(audit["sentences"].as_u64().is_some_and(|n| n >= 1), "{v}");
    for s in v["sentences"].as_array().expect("sentences") {
        assert!(s["supported"].is_boolean(), "{s}");
        assert!(s["unused_markers"].is_array() && s["uncited_markers"].is_array());
    }
    // The table prints the audit's one line.
    let o = run(tribute()
        .args(["ask", "--max-tokens", "32", "--kb"])
        .arg(&kb)
        .arg("How long does a full charge take?"));
    assert!(o.status.success(), "ask failed: {}", stderr(&o));
    assert!(
        stdout(&o).contains("citation audit (loo, influence >= 1 nats)"),
        "{}",
        stdout(&o)
    );
}
