//! Faults: the server process is killed with SIGKILL in the middle of a burst of asks and
//! restarted, again and again. Every receipt acknowledged to a client (an HTTP 200 with its
//! body received) must be in the journal after the restart, verify, and be there once.
//! Then SIGTERM: the ask in flight finishes with 200 and its receipt is journaled.
//!
//! The server is this test binary run again (`chaos::serve_child`, ignored on its own) over
//! a knowledge base and journal in a temporary directory. `TRIBUTE_CHAOS_KILLS` sets the
//! number of kills (default 3; `make chaos-serve` runs 20).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tribute::SignedReceipt;
use tribute_server::ServerOptions;

use super::{LEDGER, QUESTION, client, engine_in, metrics};

/// The child's state directory (knowledge base and journal).
const CHILD_DIR: &str = "TRIBUTE_SERVE_CHILD_DIR";
/// What the child prints before its URL once it listens.
const READY: &str = "serve_child listening on ";
/// Clients asking at once during a burst.
const CLIENTS: usize = 4;

#[test]
#[ignore = "the server process of the kill tests, which start it themselves"]
fn serve_child() {
    let dir = std::env::var(CHILD_DIR)
        .unwrap_or_else(|_| panic!("run by the kill tests, with {CHILD_DIR} set"));
    let engine = engine_in(Path::new(&dir));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{READY}http://{}", listener.local_addr().expect("addr"));
        let sigterm = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            term.recv().await;
        };
        tribute_server::serve(listener, engine, ServerOptions::default(), sigterm)
            .await
            .expect("serve");
    });
    println!("serve_child stopped");
}

/// A running child server.
struct ChildServer {
    child: Child,
    url: String,
}

/// Starts the child over `dir` and waits for its URL.
fn start_child(dir: &Path) -> ChildServer {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "chaos::serve_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    // Reads the child's output to its end, so that it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.split(READY).nth(1) {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(180))
        .expect("the server child did not start listening within 180 s");
    ChildServer { child, url }
}

fn ask_body(model: &str, n: usize, max_tokens: usize) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": format!("{QUESTION} (ask {n})")}],
        "max_tokens": max_tokens,
        "method": "retrieval",
    })
}

/// Asks until the server goes away; each receipt id whose 200 reply arrived whole is
/// acknowledged.
async fn burst_client(url: String, model: String, acked: Arc<Mutex<Vec<String>>>, seed: usize) {
    let http = client();
    for n in 0.. {
        let body = ask_body(&model, seed * 1000 + n, 4);
        let Ok(r) = http
            .post(format!("{url}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
        else {
            return;
        };
        if r.status() != 200 {
            return;
        }
        let Ok(v) = r.json::<Value>().await else {
            return;
        };
        if let Some(id) = v["tribute"]["receipt_id"].as_str()
            && let Ok(mut a) = acked.lock()
        {
            a.push(id.to_owned());
        }
    }
}

/// The model name the child serves.
async fn model_of(url: &str) -> String {
    let v: Value = client()
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    v["data"][0]["id"].as_str().expect("model id").to_owned()
}

/// Every receipt record of the journal's log, in order (a torn tail ends the scan).
fn journaled_receipts(journal_dir: &Path) -> Vec<SignedReceipt> {
    let log = std::fs::read(journal_dir.join("journal.log")).expect("journal.log");
    let mut out = Vec::new();
    let mut at = 8; // the magic
    while at + 8 <= log.len() {
        let len = u32::from_le_bytes(log[at..at + 4].try_into().expect("4 bytes")) as usize;
        let Some(payload) = log.get(at + 8..at + 8 + len) else {
            break;
        };
        if payload.first() == Some(&b'R') {
            let text = std::str::from_utf8(&payload[1..]).expect("UTF-8 receipt");
            out.push(SignedReceipt::from_json(text).expect("a receipt record"));
        }
        at += 8 + len;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_receipts_survive_kill_9_and_sigterm_finishes_asks() {
    let kills: usize = std::env::var("TRIBUTE_CHAOS_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let mut per_round = Vec::new();
    for round in 0..kills {
        let mut server = start_child(dir.path());
        let model = model_of(&server.url).await;
        let before = acked.lock().expect("acked").len();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(burst_client(
                    server.url.clone(),
                    model.clone(),
                    acked.clone(),
                    round * CLIENTS + c,
                ))
            })
            .collect();
        // Once the burst is answering, kill at a varying point of it.
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.lock().expect("acked").len() == before {
            assert!(
                Instant::now() < deadline,
                "no ask answered in round {round}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(((round * 389) % 1200) as u64)).await;
        server.child.kill().expect("SIGKILL");
        server.child.wait().expect("reap");
        for c in clients {
            c.await.expect("client");
        }
        per_round.push(acked.lock().expect("acked").len() - before);
    }

    // Restarted once more (the journal recovers on open): every acknowledged receipt is
    // listed and verifies.
    let mut server = start_child(dir.path());
    let listed: Value = client()
        .get(format!("{}/v1/receipts?limit=1000000", server.url))
        .send()
        .await
        .expect("receipts")
        .json()
        .await
        .expect("json");
    let verified: HashMap<&str, bool> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|x| Some((x["id"].as_str()?, x["verified"] == true)))
        .collect();
    let acked_ids = acked.lock().expect("acked").clone();
    for id in &acked_ids {
        assert_eq!(verified.get(id.as_str()), Some(&true), "receipt {id} lost");
    }

    // SIGTERM with an ask in flight: it finishes, and its receipt is journaled.
    let model = model_of(&server.url).await;
    let url = server.url.clone();
    let in_flight = tokio::spawn(async move {
        let body = ask_body(&model, 999_999, 24);
        let r = client()
            .post(format!("{url}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .expect("the ask in flight at SIGTERM");
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.expect("json"))
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if metrics(&server.url)
            .await
            .contains("tribute_asks_in_flight 1")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the ask never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = server.child.id().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(term.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    let (status, answer) = in_flight.await.expect("ask");
    assert_eq!(status, 200, "{answer}");
    let last_id = answer["tribute"]["receipt_id"]
        .as_str()
        .expect("receipt id")
        .to_owned();
    let exit = server.child.wait().expect("exit");
    assert!(exit.success(), "the server did not stop cleanly: {exit}");

    // The log itself: each receipt once, each verifying.
    let records = journaled_receipts(&dir.path().join("receipts"));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in &records {
        r.verify(&LEDGER).expect("a journaled receipt verifies");
        *counts.entry(r.receipt.receiptId.to_string()).or_default() += 1;
    }
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(duplicated, 0, "duplicated receipts in the journal");
    for id in acked_ids.iter().chain([&last_id]) {
        assert_eq!(counts.get(id), Some(&1), "receipt {id}");
    }
    println!(
        "chaos: {kills} kills in {:.0} s; acknowledged per round {per_round:?} ({} in all); \
         journaled {} (signed but unacknowledged: {}); lost 0, duplicated 0; SIGTERM finished \
         the ask in flight",
        started.elapsed().as_secs_f64(),
        acked_ids.len(),
        records.len(),
        records.len().saturating_sub(acked_ids.len() + 1),
    );
}
