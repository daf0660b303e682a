//! The same conformance cases against every receipt journal backend: the local directory
//! always, and the shared Postgres journal when `TRIBUTE_TEST_PG_URL` names a server
//! (feature `postgres`; `index/tests/pg/pg.sh start DIR` or `make test-postgres` starts
//! one). Unset, the Postgres cases are skipped with a printed note, and fail when `CI=true`.
//!
//! Cases: appends (durable, idempotent, all-or-nothing), the state machine, claims and
//! their lease, recovery after a reopen and after a settler dies holding a claim,
//! attribution records, and several settlers racing on one journal.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256, address, keccak256};
use tribute_attribution::journal::{self, Appended, JournalBackend, JournalError, ReceiptState};
use tribute_attribution::receipt::SignedReceipt;
use tribute_attribution::record::{
    AttributionRecord, RECORD_VERSION, RecordedLocator, RecordedModel, RecordedPrompt,
    RecordedResult, RecordedSource, RecordedSplit, tokens_hash,
};

use crate::ADDR0;
use crate::journal::{batched, confirmed, id, key, signed, submitted};

/// The Postgres test server's URL; `None` (with a note) when none is configured, a panic
/// when `CI=true` (there the shared journal must be tested).
fn pg_url() -> Option<String> {
    match std::env::var("TRIBUTE_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "CI=true but TRIBUTE_TEST_PG_URL is not set: the shared receipt journal must be \
                     tested against Postgres in CI (start one with `index/tests/pg/pg.sh start DIR`)"
                );
            }
            eprintln!(
                "note: TRIBUTE_TEST_PG_URL is not set: Postgres journal cases skipped (start a server with `index/tests/pg/pg.sh start DIR`)"
            );
            None
        }
    }
}

#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_cases_need_the_feature() {
    if std::env::var("TRIBUTE_TEST_PG_URL").is_ok_and(|u| !u.trim().is_empty()) {
        panic!(
            "TRIBUTE_TEST_PG_URL is set but this test binary lacks the `postgres` feature: run `cargo test -p tribute-attribution --features postgres`"
        );
    }
}

/// One journal the cases run on: where it is (reopened by [`Backend::open`]).
struct Backend {
    name: &'static str,
    location: PathBuf,
    /// Whether several open handles may write at once (separate processes, in effect).
    shared: bool,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    fn open(&self) -> Box<dyn JournalBackend> {
        journal::open(&self.location)
            .unwrap_or_else(|e| panic!("{}: opening the journal failed: {e}", self.name))
    }
}

/// Every backend, each a fresh, empty journal.
fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().expect("tempdir");
    #[allow(unused_mut)]
    let mut all = vec![Backend {
        name: "directory",
        location: dir.path().join("journal"),
        shared: false,
        _dir: Some(dir),
    }];
    #[cfg(feature = "postgres")]
    if let Some(url) = pg_url() {
        all.push(Backend {
            name: "postgres",
            location: pg::fresh_database(&url).into(),
            shared: true,
            _dir: None,
        });
    }
    #[cfg(not(feature = "postgres"))]
    let _ = pg_url;
    all
}

/// A payer with no receipts in these journals.
const OTHER_PAYER: Address = address!("3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");

fn attribution_record() -> AttributionRecord {
    AttributionRecord {
        version: RECORD_VERSION,
        model: RecordedModel {
            name: "SmolLM2-135M-Instruct".into(),
            id: keccak256("SmolLM2-135M-Instruct"),
            hash: keccak256("model files"),
            tokenizer_hash: keccak256("tokenizer files"),
        },
        adapters: vec![],
        prompt: RecordedPrompt {
            template: "tribute-rag/1".into(),
            system: "Answer from the sources.".into(),
            history: vec![],
            question: "What is Zephyr?".into(),
            tokens: 3,
            tokens_hash: tokens_hash(&[1, 2, 3]),
        },
        answer: "A flight controller.".into(),
        answer_tokens: vec![7, 8, 9],
        sources: vec![RecordedSource {
            content_hash: keccak256("chunk"),
            chunk_id: "zephyr-intro#0".into(),
            title: "Zephyr".into(),
            contributor: Address::repeat_byte(1),
            shown_bytes: 5,
            retrieval_score: 0.1 + 0.2,
            locator: Some(RecordedLocator {
                pages: vec![2],
                headings: vec!["Zéphyr".into(), "Setup".into()],
                char_start: 12,
                char_end: 17,
            }),
        }],
        method: tribute_attribution::Method::Loo,
        params: Default::default(),
        result: RecordedResult {
            scores: vec![1.0 / 3.0],
            weights_bps: vec![10_000],
            fallback: None,
            model_passes: 2,
        },
        split: RecordedSplit {
            fee: U256::from(10u64).pow(U256::from(18u64)),
            chunks: vec![(keccak256("chunk"), Address::repeat_byte(1), 10_000)],
            rewards: Default::default(),
        },
    }
}

