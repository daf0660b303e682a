//! Disk full during ingest and during journaling (`scripts/chaos/disk_full.sh` mounts a
//! small tmpfs and runs this with `TRIBUTE_CHAOS_FULL_DIR` pointing into it): the failure is
//! a typed error that says "No space left on device", the index and the journal open and
//! verify afterwards holding only whole commits / acknowledged receipts, and both work again
//! once space is freed.

use std::io::Write;
use std::path::{Path, PathBuf};

use tribute::attribution::journal::Journal;
use tribute::attribution::receipt::{Ledger, PayerKey};
use tribute::index::{DocId, Index, IndexConfig, OnnxEmbedder};
use tribute::{Address, Engine, EngineConfig, Error};

use crate::{run, sample_data, stderr, tribute};

const ENOSPC: i32 = 28;

/// Fills the filesystem of `dir` with `dir/filler`, then frees `leave` bytes of it.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("filler");
    let block = vec![0xA5u8; 64 << 10];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    // A partial last block may have landed; what is on disk is what counts.
    let len = std::fs::metadata(&path).expect("filler size").len();
    f.set_len(len.saturating_sub(leave)).expect("free a little");
    f.sync_all().expect("sync filler");
    path
}

/// `n` documents of about 400 bytes each, in a JSONL file outside the small filesystem.
fn big_file(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("big.jsonl");
    let lines: String = (0..n)
        .map(|i| {
            let text = format!(
                "Inspection {i} of pump station {}: the pressure held at {} kPa for {} minutes while crews \
                 replaced seal {} and flushed the intake. Vibration on bearing {} stayed below {} mm/s. \
                 The log notes {} litres of coolant and a torque of {} newton metres on the main flange.",
                i % 37,
                300 + i % 91,
                10 + i % 50,
                i % 13,
                i % 7,
                2 + i % 5,
                i * 3 % 400,
                120 + i % 80
            );
            format!("{}\n", serde_json::json!({"id": format!("big-{i}"), "text": text}))
        })
        .collect();
    std::fs::write(&path, lines).expect("write big file");
    path
}

fn open_index(kb: &Path) -> Index {
    let embedder = std::sync::Arc::new(OnnxEmbedder::default_model().expect("MiniLM"));
    let index = Index::open(kb, Some(embedder), IndexConfig::default())
        .unwrap_or_else(|e| panic!("the index does not open after disk full: {e}"));
    index
        .verify()
        .unwrap_or_else(|e| panic!("the index does not verify after disk full: {e}"));
    index
}

/// How many of `big-0..n` are in the index; they must be a prefix (whole commits, in order).
fn big_prefix(index: &Index, n: usize) -> usize {
    let present: Vec<bool> = (0..n)
        .map(|i| index.document(&DocId::new(format!("big-{i}"))).is_some())
        .collect();
    let k = present.iter().filter(|p| **p).count();
    assert!(
        present[..k].iter().all(|p| *p),
        "the documents that survived are not whole commits in order"
    );
    k
}

fn small_dir() -> PathBuf {
    let dir = std::env::var_os("TRIBUTE_CHAOS_FULL_DIR")
        .map(PathBuf::from)
        .expect(
            "TRIBUTE_CHAOS_FULL_DIR is not set: run scripts/chaos/disk_full.sh (it mounts a small \
         tmpfs and points this variable into it)",
        );
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    dir
}

