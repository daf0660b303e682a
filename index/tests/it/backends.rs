//! The same conformance cases against every backend: the local directory always, and
//! Postgres + pgvector when `TRIBUTE_TEST_PG_URL` names a server (feature `postgres`;
//! `make test-postgres` starts one). With the variable set, an unreachable server fails
//! these tests; unset, the Postgres cases are skipped with a printed note.

use std::collections::HashSet;

use tribute_index::{DocId, Document, Fusion, Hit, Index, IndexConfig, Mode};

use crate::{ALICE, BOB, addr, corpus, embedder};

/// The Postgres test server's URL, or `None` (with a note) when none is configured.
pub fn pg_url() -> Option<String> {
    match std::env::var("TRIBUTE_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            eprintln!(
                "note: TRIBUTE_TEST_PG_URL is not set: Postgres backend cases skipped (run `make test-postgres`)"
            );
            None
        }
    }
}

#[cfg(not(feature = "postgres"))]
#[test]
fn postgres_cases_need_the_feature() {
    if pg_url().is_some() {
        panic!(
            "TRIBUTE_TEST_PG_URL is set but this test binary lacks the `postgres` feature: run `cargo test -p tribute-index --features postgres`"
        );
    }
}

/// Every backend the cases run on: a name and a fresh, empty index.
pub(crate) fn backends() -> Vec<(&'static str, Index, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = Index::open(dir.path(), Some(embedder()), IndexConfig::default()).expect("opens");
    #[allow(unused_mut)]
    let mut all = vec![("local", local, Some(dir))];
    #[cfg(feature = "postgres")]
    if let Some(url) = pg_url() {
        let db = pg::fresh_database(&url);
        let index = Index::open(&db, Some(embedder()), IndexConfig::default())
            .unwrap_or_else(|e| panic!("TRIBUTE_TEST_PG_URL is set but Postgres failed: {e}"));
        all.push(("postgres", index, None));
    }
    all
}

fn ids(hits: &[Hit]) -> Vec<String> {
    hits.iter().map(|h| h.chunk_id.to_string()).collect()
}