fn receipts(tag: &str, n: u64) -> Vec<SignedReceipt> {
    let key = key();
    (0..n).map(|i| signed(&key, tag, i)).collect()
}

fn ids(rs: &[SignedReceipt]) -> Vec<B256> {
    rs.iter().map(id).collect()
}

fn listed_ids(j: &dyn JournalBackend) -> Vec<B256> {
    j.list(None)
        .expect("list")
        .iter()
        .map(|(r, _)| id(r))
        .collect()
}

#[test]
fn appends_are_idempotent_and_all_or_nothing() {
    for b in backends() {
        let name = b.name;
        let rs = receipts("append", 6);
        let mut j = b.open();
        assert_eq!(
            j.append(&rs[0]).expect("append"),
            Appended::Written,
            "{name}"
        );
        assert_eq!(
            j.append(&rs[0]).expect("again"),
            Appended::AlreadyPresent,
            "{name}"
        );
        // Within one call and across calls, repeats are skipped.
        assert_eq!(
            j.append_batch(&[rs[1].clone(), rs[2].clone(), rs[1].clone(), rs[0].clone()])
                .expect("batch"),
            2,
            "{name}"
        );
        // The same id with other content refuses the whole call: rs[3] is not written.
        let mut forged = rs[2].clone();
        forged.receipt.nonce += 100;
        let forged = key().sign(forged.receipt, &crate::ledger()).expect("sign");
        let err = j
            .append_batch(&[rs[3].clone(), forged])
            .expect_err("a different receipt under a journaled id");
        assert!(
            matches!(err, JournalError::Duplicate { receipt_id } if receipt_id == id(&rs[2])),
            "{name}: {err}"
        );
        assert!(j.receipt(&id(&rs[3])).expect("get").is_none(), "{name}");
        // An invalid receipt is refused before anything is written.
        let mut bad = rs[4].clone();
        bad.receipt.chunks[0].weightBps = 9_999;
        assert!(
            matches!(j.append(&bad), Err(JournalError::Receipt(_))),
            "{name}"
        );
        j.append_batch(&rs[3..]).expect("the rest");
        assert_eq!(listed_ids(&*j), ids(&rs), "{name}: journal order");
        assert_eq!(j.max_nonce().expect("nonce"), Some(5), "{name}");
        let (back, state) = j.receipt(&id(&rs[4])).expect("get").expect("present");
        assert_eq!((&back, state), (&rs[4], ReceiptState::Pending), "{name}");
        back.verify(&crate::ledger()).expect("verifies");
        assert_eq!(j.summary().expect("stats").receipts, 6, "{name}");
    }
}