/// `tribute ingest` into a knowledge base on a full filesystem.
#[test]
#[ignore = "needs a small filesystem: scripts/chaos/disk_full.sh"]
fn disk_full_during_ingest() {
    let small = small_dir().join("ingest");
    std::fs::create_dir_all(&small).expect("mkdir");
    let scratch = tempfile::tempdir().expect("tempdir");
    let kb = small.join("kb");
    let o = run(tribute()
        .args(["ingest", "--json", "--kb"])
        .arg(&kb)
        .arg(sample_data()));
    assert!(o.status.success(), "ingest with space: {}", stderr(&o));
    let before = open_index(&kb).document_count();

    let n = 3_000;
    let big = big_file(scratch.path(), n);
    let mut rounds = Vec::new();
    for leave in [0u64, 64 << 10, 512 << 10] {
        let filler = fill(&small, leave);
        let o = run(tribute()
            .args(["ingest", "--json", "--commit-every", "64", "--kb"])
            .arg(&kb)
            .arg(&big));
        let err = stderr(&o);
        assert!(!o.status.success(), "ingest into a full disk succeeded");
        assert!(
            err.contains("No space left on device"),
            "not the typed I/O error: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        let index = open_index(&kb);
        let kept = big_prefix(&index, n);
        assert_eq!(index.document_count(), before + kept);
        let hits = index.search("Zephyr flight controller").k(1).execute();
        assert!(hits.is_ok_and(|h| !h.is_empty()), "search after disk full");
        drop(index);
        std::fs::remove_file(&filler).expect("free space");
        rounds.push((
            leave,
            kept,
            err.lines().last().unwrap_or_default().to_owned(),
        ));
    }

    // Space freed: the same ingest completes.
    let o = run(tribute()
        .args(["ingest", "--json", "--kb"])
        .arg(&kb)
        .arg(&big));
    assert!(
        o.status.success(),
        "ingest after freeing space: {}",
        stderr(&o)
    );
    let index = open_index(&kb);
    assert_eq!(big_prefix(&index, n), n);
    assert_eq!(index.document_count(), before + n);
    for (leave, kept, err) in rounds {
        println!("disk full with {leave} bytes left: {kept} of {n} documents committed; {err}");
    }
    println!("after freeing space: all {n} ingested, index verifies");
}

/// Asks that journal receipts onto a full filesystem.
#[test]
#[ignore = "needs a small filesystem: scripts/chaos/disk_full.sh"]
fn disk_full_during_journaling() {
    let small = small_dir().join("journal");
    std::fs::create_dir_all(&small).expect("mkdir");
    let scratch = tempfile::tempdir().expect("tempdir");
    let journal_dir = small.join("receipts");
    let ledger = Ledger {
        chain_id: 31337,
        contract: Address::repeat_byte(0x22),
    };
    let key = PayerKey::random();
    let engine = || {
        let mut config = EngineConfig {
            index: scratch.path().join("kb"),
            // Extractive answers rank sentences with the embedder, so no `bm25_only`.
            answer_mode: tribute::config::AnswerMode::Extractive,
            ..EngineConfig::default()
        };
        config.receipts.journal = Some(journal_dir.clone());
        config.receipts.ledger = Some(ledger);
        Engine::builder()
            .config(config)
            .signer(key.clone())
            .build()
            .expect("engine")
    };
    let docs = {
        let mut d = Vec::new();
        for f in ["alice.jsonl", "bob.jsonl"] {
            d.extend(
                tribute::index::document::load_jsonl(&sample_data().join(f), &Default::default())
                    .expect("sample"),
            );
        }
        d
    };
    let e = engine();
    e.add_documents(docs, None).expect("ingest");
    let questions = [
        "How often does the Zephyr flight controller correct the attitude?",
        "What gust speed can the Zephyr hold its position in?",
        "Which sensors does the Zephyr fuse?",
    ];
    let mut acked = Vec::new();
    let mut q = 0usize;
    let mut ask = |e: &Engine, acked: &mut Vec<tribute::B256>| -> Result<(), Error> {
        q += 1;
        // Distinct questions give distinct receipts.
        let question = format!("{} (#{q})", questions[q % questions.len()]);
        let a = e.ask(question).run()?;
        let r = a.receipt.expect("a signed receipt");
        acked.push(r.receipt.receiptId);
        Ok(())
    };
    for _ in 0..5 {
        ask(&e, &mut acked).expect("ask with space");
    }
    let mut failures = Vec::new();
    for leave in [0u64, 2 << 10, 16 << 10] {
        let filler = fill(&small, leave);
        let mut ok_while_full = 0;
        let err = loop {
            match ask(&e, &mut acked) {
                Ok(()) => ok_while_full += 1,
                Err(err) => break err,
            }
            assert!(ok_while_full < 10_000, "the disk never filled");
        };
        assert_eq!(
            err.kind(),
            tribute::ErrorKind::Receipt,
            "not a receipt/journal error: {err:?}"
        );
        let chain = format!("{err} {err:?}");
        assert!(
            chain.contains("No space left on device") || chain.contains("os error 28"),
            "not ENOSPC: {chain}"
        );
        // Still full: a second ask fails the same way and breaks nothing.
        assert!(ask(&e, &mut acked).is_err());
        std::fs::remove_file(&filler).expect("free space");
        // Space freed: the same engine journals again.
        ask(&e, &mut acked).expect("ask after freeing space");
        failures.push((leave, ok_while_full, err.to_string()));
    }
    drop(e);

    // Every acknowledged receipt is journaled once and verifies; nothing else is there.
    let j = Journal::open(&journal_dir).expect("the journal opens after disk full");
    let mut unique = acked.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        acked.len(),
        "a receipt id was acknowledged twice"
    );
    for id in &acked {
        let r = j
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged receipt {id} lost"));
        r.verify(&ledger).expect("verifies");
    }
    let in_journal = j.receipts(None).count();
    assert_eq!(
        in_journal,
        acked.len(),
        "unacknowledged receipts were journaled"
    );
    drop(j);
    // And the journal takes new receipts after a reopen.
    let e = engine();
    ask(&e, &mut acked).expect("ask after reopen");
    drop(e);
    assert_eq!(
        Journal::open(&journal_dir).expect("open").len(),
        acked.len()
    );
    for (leave, ok, err) in failures {
        println!("disk full with {leave} bytes left: {ok} more asks journaled, then: {err}");
    }
    println!(
        "{} receipts acknowledged, all journaled once and verified",
        acked.len()
    );
}
