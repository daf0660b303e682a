//! The query path: a latency session for small requests, its batching, cache and bounds,
//! and bad queries.

use std::sync::{Arc, Barrier, Mutex};

use tribute_index::embedder::default_model_dir;
use tribute_index::{
    Embedder, EmbedderOptions, Error, Index, IndexConfig, Mode, OnnxEmbedder, QueryModel,
    QueryOptions,
};

use crate::{corpus, embedder};

/// A query of the BEIR style (CISI's are ~70 words).
const QUERY: &str = "What problems and concerns are there in making up descriptive titles? \
    What difficulties are involved in automatically retrieving articles from approximate titles?";

/// An embedder of its own with these query options (one ingest session: tests run in parallel).
fn embedder_with(query: QueryOptions) -> OnnxEmbedder {
    let options = EmbedderOptions {
        sessions: Some(1),
        query,
        ..EmbedderOptions::default()
    };
    OnnxEmbedder::from_dir(&default_model_dir(), options).expect("the default model loads")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Results must not depend on batch composition: a query embedded alone on the query
/// session, batched with other texts there (padded), and on an ingest session in a large
/// batch gives the same vector within 1e-6. The query session runs the model's own file
/// here; the int8 query encoder's batch independence is `embedder::tests`' to check.
#[test]
fn a_query_alone_or_inside_any_batch_gives_the_same_vector() {
    let e = embedder_with(QueryOptions {
        cache_entries: 0,
        model: QueryModel::Own,
        ..QueryOptions::default()
    });
    let alone = e.embed(&[QUERY]).expect("alone").remove(0);
    let longer = format!("{QUERY} {QUERY} And also: why do titles mislead readers?");
    let padded = e.embed(&["short", QUERY, &longer]).expect("padded");
    let bulk_texts: Vec<String> = (0..12).map(|i| format!("filler text number {i}")).collect();
    let mut bulk: Vec<&str> = bulk_texts.iter().map(String::as_str).collect();
    bulk.push(QUERY);
    bulk.push(&longer);
    let in_bulk = e.embed(&bulk).expect("bulk");
    let diffs = [
        max_abs_diff(&alone, &padded[1]),
        max_abs_diff(&alone, &in_bulk[12]),
        max_abs_diff(&padded[2], &in_bulk[13]),
    ];
    assert!(diffs.iter().all(|&d| d <= 1e-6), "differences {diffs:?}");
    let norm: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "unit length, got {norm}");
}

/// The cache keys on the ids the model reads: a repeat, and a text the tokenizer
/// normalises to the same ids, get the same vector as the first call.
#[test]
fn repeated_queries_come_from_the_cache_unchanged() {
    let e = embedder();
    let first = e.embed(&[QUERY]).expect("first").remove(0);
    let again = e.embed(&[QUERY]).expect("again").remove(0);
    assert_eq!(first, again);
    let shouted = e
        .embed(&[QUERY.to_uppercase().as_str()])
        .expect("case")
        .remove(0);
    assert_eq!(
        first, shouted,
        "lower-casing tokenizer: same ids, same entry"
    );
    let uncached = embedder_with(QueryOptions {
        cache_entries: 0,
        ..QueryOptions::default()
    })
    .embed(&[QUERY])
    .expect("uncached")
    .remove(0);
    assert!(max_abs_diff(&first, &uncached) <= 1e-6);
}

/// Without a query session small requests run on the ingest sessions, as before.
#[test]
fn the_query_session_can_be_turned_off() {
    let e = embedder_with(QueryOptions {
        threads: Some(0),
        ..QueryOptions::default()
    });
    let v = e.embed(&[QUERY]).expect("embeds").remove(0);
    let own = embedder_with(QueryOptions {
        model: QueryModel::Own,
        ..QueryOptions::default()
    });
    let reference = own.embed(&[QUERY]).expect("embeds").remove(0);
    assert!(max_abs_diff(&v, &reference) <= 1e-6);
}