#[test]
fn states_follow_the_state_machine_atomically() {
    for b in backends() {
        let name = b.name;
        let rs = receipts("states", 4);
        let mut j = b.open();
        j.append_batch(&rs).expect("append");
        let (a, c) = (id(&rs[0]), id(&rs[1]));
        assert_eq!(
            j.set_state(&[a, c], batched(1)).expect("batch"),
            2,
            "{name}"
        );
        assert_eq!(
            j.set_state(&[a, c], batched(1)).expect("again"),
            0,
            "{name}"
        );
        for refused in [batched(2), ReceiptState::Pending, submitted(2)] {
            let err = j.set_state(&[a], refused).expect_err("refused");
            assert!(
                matches!(err, JournalError::Transition { .. }),
                "{name}: {err}"
            );
        }
        // One bad id refuses the whole call: rs[2] stays pending.
        let unknown = keccak256("no such receipt");
        let err = j
            .set_state(&[id(&rs[2]), unknown], batched(3))
            .expect_err("unknown id");
        assert!(
            matches!(err, JournalError::UnknownReceipt(u) if u == unknown),
            "{name}: {err}"
        );
        assert_eq!(
            j.receipt(&id(&rs[2])).expect("get").map(|(_, s)| s),
            Some(ReceiptState::Pending),
            "{name}"
        );
        j.set_state(&[a], submitted(1)).expect("submit");
        j.set_state(&[a, c], confirmed(1))
            .expect("confirm (skipping a step)");
        let s = j.summary().expect("stats");
        assert_eq!(
            (s.receipts, s.pending, s.batched, s.submitted, s.confirmed),
            (4, 2, 0, 0, 2),
            "{name}"
        );
        let confirmed_ids: Vec<B256> = j
            .list(Some(journal::StateKind::Confirmed))
            .expect("list")
            .iter()
            .map(|(r, s)| {
                assert_eq!(*s, confirmed(1));
                id(r)
            })
            .collect();
        assert_eq!(confirmed_ids, vec![a, c], "{name}");
    }
}

#[test]
fn claims_hand_each_receipt_out_once_until_released_or_expired() {
    for b in backends() {
        let name = b.name;
        let rs = receipts("claims", 6);
        let lease = Duration::from_secs(1);
        let mut j = b.open();
        j.set_lease(lease);
        j.append_batch(&rs).expect("append");
        let first = ids(&j.claim_pending(ADDR0, 4).expect("claim"));
        assert_eq!(first, ids(&rs[..4]), "{name}: oldest first");
        let second = ids(&j.claim_pending(ADDR0, 4).expect("claim"));
        assert_eq!(
            second,
            ids(&rs[4..]),
            "{name}: held receipts are not handed out"
        );
        assert!(
            j.claim_pending(ADDR0, 4).expect("claim").is_empty(),
            "{name}"
        );
        assert!(
            j.claim_pending(OTHER_PAYER, 4).expect("claim").is_empty(),
            "{name}: only the payer's receipts"
        );
        j.release(&first[..2]).expect("release");
        assert_eq!(
            ids(&j.claim_pending(ADDR0, 4).expect("claim")),
            first[..2].to_vec(),
            "{name}"
        );

        // A batch stays with its settler while the lease lives, then anyone may resume it.
        let batch = first[..3].to_vec();
        j.set_state(&batch, batched(7))
            .expect("batch (renews the lease)");
        assert!(
            j.claim_unfinished(ADDR0).expect("unfinished").is_empty(),
            "{name}"
        );
        std::thread::sleep(lease + lease / 4);
        let unfinished = j.claim_unfinished(ADDR0).expect("unfinished");
        assert_eq!(unfinished.len(), 1, "{name}");
        assert_eq!(unfinished[0].0, B256::repeat_byte(7), "{name}");
        assert_eq!(ids(&unfinished[0].1), batch, "{name}: the whole batch");
        assert!(
            j.claim_unfinished(ADDR0).expect("again").is_empty(),
            "{name}"
        );
        // Confirming ends the claim; the expired pending ones are free again.
        j.set_state(&batch, confirmed(7)).expect("confirm");
        let again = ids(&j.claim_pending(ADDR0, 10).expect("claim"));
        assert_eq!(again, vec![first[3], second[0], second[1]], "{name}");
    }
}

