use std::collections::HashSet;

use tribute_index::{
    ChunkId, ChunkerConfig, DocId, Document, Error, Fusion, Hit, Index, IndexConfig, Mode,
};

use crate::{ALICE, BOB, addr, corpus, embedder};

fn open(dir: &std::path::Path) -> Index {
    Index::open(dir, Some(embedder()), IndexConfig::default()).expect("index opens")
}

fn ids(hits: &[Hit]) -> Vec<String> {
    hits.iter().map(|h| h.doc_id.to_string()).collect()
}

#[test]
fn hybrid_search_finds_lexical_and_paraphrased_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = open(dir.path());
    let report = index.add_documents(corpus(), None).expect("ingest");
    assert_eq!(report.added, 5);
    assert_eq!(report.chunks, 5);
    assert_eq!(index.document_count(), 5);

    // Lexical: exact rare words.
    let bm25 = index
        .search("lithium-sulfur cells")
        .mode(Mode::Bm25)
        .k(3)
        .execute()
        .expect("bm25");
    assert_eq!(bm25[0].doc_id.as_str(), "zephyr-battery");
    assert!(bm25[0].bm25.is_some() && bm25[0].dense.is_none());

    // Paraphrase with no shared content word: only the dense retriever can get it.
    let dense = index
        .search("how do I keep my bread culture healthy")
        .mode(Mode::Dense)
        .k(3)
        .execute()
        .expect("dense");
    assert_eq!(dense[0].doc_id.as_str(), "sourdough", "{:?}", ids(&dense));
    assert!(dense[0].score > dense[1].score);

    // Hybrid: both lists contribute, with each retriever's score and rank kept.
    let hybrid = index
        .search("when should pilots land in strong gusts")
        .k(5)
        .execute()
        .expect("hybrid");
    assert_eq!(
        hybrid[0].doc_id.as_str(),
        "gust-notes",
        "{:?}",
        ids(&hybrid)
    );
    let top = &hybrid[0];
    assert_eq!(top.contributor, addr(BOB));
    assert_eq!(top.datanet.as_str(), "pilot-notes");
    assert!(top.bm25.is_some() && top.dense.is_some(), "{top:?}");
    for w in hybrid.windows(2) {
        assert!(w[0].score >= w[1].score);
    }
    // RRF gives the same winner here.
    let rrf = index
        .search("when should pilots land in strong gusts")
        .fusion(Fusion::Rrf { k: 60.0 })
        .execute()
        .expect("rrf");
    assert_eq!(rrf[0].doc_id.as_str(), "gust-notes");
}

#[test]
fn filters_restrict_datanets_and_contributors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = open(dir.path());
    index.add_documents(corpus(), None).expect("ingest");
    for mode in Mode::ALL {
        let hits = index
            .search("drone wind gusts")
            .mode(mode)
            .datanets(["zephyr-docs"])
            .k(10)
            .execute()
            .expect("search");
        assert!(!hits.is_empty(), "{mode}");
        assert!(
            hits.iter().all(|h| h.datanet.as_str() == "zephyr-docs"),
            "{mode}: {:?}",
            ids(&hits)
        );
        let hits = index
            .search("drone wind gusts")
            .mode(mode)
            .contributors([addr(BOB)])
            .k(10)
            .execute()
            .expect("search");
        assert!(!hits.is_empty());
        assert!(hits.iter().all(|h| h.contributor == addr(BOB)), "{mode}");
        let none = index
            .search("drone wind gusts")
            .mode(mode)
            .datanets(["zephyr-docs"])
            .contributors([addr(BOB)])
            .execute()
            .expect("search");
        assert!(none.is_empty(), "{mode}: {:?}", ids(&none));
    }
}

