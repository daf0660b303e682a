//! Kills `tribute ingest` at many moments and checks the index stays consistent.

use std::time::{Duration, Instant};

use tribute::index::{DocId, Index, IndexConfig, OnnxEmbedder};

use crate::tribute;

/// A deterministic pseudo-random sequence (64-bit LCG), so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn write_round(dir: &std::path::Path, round: usize, docs: usize) -> std::path::PathBuf {
    let path = dir.join(format!("round-{round}.jsonl"));
    let lines: String = (0..docs)
        .map(|i| {
            let text = format!(
                "Report {round}-{i} on turbine {i} of plant {round}. Vibration rose by {} percent after the storm. \
                 Crews replaced bearing {} and logged a torque of {} newton metres.",
                (round * 31 + i * 7) % 97,
                (i * 13) % 41,
                100 + i * 3
            );
            format!("{}\n", serde_json::json!({"id": format!("r{round}-d{i}"), "text": text}))
        })
        .collect();
    std::fs::write(&path, lines).expect("write round file");
    path
}

#[test]
fn killed_ingests_leave_a_consistent_openable_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = dir.path().join("kb");
    let embedder = std::sync::Arc::new(
        OnnxEmbedder::default_model().expect("model installed by scripts/setup.sh"),
    );
    let mut rng = Lcg(0x7269_6275_7465);
    // TRIBUTE_INGEST_KILLS=N for a longer run (`make chaos`).
    let rounds: usize = std::env::var("TRIBUTE_INGEST_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let docs_per_round = 200;
    let (mut kills, mut completed, mut partial) = (0, 0, 0);
    // Calibrate: how long one uninterrupted ingest of a round takes on this machine, so
    // the kills land inside ingests however fast or slow the machine is.
    let calibration = write_round(dir.path(), rounds + 1, docs_per_round);
    let t = Instant::now();
    let o = tribute()
        .args(["ingest", "--json", "--commit-every", "16", "--kb"])
        .arg(dir.path().join("calibration-kb"))
        .arg(&calibration)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let full_ms = t.elapsed().as_millis() as u64;
    for round in 0..rounds {
        let file = write_round(dir.path(), round, docs_per_round);
        let mut child = tribute()
            .args(["ingest", "--json", "--commit-every", "16", "--kb"])
            .arg(&kb)
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn tribute ingest");
        // Kill somewhere between start-up and 85 % of a full ingest.
        let delay = Duration::from_millis(full_ms / 20 + rng.next() % (full_ms * 8 / 10).max(1));
        let start = Instant::now();
        let mut exited_ok = false;
        while start.elapsed() < delay {
            if let Some(status) = child.try_wait().expect("wait") {
                exited_ok = status.success();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            kills += 1;
        } else if exited_ok {
            completed += 1;
        }

        // After every kill the index opens, agrees with itself, and holds whole commits only.
        let index = Index::open(&kb, Some(embedder.clone()), IndexConfig::default())
            .unwrap_or_else(|e| panic!("round {round}: index does not open after a kill: {e}"));
        index
            .verify()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let present: Vec<bool> = (0..docs_per_round)
            .map(|i| {
                index
                    .document(&DocId::new(format!("r{round}-d{i}")))
                    .is_some()
            })
            .collect();
        let n = present.iter().filter(|p| **p).count();
        assert!(
            present[..n].iter().all(|p| *p),
            "round {round}: committed documents are not a prefix"
        );
        if exited_ok {
            assert_eq!(
                n, docs_per_round,
                "round {round}: an acknowledged ingest lost documents"
            );
        }
        if n > 0 && n < docs_per_round {
            partial += 1;
        }
        // Earlier complete rounds are intact.
        for r in 0..round {
            if let Some(last) = index.document(&DocId::new(format!("r{r}-d{}", docs_per_round - 1)))
            {
                assert_eq!(last.chunks, 1);
            }
        }
    }
    // A final, uninterrupted ingest completes, and search works on the result.
    let file = write_round(dir.path(), rounds, 10);
    let o = tribute()
        .args(["ingest", "--json", "--kb"])
        .arg(&kb)
        .arg(&file)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let index = Index::open(&kb, Some(embedder), IndexConfig::default()).expect("open");
    index.verify().expect("consistent");
    let hits = index
        .search(format!("Report {rounds}-3 on turbine 3"))
        .k(3)
        .execute()
        .expect("search");
    assert_eq!(hits[0].doc_id.as_str(), format!("r{rounds}-d3"));
    println!(
        "crash test: survived {kills} SIGKILLs ({partial} between two commits of one ingest), {completed} ingests finished first, {rounds} rounds"
    );
    assert!(
        kills >= rounds / 2,
        "too few kills landed ({kills}); the test would prove little"
    );
    assert!(
        partial >= 2,
        "too few kills landed between commits ({partial}); the test would prove little"
    );
}
