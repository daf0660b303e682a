//! End-to-end tests of the `tribute` binary (real model, real files, real processes).

mod ask;
mod chain;
mod chat;
mod citations;
mod crash;
mod disk_full;
#[cfg(all(feature = "onchain", feature = "finetune"))]
mod factory;
mod key_leak;
mod mcp;
#[cfg(feature = "hub")]
mod models;
#[cfg(feature = "otel")]
mod otel;
#[cfg(all(feature = "onchain", feature = "postgres"))]
mod shared_pg;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The binary under test.
pub fn tribute() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tribute"))
}

/// Runs a command and returns its output, failing the test if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("tribute binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository's sample datanet.
pub fn sample_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/data/zephyr")
}

fn ingest_sample(kb: &Path) -> Value {
    let o = run(tribute()
        .args(["ingest", "--json", "--kb"])
        .arg(kb)
        .arg(sample_data()));
    assert!(o.status.success(), "ingest failed: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).expect("ingest --json prints JSON")
}

#[test]
fn ingest_then_search_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = dir.path().join("kb");
    let report = ingest_sample(&kb);
    assert_eq!(report["documents"], 5);
    assert_eq!(report["total_documents"], 5);
    assert!(report["docs_per_s"].as_f64().is_some_and(|x| x > 0.0));

    let o = run(tribute()
        .args(["search", "--json", "--k", "3", "--kb"])
        .arg(&kb)
        .arg("how long does a full charge take?"));
    assert!(o.status.success(), "{}", stderr(&o));
    let hits: Value = serde_json::from_str(&stdout(&o)).expect("search --json prints JSON");
    let top = &hits[0];
    assert_eq!(top["doc_id"], "zephyr-battery");
    assert_eq!(
        top["contributor"],
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    );
    assert_eq!(top["datanet"], "zephyr-docs");
    assert_eq!(top["chunk_id"], "zephyr-battery#0");
    assert!(
        top["bm25"]["rank"].as_u64().is_some() && top["dense"]["rank"].as_u64().is_some(),
        "{top}"
    );
    assert!(
        top["content_hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("0x") && h.len() == 66)
    );

    // Datanet filter, BM25 mode (no model needed), human output.
    let o = run(tribute()
        .args([
            "search",
            "--mode",
            "bm25",
            "--datanet",
            "pilot-notes",
            "--kb",
        ])
        .arg(&kb)
        .arg("Zephyr license fee"));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("zephyr-pricing#0"), "{out}");
    assert!(
        !out.contains("zephyr-docs"),
        "filter leaked another datanet: {out}"
    );
}

