//! `tribute chat` end to end: questions piped on stdin, streamed answers with citations
//! numbered across the conversation, one receipt per turn, `/reset` and `/exit`.

use std::io::Write;
use std::process::Stdio;

use super::{ingest_sample, stderr, stdout, tribute};

const KEY0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// Runs `tribute chat` with `args`, piping `input` to it.
fn chat(args: &[&str], input: &str) -> std::process::Output {
    let mut child = tribute()
        .arg("chat")
        .args(args)
        .env("TRIBUTE_KEY", KEY0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tribute chat starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write questions");
    child.wait_with_output().expect("tribute chat ends")
}

#[test]
fn chat_reads_piped_questions_and_numbers_citations_across_turns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = dir.path().join("kb");
    ingest_sample(&kb);
    let journal = dir.path().join("receipts");
    let config = dir.path().join("tribute.toml");
    std::fs::write(
        &config,
        format!(
            "index = {:?}\n\n[generation]\nmax_tokens = 32\n\n[retrieval]\ntop_k = 2\n\n\
             [receipts]\njournal = {:?}\nledger = {{ chainId = 31337, contract = \
             \"0x5FbDB2315678afecb367f032d93F642f64180aa3\" }}\n",
            kb.display().to_string(),
            journal.display().to_string()
        ),
    )
    .expect("config");
    let config = config.display().to_string();

    // Human output: streamed text, the searched-for follow-up, citations, receipts.
    let o = chat(
        &["--config", &config],
        "What is the Zephyr SDK?\n\nWho released it?\n/reset\n/exit\nnot asked\n",
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    println!("{out}");
    assert_eq!(
        out.matches("receipt 0x").count(),
        2,
        "one receipt per turn: {out}"
    );
    assert!(out.contains("[1] "), "citations numbered from 1: {out}");
    assert!(
        out.contains("(searched for: "),
        "the rewritten follow-up: {out}"
    );
    assert!(out.contains("(new conversation)"), "{out}");
    assert!(!out.contains("not asked"));

    // JSON lines: the follow-up is searched as a standalone question and the source cited
    // in the first turn keeps its number.
    let o = chat(
        &["--config", &config, "--json", "--rewrite", "content-words"],
        "What is the Zephyr SDK?\nWho released it?\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let turns: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON answer per line"))
        .collect();
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[0]["retrieval_query"], serde_json::Value::Null);
    assert_eq!(turns[1]["question"], "Who released it?");
    assert_eq!(turns[1]["retrieval_query"], "zephyr sdk Who released it?");
    let marker_of = |turn: &serde_json::Value| {
        turn["citations"].as_array().and_then(|cs| {
            cs.iter()
                .find(|c| c["doc_id"] == "zephyr-intro")
                .map(|c| c["marker"].clone())
        })
    };
    let first = marker_of(&turns[0]).expect("turn 1 cites the intro");
    if let Some(second) = marker_of(&turns[1]) {
        assert_eq!(first, second, "the same source keeps its number");
    }
    for t in &turns {
        assert!(t["receipt"]["receiptId"].is_string(), "{t}");
    }

    // A bad flag fails before reading anything.
    let o = chat(&["--config", &config, "--rewrite", "clever"], "");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("content-words"), "{}", stderr(&o));
}
