//! The HNSW path (indexes above the exact-scan threshold): snapshots, reopen, deletes.
//! Uses hash-seeded vectors: what is tested is persistence, not semantics.

use std::sync::Arc;

use tribute_index::{
    Document, Embedder, Hit, HnswConfig, Index, IndexConfig, Mode, TokenCounter, WordCounter,
};

struct HashEmbedder;

impl TokenCounter for HashEmbedder {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        WordCounter.token_spans(text)
    }
}

impl Embedder for HashEmbedder {
    fn model_id(&self) -> &str {
        "hash-32"
    }
    fn dim(&self) -> usize {
        32
    }
    fn embed(&self, texts: &[&str]) -> tribute_index::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                // Bag of hashed words: texts sharing words get similar vectors.
                let mut v = [0f32; 32];
                for w in t.split_whitespace() {
                    let h = w.bytes().fold(2166136261u32, |h, b| {
                        (h ^ u32::from(b)).wrapping_mul(16777619)
                    });
                    v[(h % 32) as usize] += 1.0;
                    v[((h >> 8) % 32) as usize] -= 0.5;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
}

fn config() -> IndexConfig {
    IndexConfig {
        hnsw: HnswConfig {
            exact_below: 64,
            ..HnswConfig::default()
        },
        near_duplicate_threshold: None,
        ..IndexConfig::default()
    }
}

fn docs(range: std::ops::Range<usize>) -> Vec<Document> {
    range
        .map(|i| {
            Document::new(
                format!("d{i}"),
                format!(
                    "item {i} colour c{} shape s{} size z{} batch b{}",
                    i % 7,
                    i % 11,
                    i % 13,
                    i / 50
                ),
            )
            .with_datanet(if i % 2 == 0 { "even" } else { "odd" })
        })
        .collect()
}

fn run_queries(index: &Index) -> Vec<Vec<Hit>> {
    [
        "colour c3 shape s5",
        "size z1 batch b2",
        "item 42",
        "shape s10 size z12",
    ]
    .iter()
    .flat_map(|q| Mode::ALL.map(|m| index.search(*q).mode(m).k(20).execute().expect("search")))
    .collect()
}

#[test]
fn graph_search_survives_reopen_identically_and_respects_deletes_and_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedder: Arc<dyn Embedder> = Arc::new(HashEmbedder);
    let before = {
        let mut index = Index::open(dir.path(), Some(embedder.clone()), config()).expect("open");
        index.add_documents(docs(0..400), None).expect("ingest");
        index
            .add_documents(docs(400..430), None)
            .expect("small incremental ingest");
        run_queries(&index)
    };
    let index = Index::open(dir.path(), Some(embedder.clone()), config()).expect("reopen");
    index.verify().expect("consistent");
    assert_eq!(
        run_queries(&index),
        before,
        "results changed across a restart"
    );

    // Filters inside the graph search.
    let hits = index
        .search("colour c3")
        .mode(Mode::Dense)
        .datanets(["odd"])
        .k(30)
        .execute()
        .expect("search");
    assert_eq!(hits.len(), 30);
    assert!(hits.iter().all(|h| h.datanet.as_str() == "odd"));
    drop(index);

    // Deletes hide chunks from the graph without a rebuild, across a reopen too.
    let mut index = Index::open(dir.path(), Some(embedder.clone()), config()).expect("reopen");
    let victim = index
        .search("item 42")
        .mode(Mode::Dense)
        .k(1)
        .execute()
        .expect("search")[0]
        .doc_id
        .clone();
    assert!(index.delete(&victim).expect("delete"));
    drop(index);
    let index = Index::open(dir.path(), Some(embedder), config()).expect("reopen");
    for mode in Mode::ALL {
        let hits = index
            .search("item 42")
            .mode(mode)
            .k(50)
            .execute()
            .expect("search");
        assert!(
            hits.iter().all(|h| h.doc_id != victim),
            "{mode}: deleted document returned"
        );
    }
}