#[test]
fn reopen_gives_identical_results_and_deletes_persist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queries = ["drone battery charge", "wild yeast", "tidal range moon"];
    let before: Vec<Vec<Hit>> = {
        let mut index = open(dir.path());
        index.add_documents(corpus(), None).expect("ingest");
        queries
            .iter()
            .map(|q| index.search(*q).execute().expect("search"))
            .collect()
    };
    let mut index = open(dir.path());
    let after: Vec<Vec<Hit>> = queries
        .iter()
        .map(|q| index.search(*q).execute().expect("search"))
        .collect();
    assert_eq!(before, after);

    // Incremental add, then delete.
    let extra = Document::new("kite", "Kites fly best in steady winds of 15 to 25 km/h.")
        .with_datanet("hobby");
    let r = index.add_documents(vec![extra], None).expect("add");
    assert_eq!((r.added, index.document_count()), (1, 6));
    assert!(index.delete(&DocId::new("sourdough")).expect("delete"));
    assert!(
        !index
            .delete(&DocId::new("sourdough"))
            .expect("second delete is a no-op")
    );
    drop(index);

    let index = open(dir.path());
    index.verify().expect("consistent after reopen");
    assert_eq!(index.document_count(), 5);
    assert!(index.document(&DocId::new("sourdough")).is_none());
    for mode in Mode::ALL {
        let hits = index
            .search("wild yeast sourdough starter flour")
            .mode(mode)
            .k(10)
            .execute()
            .expect("search");
        assert!(
            hits.iter().all(|h| h.doc_id.as_str() != "sourdough"),
            "{mode}: deleted doc returned"
        );
    }
    let kite = index
        .search("kite steady winds")
        .mode(Mode::Bm25)
        .execute()
        .expect("search");
    assert_eq!(kite[0].doc_id.as_str(), "kite");
}

#[test]
fn reingest_is_idempotent_and_changed_text_replaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = open(dir.path());
    index.add_documents(corpus(), None).expect("ingest");
    let again = index.add_documents(corpus(), None).expect("ingest again");
    assert_eq!((again.added, again.unchanged, again.chunks), (0, 5, 0));
    let changed = Document::new(
        "tides",
        "Neap tides come at the quarter moons, when the tidal range is smallest.",
    )
    .with_datanet("baking");
    let r = index.add_documents(vec![changed], None).expect("replace");
    assert_eq!(r.replaced, 1);
    assert_eq!(index.document_count(), 5);
    let hits = index
        .search("neap tides quarter moons")
        .mode(Mode::Bm25)
        .k(10)
        .execute()
        .expect("search");
    assert_eq!(hits[0].doc_id.as_str(), "tides");
    assert!(hits[0].text.contains("Neap"));
    let old = index
        .search("spring tides sun")
        .mode(Mode::Bm25)
        .k(10)
        .execute()
        .expect("search");
    assert!(
        old.iter().all(|h| !h.text.contains("Spring")),
        "old version still indexed"
    );
}

#[test]
fn exact_and_near_duplicates_credit_the_first_contributor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = open(dir.path());
    index.add_documents(corpus(), None).expect("ingest");
    let original = &corpus()[2];
    let copy = Document::new("copied", original.text.clone())
        .with_contributor(addr(ALICE))
        .with_datanet("other");
    let near = Document::new(
        "reworded",
        "A sourdough starter is a culture of wild yeast and lactic acid bacteria. Feed it equal weights of flour and water each day, and keep it at room temperature.",
    )
    .with_title(original.title.clone())
    .with_contributor(addr(ALICE));
    let r = index.add_documents(vec![copy, near], None).expect("ingest");
    assert_eq!(r.duplicates.len(), 1);
    let (dup_id, origin) = &r.duplicates[0];
    assert_eq!(dup_id.as_str(), "copied");
    assert_eq!(origin.doc_id.as_str(), "sourdough");
    assert_eq!(origin.contributor, addr(BOB));
    let rec = index.document(&DocId::new("copied")).expect("recorded");
    assert_eq!(rec.chunks, 0);
    assert_eq!(rec.credited_contributor(), addr(BOB));

    assert_eq!(r.near_duplicates.len(), 1, "{:?}", r.near_duplicates);
    let (near_id, n) = &r.near_duplicates[0];
    assert_eq!(near_id.as_str(), "reworded");
    assert_eq!(n.origin.doc_id.as_str(), "sourdough");
    assert!(n.cosine >= 0.95 && n.cosine <= 1.0001, "{}", n.cosine);

    // The copy is not indexed twice: one hit for the text.
    let hits = index
        .search(original.text.clone())
        .mode(Mode::Bm25)
        .k(10)
        .execute()
        .expect("search");
    assert_eq!(
        hits.iter()
            .filter(|h| h.doc_id.as_str() == "copied")
            .count(),
        0
    );
    // Survives a reopen.
    drop(index);
    let index = open(dir.path());
    assert_eq!(
        index
            .document(&DocId::new("copied"))
            .and_then(|r| r.duplicate_of.clone())
            .map(|o| o.contributor),
        Some(addr(BOB))
    );
}