/// Same top-k, filters, deletes, replace-on-change and attribution fields everywhere.
#[test]
fn every_backend_answers_the_conformance_cases() {
    let mut dense_hits: Vec<(&str, Vec<Hit>)> = Vec::new();
    for (name, mut index, _dir) in backends() {
        let r = index.add_documents(corpus(), None).expect("ingest");
        assert_eq!((r.added, r.chunks), (5, 5), "{name}");
        assert_eq!(
            (index.document_count(), index.chunk_count()),
            (5, 5),
            "{name}"
        );

        // Top-k: clear lexical and paraphrased queries.
        let hits = index
            .search("lithium-sulfur cells")
            .k(3)
            .execute()
            .expect("hybrid");
        assert_eq!(hits[0].doc_id.as_str(), "zephyr-battery", "{name}");
        assert!(hits[0].bm25.is_some() && hits[0].dense.is_some(), "{name}");
        let hits = index
            .search("how do I keep my bread culture healthy")
            .k(2)
            .execute()
            .expect("hybrid");
        assert_eq!(hits[0].doc_id.as_str(), "sourdough", "{name}");
        let dense = index
            .search("when should a pilot land in strong wind")
            .mode(Mode::Dense)
            .k(5)
            .execute()
            .expect("dense");
        assert_eq!(dense.len(), 5, "{name}");
        dense_hits.push((name, dense));

        // Filters: datanet and contributor; a filtered search still fills k.
        let baking = index
            .search("drone battery wind")
            .datanets(["baking"])
            .k(2)
            .execute()
            .expect("filtered");
        assert_eq!(baking.len(), 2, "{name}: k rows despite the filter");
        assert!(
            baking.iter().all(|h| h.datanet.as_str() == "baking"),
            "{name}"
        );
        let bob = index
            .search("drone")
            .contributors([addr(BOB)])
            .k(10)
            .execute()
            .expect("filtered");
        assert_eq!(bob.len(), 3, "{name}: all of Bob's chunks");
        assert!(bob.iter().all(|h| h.contributor == addr(BOB)), "{name}");

        // Re-adding the same text changes nothing; other text replaces the old version.
        let r = index.add_documents(corpus(), None).expect("re-ingest");
        assert_eq!((r.unchanged, r.added, r.chunks), (5, 0, 0), "{name}");
        let changed = Document::new(
            "tides",
            "Neap tides come at the quarter moons, when the sun and moon pull at right angles.",
        )
        .with_title("Why tides change")
        .with_datanet("baking")
        .with_contributor(addr(BOB));
        let r = index.add_documents(vec![changed], None).expect("replace");
        assert_eq!((r.replaced, r.chunks), (1, 1), "{name}");
        assert_eq!(
            (index.document_count(), index.chunk_count()),
            (5, 5),
            "{name}"
        );
        let hits = index
            .search("neap tides quarter moons")
            .k(1)
            .execute()
            .expect("search");
        assert_eq!(hits[0].doc_id.as_str(), "tides", "{name}");
        assert!(
            hits[0].text.contains("Neap"),
            "{name}: the new version is found"
        );
        let bm25 = index
            .search("spring tides tidal range")
            .mode(Mode::Bm25)
            .k(5)
            .execute()
            .expect("bm25");
        assert!(
            bm25.iter().all(|h| !h.text.contains("Spring")),
            "{name}: old text gone"
        );

        // Exact duplicates are credited to the first contributor and not indexed again.
        let copy = Document::new("copied", corpus()[2].text.clone()).with_contributor(addr(ALICE));
        let r = index.add_documents(vec![copy], None).expect("duplicate");
        assert_eq!((r.duplicates.len(), r.chunks), (1, 0), "{name}");
        let rec = index.document(&DocId::new("copied")).expect("recorded");
        assert_eq!(rec.credited_contributor(), addr(BOB), "{name}");

        // Deletes remove the document and every chunk of it from every retriever.
        assert!(
            index.delete(&DocId::new("sourdough")).expect("delete"),
            "{name}"
        );
        assert!(
            !index.delete(&DocId::new("sourdough")).expect("delete"),
            "{name}"
        );
        for mode in Mode::ALL {
            let hits = index
                .search("sourdough starter flour water")
                .mode(mode)
                .k(10)
                .execute()
                .expect("search");
            assert!(
                hits.iter().all(|h| h.doc_id.as_str() != "sourdough"),
                "{name} {mode}"
            );
        }
        assert!(index.document(&DocId::new("sourdough")).is_none(), "{name}");
        index.verify().expect("consistent");
    }

    // Attribution fields, dense scores and ranks agree between backends, hit for hit.
    if let [(_, first), rest @ ..] = dense_hits.as_slice() {
        for (name, other) in rest {
            assert_eq!(ids(first), ids(other), "{name}: same dense top-k");
            for (a, b) in first.iter().zip(other) {
                assert_eq!(a.chunk, b.chunk, "{name}: attribution fields");
                let (da, db) = (a.dense.expect("dense"), b.dense.expect("dense"));
                assert_eq!(da.rank, db.rank, "{name}");
                assert!(
                    (da.score - db.score).abs() < 1e-4,
                    "{name}: {da:?} vs {db:?}"
                );
            }
        }
    }
}

/// Every backend stores each chunk's locator and returns it in hits and chunk listings.
#[test]
fn every_backend_stores_locators() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/documents/notes.md");
    let docs =
        tribute_index::load_file(&path, &tribute_index::LoadOptions::default()).expect("notes.md");
    let mut stored: Vec<(&str, Vec<tribute_index::Chunk>)> = Vec::new();
    for (name, mut index, _dir) in backends() {
        index.add_documents(docs.clone(), None).expect("ingest");
        let hits = index
            .search("PDF HTML DOCX Markdown plain text")
            .mode(Mode::Bm25)
            .k(1)
            .execute()
            .expect("search");
        let l = hits[0].locator.as_ref().expect("a locator");
        assert_eq!(l.headings, ["Zephyr notes", "Ingest", "Formats"], "{name}");
        let chars: Vec<char> = docs[0].text.chars().collect();
        let text: String = chars[l.char_start..l.char_end].iter().collect();
        assert_eq!(text, hits[0].text, "{name}");
        stored.push((name, index.chunks().expect("chunks")));
    }
    for (name, chunks) in &stored[1..] {
        assert_eq!(chunks, &stored[0].1, "{name} vs {}", stored[0].0);
    }
}