#[test]
fn a_damaged_snapshot_is_rebuilt_from_the_vectors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedder: Arc<dyn Embedder> = Arc::new(HashEmbedder);
    {
        let mut index = Index::open(dir.path(), Some(embedder.clone()), config()).expect("open");
        index.add_documents(docs(0..300), None).expect("ingest");
    }
    // Corrupt every file of the snapshot.
    let dense = dir.path().join("dense");
    for entry in std::fs::read_dir(&dense).expect("dense dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("hnsw-") {
            for f in std::fs::read_dir(entry.path()).expect("snapshot").flatten() {
                std::fs::write(f.path(), b"garbage").expect("overwrite");
            }
        }
    }
    let index =
        Index::open(dir.path(), Some(embedder), config()).expect("opens despite a broken snapshot");
    index.verify().expect("consistent");
    let hits = index
        .search("item 7 colour c0")
        .mode(Mode::Dense)
        .k(5)
        .execute()
        .expect("search");
    assert_eq!(hits.len(), 5);
    assert!(
        hits.iter().any(|h| h.doc_id.as_str() == "d7"),
        "{:?}",
        hits.iter()
            .map(|h| h.doc_id.to_string())
            .collect::<Vec<_>>()
    );
}

#[test]
fn graph_search_recall_matches_an_exact_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedder: Arc<dyn Embedder> = Arc::new(HashEmbedder);
    let mut index = Index::open(dir.path(), Some(embedder.clone()), config()).expect("open");
    index.add_documents(docs(0..600), None).expect("ingest");
    drop(index);
    // The same directory opened with a huge exact-scan threshold gives the true top k.
    let exact_config = IndexConfig {
        hnsw: HnswConfig {
            exact_below: usize::MAX,
            ..HnswConfig::default()
        },
        ..config()
    };
    let graph = Index::open(dir.path(), Some(embedder.clone()), config()).expect("open");
    let exact = Index::open(dir.path(), Some(embedder), exact_config).expect("open");
    let (mut found, mut total) = (0, 0);
    for i in 0..40 {
        let q = format!("colour c{} shape s{} batch b{}", i % 7, i % 11, i % 9);
        let top10 = |index: &Index| -> Vec<_> {
            let hits = index
                .search(q.as_str())
                .mode(Mode::Dense)
                .k(10)
                .execute()
                .expect("search");
            hits.into_iter().map(|h| h.chunk.chunk_id).collect()
        };
        let (truth, got) = (top10(&exact), top10(&graph));
        found += got.iter().filter(|c| truth.contains(c)).count();
        total += truth.len();
    }
    let recall = found as f64 / total as f64;
    assert!(
        recall >= 0.95,
        "graph search recall@10 {recall:.3} against an exact scan"
    );
}

/// Rows the newest snapshot covers, from `dense/hnsw.json`.
fn snapshot_points(dir: &std::path::Path) -> u64 {
    let pointer: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("dense").join("hnsw.json")).expect("hnsw.json"),
    )
    .expect("json");
    pointer["points"].as_u64().expect("points")
}

#[test]
fn small_ingests_wait_for_a_quarters_growth_to_snapshot_and_closing_dumps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedder: Arc<dyn Embedder> = Arc::new(HashEmbedder);
    let before = {
        let mut index = Index::open(dir.path(), Some(embedder.clone()), config()).expect("open");
        index.add_documents(docs(0..1200), None).expect("ingest");
        assert_eq!(snapshot_points(dir.path()), 1200);
        // Each small ingest would have rewritten the whole graph; now they wait.
        for start in (1200..1480).step_by(40) {
            index
                .add_documents(docs(start..start + 40), None)
                .expect("small ingest");
            assert_eq!(snapshot_points(dir.path()), 1200, "after {start}");
        }
        // 1200 / 4 = 300 rows since the snapshot: due.
        index.add_documents(docs(1480..1500), None).expect("ingest");
        assert_eq!(snapshot_points(dir.path()), 1500);
        index.add_documents(docs(1500..1510), None).expect("ingest");
        assert_eq!(snapshot_points(dir.path()), 1500);
        run_queries(&index)
    };
    // Closing dumped the last 10 rows: the reopened index searches the same graph.
    assert_eq!(snapshot_points(dir.path()), 1510);
    let index = Index::open(dir.path(), Some(embedder), config()).expect("reopen");
    index.verify().expect("consistent");
    assert_eq!(
        run_queries(&index),
        before,
        "results changed across a restart"
    );
}