#[test]
fn chunks_have_stable_ids_and_true_offsets() {
    let sentence = |i: usize| {
        format!(
            "Sentence number {i} talks about topic {} in some detail. ",
            i * 7
        )
    };
    let text: String = (0..60).map(sentence).collect();
    let doc = Document::new("long", text.clone()).with_title("A long document");
    let config = IndexConfig {
        chunker: ChunkerConfig {
            max_tokens: 64,
            overlap_tokens: 16,
        },
        ..IndexConfig::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = Index::open(dir.path(), Some(embedder()), config.clone()).expect("open");
        let r = index
            .add_documents(vec![doc.clone()], None)
            .expect("ingest");
        assert!(r.chunks > 5, "{}", r.chunks);
        let hits = index
            .search("topic")
            .mode(Mode::Bm25)
            .k(1000)
            .execute()
            .expect("search");
        let mut chunks: Vec<(ChunkId, usize, usize)> = hits
            .iter()
            .map(|h| {
                assert_eq!(
                    &text[h.start..h.end],
                    h.text,
                    "offsets must slice the document"
                );
                let e = embedder();
                let seen = e.count_tokens(&h.title) + 1 + e.count_tokens(&h.text) + 2;
                assert!(seen <= 64, "the embedder sees {seen} tokens");
                (h.chunk_id.clone(), h.start, h.end)
            })
            .collect();
        chunks.sort_by_key(|c| c.1);
        runs.push(chunks);
    }
    assert_eq!(runs[0], runs[1], "same input must give the same chunks");
    let unique: HashSet<_> = runs[0].iter().map(|c| c.0.clone()).collect();
    assert_eq!(unique.len(), runs[0].len());
    assert_eq!(runs[0][0].0.as_str(), "long#0");
    // Every byte of text is covered by some chunk, and consecutive chunks overlap.
    assert_eq!(runs[0][0].1, 0);
    for w in runs[0].windows(2) {
        assert!(w[1].1 < w[0].2, "chunks must overlap: {w:?}");
    }
    assert_eq!(runs[0].last().map(|c| c.2), Some(text.trim_end().len()));
}

#[test]
fn bad_input_is_rejected_and_nothing_is_half_ingested() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = open(dir.path());
    let mut docs = corpus();
    docs.push(Document::new("empty", "   "));
    let err = index.add_documents(docs, None).unwrap_err();
    assert!(matches!(err, Error::InvalidDocument { .. }), "{err}");
    assert_eq!(index.document_count(), 0, "a bad batch must add nothing");

    let docs = vec![Document::new("a", "x"), Document::new("a", "y")];
    assert!(index.add_documents(docs, None).is_err());
    assert_eq!(index.document_count(), 0);

    assert!(matches!(
        "fuzzy".parse::<Mode>(),
        Err(Error::UnknownVariant { .. })
    ));
    assert!(
        index
            .search("q")
            .fusion(Fusion::Weighted { alpha: 2.0 })
            .execute()
            .is_err()
    );

    // Opening with another embedder dimension is refused (BM25-only "embedder" here).
    drop(index);
    let err = Index::open(dir.path(), None, IndexConfig::default())
        .map(|_| ())
        .and_then(|_| {
            Index::open(
                tempfile::tempdir().expect("t").path(),
                None,
                IndexConfig::default(),
            )
            .map(|_| ())
        });
    assert!(
        err.is_ok(),
        "opening without an embedder is allowed for BM25 search"
    );
    let missing = tribute_index::OnnxEmbedder::from_dir(
        std::path::Path::new("/nonexistent/model"),
        Default::default(),
    )
    .unwrap_err();
    assert!(missing.to_string().contains("make setup"), "{missing}");
}

#[test]
fn bm25_only_index_refuses_dense_and_an_embedder_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = Index::open(dir.path(), None, IndexConfig::default()).expect("open");
    index.add_documents(corpus(), None).expect("ingest");
    let hits = index
        .search("sourdough starter")
        .mode(Mode::Bm25)
        .execute()
        .expect("bm25");
    assert_eq!(hits[0].doc_id.as_str(), "sourdough");
    assert!(matches!(
        index.search("x").mode(Mode::Dense).execute(),
        Err(Error::NoEmbedder)
    ));
    drop(index);
    let err = Index::open(dir.path(), Some(embedder()), IndexConfig::default()).unwrap_err();
    assert!(matches!(err, Error::EmbedderMismatch { .. }), "{err}");
}