#[test]
fn bad_input_fails_loudly_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = dir.path().join("kb");
    ingest_sample(&kb);

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"id\":\"ok\",\"text\":\"fine\"}\n{\"id\": \"broken\", \"text\": \n",
    )
    .expect("write");
    let o = run(tribute().args(["ingest", "--kb"]).arg(&kb).arg(&bad));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad.jsonl:2"), "{}", stderr(&o));

    let o = run(tribute()
        .args([
            "ingest",
            "--contributor",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
            "--kb",
        ])
        .arg(&kb)
        .arg(sample_data()));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("checksum"), "{}", stderr(&o));

    let o = run(tribute()
        .args(["search", "--mode", "fuzzy", "--kb"])
        .arg(&kb)
        .arg("q"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("hybrid, bm25, dense"), "{}", stderr(&o));

    let o = run(tribute()
        .args(["search", "--embedder", "/nonexistent/model", "--kb"])
        .arg(&kb)
        .arg("q"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("make setup"), "{}", stderr(&o));

    let o = run(tribute()
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .args(["search", "--kb"])
        .arg(&kb)
        .arg("q"));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("ONNX Runtime") && err.contains("ORT_DYLIB_PATH"),
        "{err}"
    );

    let o = run(tribute()
        .args(["search", "--kb"])
        .arg(dir.path().join("missing"))
        .arg("q"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a knowledge base"),
        "{}",
        stderr(&o)
    );

    // Nothing of the failed ingests landed.
    let o = run(tribute()
        .args(["search", "--json", "--mode", "bm25", "--kb"])
        .arg(&kb)
        .arg("fine"));
    let hits: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert!(
        hits.as_array()
            .is_some_and(|h| h.iter().all(|h| h["doc_id"] != "ok")),
        "{hits}"
    );
}

#[test]
fn eval_beir_reports_trec_metrics() {
    // A toy collection where each query repeats its one relevant document's distinctive words.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path();
    std::fs::create_dir_all(data.join("qrels")).expect("mkdir");
    let topics = [
        (
            "aurora",
            "Auroras glow when solar wind particles hit the upper atmosphere near the poles.",
        ),
        (
            "volcano",
            "Basaltic volcanoes erupt runny lava that builds broad shield-shaped mountains.",
        ),
        (
            "coral",
            "Coral reefs are built by tiny polyps that secrete calcium carbonate skeletons.",
        ),
        (
            "glacier",
            "Glaciers carve U-shaped valleys as compacted snow slowly flows downhill.",
        ),
        (
            "comet",
            "A comet's tail points away from the sun, pushed by radiation and solar wind.",
        ),
    ];
    let corpus: String = topics
        .iter()
        .map(|(id, text)| {
            format!(
                "{}\n",
                serde_json::json!({"_id": id, "title": "", "text": text})
            )
        })
        .collect();
    std::fs::write(data.join("corpus.jsonl"), corpus).expect("write");
    let queries: String = topics
        .iter()
        .enumerate()
        .map(|(i, (_, text))| {
            format!(
                "{}\n",
                serde_json::json!({"_id": format!("q{i}"), "text": text})
            )
        })
        .collect();
    std::fs::write(data.join("queries.jsonl"), queries).expect("write");
    let qrels: String = std::iter::once("query-id\tcorpus-id\tscore\n".to_owned())
        .chain(
            topics
                .iter()
                .enumerate()
                .map(|(i, (id, _))| format!("q{i}\t{id}\t1\n")),
        )
        .collect();
    std::fs::write(data.join("qrels/test.tsv"), qrels).expect("write");

    let o = run(tribute()
        .args(["eval", "beir", "--json", "--mode", "all", "--data"])
        .arg(data));
    assert!(o.status.success(), "{}", stderr(&o));
    let reports: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let reports = reports.as_array().expect("an array for --mode all");
    assert_eq!(reports.len(), 3);
    for r in reports {
        for key in [
            "dataset",
            "mode",
            "queries",
            "ndcg@10",
            "recall@100",
            "mrr@10",
            "index_seconds",
            "query_p50_ms",
            "query_p95_ms",
        ] {
            assert!(r.get(key).is_some(), "missing {key} in {r}");
        }
        assert_eq!(r["queries"], 5);
        assert_eq!(r["ndcg@10"], 1.0, "{r}");
        assert_eq!(r["mrr@10"], 1.0, "{r}");
        assert_eq!(r["recall@100"], 1.0, "{r}");
    }
    let o = run(tribute()
        .args(["eval", "beir", "--json", "--mode", "bm25", "--data"])
        .arg(data));
    let one: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(one["mode"], "bm25", "a single mode prints one object");
}

#[test]
fn generate_prints_text_and_json() {
    let o = run(tribute().args([
        "generate",
        "--max-tokens",
        "12",
        "--json",
        "What is the capital of France?",
    ]));
    assert!(o.status.success(), "generate failed: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("generate --json prints JSON");
    assert_eq!(v["text"], "The capital of France is Paris.");
    assert_eq!(v["finish_reason"], "eos");
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    // Weights without as many adapters are refused before anything loads.
    let o = run(tribute().args(["generate", "--adapter-weight", "0.5", "hi"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--adapter-weight"), "{}", stderr(&o));
}

#[test]
fn eval_attribution_reports_each_method() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/data/attribution/dev-small.jsonl");
    let o = run(tribute()
        .args([
            "eval",
            "attribution",
            "--json",
            "--limit",
            "2",
            "--method",
            "loo,similarity,retrieval",
            "--data",
        ])
        .arg(&data));
    assert!(
        o.status.success(),
        "eval attribution failed: {}",
        stderr(&o)
    );
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let rows = v.as_array().expect("one row per method");
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r["examples"], 2);
        for k in ["top1_accuracy", "supporting_mass", "recall@2"] {
            let x = r[k].as_f64().expect(k);
            assert!((0.0..=1.0).contains(&x), "{k} = {x}");
        }
    }
    assert_eq!(rows[0]["method"], "loo");
    assert!(rows[0]["supporting_mass"].as_f64().unwrap() > 0.5, "{v}");
    // A malformed line is reported with its line number.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"id\": \"x\", \"question\": \"q\", \"passages\": []}\n",
    )
    .unwrap();
    let o = run(tribute().args(["eval", "attribution", "--data"]).arg(&bad));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad.jsonl:1"), "{}", stderr(&o));
}