#[test]
fn reopening_recovers_receipts_states_and_a_dead_settlers_claims() {
    for b in backends() {
        let name = b.name;
        let rs = receipts("recover", 5);
        let lease = Duration::from_millis(500);
        let claimed_at;
        {
            let mut j = b.open();
            j.append_batch(&rs).expect("append");
            j.set_state(&ids(&rs[..1]), submitted(1)).expect("submit");
            j.set_lease(lease);
            claimed_at = Instant::now();
            let held = j.claim_pending(ADDR0, 2).expect("claim");
            assert_eq!(ids(&held), ids(&rs[1..3]), "{name}");
            // The settler dies here: no release.
        }
        let mut j = b.open();
        assert_eq!(listed_ids(&*j), ids(&rs), "{name}");
        // Log records on a directory (five receipts, one state change), rows in Postgres.
        let records = if b.shared { 5 } else { 6 };
        assert_eq!(j.recovered().records, records, "{name}");
        assert_eq!(
            j.receipt(&id(&rs[0])).expect("get").map(|(_, s)| s),
            Some(submitted(1)),
            "{name}"
        );
        let s = j.summary().expect("stats");
        assert_eq!((s.pending, s.submitted), (4, 1), "{name}");
        let now = ids(&j.claim_pending(ADDR0, 10).expect("claim"));
        let later = if b.shared {
            // The dead settler's claim outlives it until the lease ends…
            assert_eq!(now, ids(&rs[3..]), "{name}");
            std::thread::sleep(lease.saturating_sub(claimed_at.elapsed()) + lease / 2);
            ids(&j.claim_pending(ADDR0, 10).expect("claim"))
        } else {
            // …while a directory journal's claims die with its only process.
            Vec::new()
        };
        let all: HashSet<B256> = now.iter().chain(&later).copied().collect();
        assert_eq!(all.len(), now.len() + later.len(), "{name}: nothing twice");
        assert_eq!(
            all,
            ids(&rs[1..]).into_iter().collect(),
            "{name}: none lost"
        );
    }
}

#[test]
fn attribution_records_are_stored_beside_the_journal() {
    for b in backends() {
        let name = b.name;
        let mut j = b.open();
        let record = attribution_record();
        let hash = j.put_record(&record).expect("put");
        assert_eq!(hash, record.hash(), "{name}");
        assert_eq!(j.put_record(&record).expect("again"), hash, "{name}");
        assert_eq!(j.get_record(&hash).expect("get"), record, "{name}");
        let missing = keccak256("no record");
        assert!(
            matches!(
                j.get_record(&missing),
                Err(tribute_attribution::record::RecordError::Missing { .. })
            ),
            "{name}"
        );
    }
}

/// What one settler did: each batch it confirmed, with its receipts.
type Confirmed = Vec<(B256, Vec<B256>)>;

/// A settler that claims, batches and confirms until nothing is left; with `die_after`,
/// it stops for good right after batching that many batches (holding their claims).
fn settler(
    journal: &Mutex<Box<dyn JournalBackend>>,
    name: usize,
    die_after: Option<usize>,
    deadline: Instant,
) -> Confirmed {
    settler_reporting(journal, name, die_after, deadline, &|_, _| {})
}