/// Every fusion gives exactly `Fusion::fuse` of the backend's own two lists.
#[test]
fn hybrid_search_fuses_like_the_fusion_function() {
    for (name, mut index, _dir) in backends() {
        index.add_documents(corpus(), None).expect("ingest");
        let query = "drone battery charge in gusty wind";
        let list = |mode| -> Vec<Hit> {
            index
                .search(query)
                .mode(mode)
                .k(100)
                .execute()
                .expect("search")
        };
        let (bm25, dense) = (list(Mode::Bm25), list(Mode::Dense));
        let key = |h: &Hit| h.chunk_id.to_string();
        let all: Vec<String> = bm25
            .iter()
            .chain(&dense)
            .map(key)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let slot = |h: &Hit| all.iter().position(|c| *c == key(h)).expect("known") as u32;
        let as_list =
            |hits: &[Hit]| -> Vec<(u32, f32)> { hits.iter().map(|h| (slot(h), h.score)).collect() };
        for fusion in [
            Fusion::Rrf { k: 60.0 },
            Fusion::Weighted { alpha: 0.3 },
            Fusion::Dbsf { alpha: 0.5 },
        ] {
            let expected = fusion.fuse(&as_list(&bm25), &as_list(&dense));
            let hybrid = index
                .search(query)
                .fusion(fusion)
                .k(100)
                .execute()
                .expect("hybrid");
            assert_eq!(hybrid.len(), expected.len(), "{name} {fusion}");
            for (h, (s, score)) in hybrid.iter().zip(&expected) {
                assert!(
                    (h.score - score).abs() < 1e-5,
                    "{name} {fusion}: {} vs {score}",
                    h.score
                );
                // Ties may order differently only if scores are equal.
                if all[*s as usize] != key(h) {
                    let other = expected
                        .iter()
                        .find(|(x, _)| all[*x as usize] == key(h))
                        .expect("present");
                    assert!((other.1 - score).abs() < 1e-5, "{name} {fusion}: order");
                }
            }
        }
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod pg {
    use std::sync::Arc;

    use tribute_index::{Embedder, Error, Index, IndexConfig, TokenCounter, WordCounter};

    use super::pg_url;

    /// A new empty database on the test server; returns its URL.
    pub fn fresh_database(url: &str) -> String {
        tribute_common::scratch_db::fresh_database(url, "tribute_it")
            .unwrap_or_else(|e| panic!("TRIBUTE_TEST_PG_URL={url}: {e}"))
    }

    struct Tiny;
    impl TokenCounter for Tiny {
        fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
            WordCounter.token_spans(text)
        }
    }
    impl Embedder for Tiny {
        fn model_id(&self) -> &str {
            "tiny-8"
        }
        fn dim(&self) -> usize {
            8
        }
        fn embed(&self, texts: &[&str]) -> tribute_index::Result<Vec<Vec<f32>>> {
            Ok(texts.iter().map(|_| vec![0.5; 8]).collect())
        }
    }

    #[test]
    fn unreachable_server_is_a_typed_error() {
        let err = Index::open(
            "postgres://postgres@127.0.0.1:1/none",
            None,
            IndexConfig::default(),
        )
        .expect_err("nothing listens on port 1");
        assert!(matches!(err, Error::PostgresUnreachable { .. }), "{err:?}");
        assert!(err.to_string().contains("Fix: start the server"), "{err}");
    }

    #[test]
    fn embedder_dimension_mismatch_and_newer_schema_are_refused() {
        let Some(url) = pg_url() else { return };
        let db = fresh_database(&url);
        drop(Index::open(&db, Some(super::embedder()), IndexConfig::default()).expect("creates"));
        let err =
            Index::open(&db, Some(Arc::new(Tiny)), IndexConfig::default()).expect_err("8 ≠ 384");
        assert!(
            matches!(
                err,
                Error::EmbedderMismatch {
                    stored_dim: 384,
                    given_dim: 8,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut client = postgres::Client::connect(&db, postgres::NoTls).expect("connects");
        client
            .batch_execute("INSERT INTO tribute_schema_version VALUES (99)")
            .expect("bump");
        let err = Index::open(&db, None, IndexConfig::default()).expect_err("newer schema");
        assert!(
            matches!(
                err,
                Error::SchemaTooNew {
                    found: 99,
                    supported: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("upgrade Tribute"), "{err}");
    }

    #[test]
    fn two_handles_share_one_knowledge_base() {
        let Some(url) = pg_url() else { return };
        let db = fresh_database(&url);
        let mut writer =
            Index::open(&db, Some(super::embedder()), IndexConfig::default()).expect("opens");
        let reader =
            Index::open(&db, Some(super::embedder()), IndexConfig::default()).expect("opens");
        writer.add_documents(super::corpus(), None).expect("ingest");
        let hits = reader
            .search("lithium-sulfur cells")
            .k(1)
            .execute()
            .expect("search");
        assert_eq!(hits[0].doc_id.as_str(), "zephyr-battery");
    }
}
