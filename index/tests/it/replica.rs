//! Searches on a real streaming standby (`index/tests/pg/pg.sh standby`, which
//! `scripts/with-postgres.sh` starts beside the primary: `TRIBUTE_TEST_PG_STANDBY_URL` and
//! `_DIR`): writes go to the primary, searches to the standby, so a search misses what the
//! standby has not replayed yet and finds it once it has; a restarted standby is
//! reconnected. Unset, skipped with a note, except under `CI`, where that fails.

use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use tribute_index::postgres::PgBackend;
use tribute_index::{Document, Error, Index, IndexConfig};

use crate::backends::pg_url;
use crate::{corpus, embedder};

/// The standby's URL (database `tribute`) and folder, when one runs.
fn standby() -> Option<(String, String)> {
    let url = std::env::var("TRIBUTE_TEST_PG_STANDBY_URL").ok();
    let dir = std::env::var("TRIBUTE_TEST_PG_STANDBY_DIR").ok();
    match (url, dir) {
        (Some(u), Some(d)) if !u.trim().is_empty() => Some((u, d)),
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI=true but TRIBUTE_TEST_PG_STANDBY_URL/_DIR are not set: run the tests through scripts/with-postgres.sh"
            );
            eprintln!("note: no standby configured: the replica test is skipped");
            None
        }
    }
}

/// `url` with its database replaced by the one `db_url` names.
fn same_database(url: &str, db_url: &str) -> String {
    let db = db_url.rsplit('/').next().expect("a database");
    let (server, _) = url.rsplit_once('/').expect("a database");
    format!("{server}/{db}")
}

/// Retries `f` for up to 30 s, until it returns `Some`.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the standby has replayed everything the primary has written so far.
fn caught_up(primary: &mut Client, standby: &mut Client) {
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .expect("primary LSN")
        .get(0);
    eventually("the standby replays the primary's WAL", || {
        let row = standby
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .ok()?;
        row.get::<_, bool>(0).then_some(())
    });
}

/// `index/tests/pg/pg.sh COMMAND DIR` (restart or stop the standby), which must succeed.
fn pg_sh(command: &str, dir: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg/pg.sh");
    let status = std::process::Command::new(script)
        .args([command, dir])
        .status()
        .expect("run pg.sh");
    assert!(status.success(), "pg.sh {command} {dir}: {status}");
}

fn doc_ids(index: &Index, query: &str) -> Vec<String> {
    index
        .search(query)
        .k(3)
        .execute()
        .expect("search")
        .iter()
        .map(|h| h.doc_id.to_string())
        .collect()
}

#[test]
fn searches_read_the_standby_and_see_writes_once_it_replays_them() {
    let (Some(url), Some((standby_url, standby_dir))) = (pg_url(), standby()) else {
        return;
    };
    let primary_db = crate::backends::pg::fresh_database(&url);
    let standby_db = same_database(&standby_url, &primary_db);
    let mut on_standby = eventually("the new database reaches the standby", || {
        Client::connect(&standby_db, NoTls).ok()
    });
    let in_recovery: bool = on_standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .expect("query")
        .get(0);
    assert!(in_recovery, "{standby_db} is a standby");

    // The knowledge base is created on the primary (migrations never run on the standby).
    let mut primary_only =
        Index::open(&primary_db, Some(embedder()), IndexConfig::default()).expect("primary");
    let backend = PgBackend::connect_with_replica(
        &primary_db,
        &standby_db,
        Some(embedder()),
        IndexConfig::default(),
    )
    .expect("primary and standby");
    assert!(backend.replica().is_some());
    let mut replicated = Index::with_backend(
        primary_db.clone().into(),
        Some(embedder()),
        Box::new(backend),
    );

    // Writes through the replicated handle reach the primary; the standby is read-only.
    let report = replicated.add_documents(corpus(), None).expect("ingest");
    assert_eq!(report.added, 5);
    let mut on_primary = Client::connect(&primary_db, NoTls).expect("primary");
    caught_up(&mut on_primary, &mut on_standby);
    let query = "lithium-sulfur cells";
    let from_standby = replicated.search(query).k(3).execute().expect("search");
    let from_primary = primary_only.search(query).k(3).execute().expect("search");
    assert_eq!(
        from_standby, from_primary,
        "the standby answers as the primary"
    );
    assert_eq!(from_standby[0].doc_id.as_str(), "zephyr-battery");

    // Replay paused: a new document is on the primary only, and searches show it: they
    // ran on the standby. Counts come from the primary.
    on_standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .expect("pause replay");
    let late = Document::new(
        "kelp",
        "Giant kelp forests grow half a metre a day in cold, nutrient-rich water.",
    )
    .with_title("Kelp");
    primary_only
        .add_documents(vec![late], None)
        .expect("ingest");
    let query = "how fast does giant kelp grow";
    assert_eq!(doc_ids(&primary_only, query)[0], "kelp");
    assert!(
        !doc_ids(&replicated, query).contains(&"kelp".to_owned()),
        "the search ran on the paused standby"
    );
    on_standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .expect("resume replay");
    caught_up(&mut on_primary, &mut on_standby);
    assert_eq!(doc_ids(&replicated, query)[0], "kelp");

    // A restarted standby: the next search reconnects and answers, no error surfaces.
    pg_sh("restart", &standby_dir);
    assert_eq!(doc_ids(&replicated, query)[0], "kelp");

    // A standby that is down: a typed error naming it (password hidden), not a panic.
    pg_sh("stop", &standby_dir);
    let err = replicated
        .search(query)
        .k(3)
        .execute()
        .expect_err("the standby is down");
    assert!(matches!(err, Error::PostgresUnreachable { .. }), "{err:?}");
    // Writes still go to the primary.
    let more = Document::new("moss", "Moss grows on the north side of trees.").with_title("Moss");
    replicated
        .add_documents(vec![more], None)
        .expect("ingest on the primary");
}