/// [`settler`], calling `batched` after each batch it formed is committed, and pausing a
/// little between steps so that a kill can land anywhere.
fn settler_reporting(
    journal: &Mutex<Box<dyn JournalBackend>>,
    name: usize,
    die_after: Option<usize>,
    deadline: Instant,
    batched: &dyn Fn(B256, &[B256]),
) -> Confirmed {
    let mut done = Confirmed::new();
    let mut batches = 0;
    while Instant::now() < deadline {
        let mut j = journal.lock().expect("journal");
        let mut work: Vec<(B256, Vec<B256>)> = j
            .claim_unfinished(ADDR0)
            .expect("unfinished")
            .into_iter()
            .map(|(b, rs)| (b, ids(&rs)))
            .collect();
        let fresh = ids(&j.claim_pending(ADDR0, 7).expect("claim"));
        if !fresh.is_empty() {
            let mut seed = fresh.iter().flat_map(|i| i.to_vec()).collect::<Vec<u8>>();
            seed.extend_from_slice(&name.to_be_bytes());
            let batch = keccak256(seed);
            // Claims are exclusive, so batching claimed receipts never conflicts.
            j.set_state(&fresh, ReceiptState::Batched { batch_id: batch })
                .unwrap_or_else(|e| panic!("settler {name}: batching its own claim: {e}"));
            batched(batch, &fresh);
            batches += 1;
            if die_after == Some(batches) {
                return done;
            }
            work.push((batch, fresh));
        }
        if work.is_empty() {
            let s = j.summary().expect("stats");
            if s.confirmed == s.receipts {
                return done;
            }
            drop(j);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        for (batch, receipts) in work {
            let tx = keccak256(batch);
            j.set_state(
                &receipts,
                ReceiptState::Submitted {
                    batch_id: batch,
                    tx_hash: tx,
                },
            )
            .expect("submit");
            j.set_state(
                &receipts,
                ReceiptState::Confirmed {
                    batch_id: batch,
                    tx_hash: tx,
                    block: 1,
                },
            )
            .expect("confirm");
            done.push((batch, receipts));
        }
    }
    panic!("settler {name} did not finish in time");
}

/// Four settlers at once on one journal (separate connections on Postgres, as separate
/// processes would be; one shared handle on the single-writer directory), one of which
/// dies holding a batch: every receipt is confirmed exactly once, in exactly one batch.
#[test]
fn racing_settlers_never_batch_a_receipt_twice_and_lose_none() {
    for b in backends() {
        let name = b.name;
        let rs = receipts("race", 150);
        let lease = Duration::from_millis(400);
        let shared_handle = {
            let mut j = b.open();
            j.append_batch(&rs).expect("append");
            j.set_lease(lease);
            Arc::new(Mutex::new(j))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let handles: Vec<_> = (0..4)
            .map(|n| {
                let journal = if b.shared {
                    let mut j = b.open();
                    j.set_lease(lease);
                    Arc::new(Mutex::new(j))
                } else {
                    Arc::clone(&shared_handle)
                };
                let die_after = (n == 0).then_some(2);
                std::thread::spawn(move || settler(&journal, n, die_after, deadline))
            })
            .collect();
        let mut batch_of: HashMap<B256, B256> = HashMap::new();
        let mut batches = 0;
        for h in handles {
            for (batch, receipts) in h.join().expect("settler panicked") {
                batches += 1;
                for r in receipts {
                    assert!(
                        batch_of.insert(r, batch).is_none(),
                        "{name}: receipt {r} confirmed twice"
                    );
                }
            }
        }
        assert_eq!(batch_of.len(), rs.len(), "{name}: every receipt confirmed");
        let j = shared_handle.lock().expect("journal");
        for (r, state) in j.list(None).expect("list") {
            let batch = batch_of[&id(&r)];
            assert_eq!(state.batch_id(), Some(batch), "{name}: journal agrees");
            assert_eq!(state.kind(), journal::StateKind::Confirmed, "{name}");
        }
        assert!(batches >= 150 / 7, "{name}: {batches} batches");
    }
}

/// Set in a child settler's environment: the journal's URL.
#[cfg(feature = "postgres")]
const SETTLER_ENV: &str = "TRIBUTE_JOURNAL_SETTLER";

/// The child of [`a_settler_killed_mid_batch_loses_nothing`]: settles the shared journal,
/// printing `BATCH <batch id> <receipt ids…>` once each batch it forms is committed.
/// Does nothing unless [`SETTLER_ENV`] is set.
#[cfg(feature = "postgres")]
#[test]
#[ignore = "the child process of a_settler_killed_mid_batch_loses_nothing"]
fn child_settler() {
    let Ok(url) = std::env::var(SETTLER_ENV) else {
        return;
    };
    let name = std::process::id() as usize;
    let mut j = journal::open(&url).expect("child: open");
    j.set_lease(Duration::from_millis(500));
    let j = Mutex::new(j);
    let report = |batch: B256, ids: &[B256]| {
        use std::io::Write;
        let ids: Vec<String> = ids.iter().map(B256::to_string).collect();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "BATCH {batch} {}", ids.join(" ")).and_then(|()| out.flush());
        std::thread::sleep(Duration::from_millis(3));
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    settler_reporting(&j, name, None, deadline, &report);
}

/// Two settler processes on one Postgres journal; one is SIGKILLed at a random moment
/// (holding claims, perhaps mid-batch). The other takes over once the lease runs out: every
/// receipt ends confirmed, each in the one batch it was first put in.
#[cfg(feature = "postgres")]
#[test]
fn a_settler_killed_mid_batch_loses_nothing() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let Some(url) = pg_url() else { return };
    let db = pg::fresh_database(&url);
    let rs = receipts("kill", 200);
    journal::open(&db)
        .expect("open")
        .append_batch(&rs)
        .expect("append");
    let exe = std::env::current_exe().expect("test binary");
    let spawn = || {
        Command::new(&exe)
            .args([
                "--exact",
                "journal_backends::child_settler",
                "--nocapture",
                "--ignored",
                "--test-threads=1",
            ])
            .env(SETTLER_ENV, &db)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a child settler")
    };
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut children: Vec<std::process::Child> = (0..2).map(|_| spawn()).collect();
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let stdout = c.stdout.take().expect("piped stdout");
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut line = String::new();
                // Only whole lines count: a line cut by the kill is ignored.
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line.ends_with('\n') {
                    lines.lock().expect("lines").push(std::mem::take(&mut line));
                }
            })
        })
        .collect();
    // Kill the first once it has batched something (or after a while regardless).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let extra = Duration::from_millis(u64::from(nanos % 40));
    let wait = Instant::now() + Duration::from_secs(30);
    let batches = |lines: &Mutex<Vec<String>>| {
        let lines = lines.lock().expect("lines");
        lines.iter().filter(|l| l.contains("BATCH ")).count()
    };
    while Instant::now() < wait && batches(&lines) < 2 {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(extra);
    children[0].kill().expect("SIGKILL the first settler");
    children[0].wait().expect("reap");
    println!(
        "killed the first settler {} ms after its second batch",
        extra.as_millis()
    );
    let status = children[1].wait().expect("the second settler");
    assert!(status.success(), "the surviving settler failed: {status}");
    for r in readers {
        r.join().expect("reader");
    }

    let mut batch_of: HashMap<B256, B256> = HashMap::new();
    for line in lines.lock().expect("lines").iter() {
        let Some(at) = line.find("BATCH ") else {
            continue;
        };
        let mut words = line[at + 6..].split_whitespace();
        let batch: B256 = words.next().and_then(|w| w.parse().ok()).expect("batch id");
        for w in words {
            let r: B256 = w.parse().expect("receipt id");
            assert!(
                batch_of.insert(r, batch).is_none(),
                "receipt {r} was put in two batches"
            );
        }
    }
    let j = journal::open(&db).expect("reopen");
    let all = j.list(None).expect("list");
    assert_eq!(all.len(), rs.len(), "none lost");
    for (r, state) in all {
        assert_eq!(state.kind(), journal::StateKind::Confirmed, "{}", id(&r));
        if let Some(b) = batch_of.get(&id(&r)) {
            assert_eq!(
                state.batch_id(),
                Some(*b),
                "confirmed in the batch it was put in"
            );
        }
    }
}