/// A burst larger than the bound: every caller gets either the right vector or
/// `QueryQueueFull` at once — none waits forever, none gets another caller's vector.
#[test]
fn a_burst_beyond_the_bound_is_refused_with_a_typed_error() {
    let e = Arc::new(embedder_with(QueryOptions {
        max_waiting: 2,
        max_batch: 4,
        cache_entries: 0,
        ..QueryOptions::default()
    }));
    let queries: Vec<String> = (0..16)
        .map(|i| format!("question number {i} about drones and weather"))
        .collect();
    let expected: Vec<Vec<f32>> = queries
        .iter()
        .map(|q| e.embed(&[q.as_str()]).expect("embeds").remove(0))
        .collect();
    let start = Arc::new(Barrier::new(queries.len()));
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = queries
            .iter()
            .map(|q| {
                let (e, start) = (e.clone(), start.clone());
                s.spawn(move || {
                    start.wait();
                    e.embed(&[q.as_str()])
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    let mut served = 0;
    for (result, want) in results.into_iter().zip(&expected) {
        match result {
            Ok(mut v) => {
                served += 1;
                let v = v.remove(0);
                assert!(
                    max_abs_diff(&v, want) <= 1e-6,
                    "a caller got another's vector"
                );
            }
            Err(Error::QueryQueueFull { limit: 2 }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(served >= 1, "the first caller is always served");
}

fn index_with_corpus(dir: &std::path::Path) -> Index {
    let mut index = Index::open(dir, Some(embedder()), IndexConfig::default()).expect("opens");
    index.add_documents(corpus(), None).expect("ingests");
    index
}

#[test]
fn an_empty_or_blank_query_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = index_with_corpus(dir.path());
    for query in ["", "   ", "\n\t "] {
        for mode in [Mode::Hybrid, Mode::Dense, Mode::Bm25] {
            let err = index.search(query).mode(mode).execute().unwrap_err();
            assert!(
                matches!(err, Error::EmptyQuery),
                "{mode:?} {query:?}: {err}"
            );
        }
        assert!(matches!(index.embed_query(query), Err(Error::EmptyQuery)));
    }
    // A dense search given its vector needs no text.
    let v = index.embed_query("drone batteries").expect("embeds");
    let hits = index
        .search("")
        .mode(Mode::Dense)
        .query_vector(v)
        .execute()
        .expect("searches");
    assert!(!hits.is_empty());
}

/// Collects the messages of `WARN` events into a buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A query longer than the model's window is embedded from its first tokens, a warning
/// says so, and search still works (BM25 reads the whole query).
#[test]
fn a_query_longer_than_the_window_is_truncated_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = index_with_corpus(dir.path());
    let e = embedder();
    let window = e
        .max_text_tokens()
        .expect("the ONNX embedder knows its window");
    assert_eq!(window, 254, "256 tokens less [CLS] and [SEP]");
    let long = "How do drones hold a hover when the wind gusts? ".repeat(40);
    let spans = e.token_spans(&long);
    assert!(
        spans.len() > window,
        "the test query must overflow the window"
    );
    let prefix = &long[..spans[window - 1].1];

    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let c = captured.clone();
            move || c.clone()
        })
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let (vector, hits) = tracing::subscriber::with_default(subscriber, || {
        let v = index.embed_query(&long).expect("embeds");
        let hits = index.search(&long).k(3).execute().expect("searches");
        (v, hits)
    });
    let log = String::from_utf8_lossy(&captured.0.lock().expect("log").clone()).into_owned();
    assert!(log.contains("query truncated"), "no warning in {log:?}");
    assert!(log.contains(&format!("tokens={}", spans.len())), "{log}");
    assert!(!hits.is_empty());
    assert_eq!(hits[0].doc_id.as_str(), "gust-notes");

    let of_prefix = index.embed_query(prefix).expect("embeds");
    assert!(
        max_abs_diff(&vector, &of_prefix) <= 1e-6,
        "the window is the text's first tokens"
    );
    // A query within the window warns about nothing.
    let quiet = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let c = quiet.clone();
            move || c.clone()
        })
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || index.embed_query(QUERY).expect("embeds"));
    assert!(quiet.0.lock().expect("log").is_empty());
}