#[test]
fn an_unreachable_or_unbuilt_postgres_is_a_typed_error_without_the_password() {
    let err = journal::open("postgres://app:s3cret@127.0.0.1:1/none").expect_err("no server");
    let text = err.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("app:***@127.0.0.1:1"), "{text}");
    #[cfg(feature = "postgres")]
    assert!(
        matches!(err, JournalError::PostgresUnreachable { .. }),
        "{err:?}"
    );
    #[cfg(not(feature = "postgres"))]
    assert!(
        matches!(err, JournalError::PostgresNotBuilt { .. }),
        "{err:?}"
    );
}

#[cfg(feature = "postgres")]
mod pg {

    use tribute_attribution::journal::{self, JournalError, SCHEMA_VERSION};

    use super::pg_url;

    /// A new empty database on the test server; returns its URL.
    pub fn fresh_database(url: &str) -> String {
        tribute_common::scratch_db::fresh_database(url, "tribute_journal_it")
            .unwrap_or_else(|e| panic!("TRIBUTE_TEST_PG_URL is set but unreachable: {e}"))
    }

    #[test]
    fn a_newer_schema_is_refused_untouched() {
        let Some(url) = pg_url() else { return };
        let db = fresh_database(&url);
        drop(journal::open(&db).expect("creates the schema"));
        let mut client = postgres::Client::connect(&db, postgres::NoTls).expect("connect");
        client
            .batch_execute("INSERT INTO tribute_journal_schema_version VALUES (99)")
            .expect("bump");
        let err = journal::open(&db).expect_err("too new");
        assert!(
            matches!(err, JournalError::SchemaTooNew { found: 99, supported, .. } if supported == SCHEMA_VERSION),
            "{err:?}"
        );
    }

    #[test]
    fn many_processes_may_create_the_schema_at_once() {
        let Some(url) = pg_url() else { return };
        let db = fresh_database(&url);
        let opened: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || journal::open(&db).map(|_| ()))
            })
            .collect();
        for h in opened {
            h.join().expect("thread").expect("open");
        }
    }
}
