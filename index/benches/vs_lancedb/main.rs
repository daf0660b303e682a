//! The Tribute side of `benches/vs_lancedb/run.sh`: one pass over one BEIR set, printed as
//! one JSON line (ingest seconds, per-query latencies in ms) for `summary.py`.
//!
//! ```sh
//! TRIBUTE_BENCH_DATA=../shared/data/cisi cargo bench -p tribute-index --bench vs_lancedb
//! ```
//! Environment: `TRIBUTE_BENCH_DATA` (a BEIR folder), `CORPUS_LIMIT` (first N documents),
//! `QUERY_LIMIT` (first N queries). Top 10, hybrid = BM25 + dense fused (the default).
//! The measured embedders have their query cache off, so every query runs the model;
//! `embed_cached` is a repeat through an embedder with the default cache. The plain rows
//! (`embed`, `hybrid_with_embedding`, ...) run queries on the model's own fp32 file without
//! spinning (the defaults before the int8 encoder); when the model directory holds the int8
//! query encoder (`make setup`), the `*_int8` rows run queries on it (`*_int8_spinning`:
//! today's default), and `ndcg10` gives nDCG@10 over the judged queries for both query
//! encoders against the same index (documents always embedded by `model.onnx`).

use std::sync::Arc;
use std::time::Instant;

use tribute_index::embedder::{
    Embedder, EmbedderOptions, INT8_QUERY_MODEL, OnnxEmbedder, default_model_dir,
};
use tribute_index::eval::{BeirDataset, ndcg_at};
use tribute_index::{Index, IndexConfig, Mode, QueryModel, QueryOptions};

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn embedder(query: QueryOptions, sessions: Option<usize>) -> Arc<OnnxEmbedder> {
    let options = EmbedderOptions {
        sessions,
        query,
        ..EmbedderOptions::default()
    };
    Arc::new(OnnxEmbedder::from_dir(&default_model_dir(), options).expect("run make setup first"))
}

/// Milliseconds of each call of `f` over the queries.
fn time_each(queries: &[String], mut f: impl FnMut(&str)) -> Vec<f64> {
    queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            f(q);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn main() {
    let data = std::env::var("TRIBUTE_BENCH_DATA").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/cisi").to_owned()
    });
    let mut set = BeirDataset::load(std::path::Path::new(&data)).expect("a BEIR folder");
    set.corpus
        .truncate(env_usize("CORPUS_LIMIT").unwrap_or(usize::MAX));
    // Every query of the set, judged or not (as the LanceDB side reads them).
    let queries_path = std::path::Path::new(&data).join("queries.jsonl");
    let queries: Vec<String> = std::fs::read_to_string(&queries_path)
        .expect("queries.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|q| q["text"].as_str().map(str::to_owned))
        .take(env_usize("QUERY_LIMIT").unwrap_or(usize::MAX))
        .collect();
    let uncached = QueryOptions {
        cache_entries: 0,
        model: QueryModel::Own,
        spinning: false,
        ..QueryOptions::default()
    };
    // The index's embedder: default options (ingest sessions, query session), no cache.
    let main = embedder(uncached.clone(), None);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut index =
        Index::open(tmp.path(), Some(main.clone()), IndexConfig::default()).expect("opens");
    let t = Instant::now();
    index
        .add_documents(std::mem::take(&mut set.corpus), None)
        .expect("ingests");
    let ingest_s = t.elapsed().as_secs_f64();

    // Variants of the query session, for choosing its settings.
    let spinning = embedder(
        QueryOptions {
            spinning: true,
            ..uncached.clone()
        },
        Some(1),
    );
    let single_session = embedder(
        QueryOptions {
            threads: Some(0),
            ..uncached.clone()
        },
        Some(1),
    );
    let cached = embedder(
        QueryOptions {
            model: QueryModel::Own,
            ..QueryOptions::default()
        },
        Some(1),
    );
    let int8_on_disk = default_model_dir().join(INT8_QUERY_MODEL).is_file();
    let int8_with = |spinning: bool| {
        int8_on_disk.then(|| {
            embedder(
                QueryOptions {
                    model: QueryModel::File(INT8_QUERY_MODEL.into()),
                    spinning,
                    ..uncached.clone()
                },
                Some(1),
            )
        })
    };
    let int8 = int8_with(false);
    let int8_spinning = int8_with(true);
    if int8.is_none() {
        eprintln!("no {INT8_QUERY_MODEL} in the model directory: int8 rows skipped");
    }
    let embed = |e: &OnnxEmbedder, q: &str| {
        std::hint::black_box(e.embed(&[q]).expect("embeds"));
    };
    let search = |q: &str, mode: Mode| {
        std::hint::black_box(
            index
                .search(q)
                .k(10)
                .mode(mode)
                .execute()
                .expect("searches"),
        );
    };
    // nDCG@10 as `tribute eval beir` computes it, for a query encoder's vectors.
    let ndcg = |e: &OnnxEmbedder, mode: Mode| {
        let total: f64 = set
            .queries
            .iter()
            .map(|(qid, text)| {
                let v = e.embed(&[text.as_str()]).expect("embeds").remove(0);
                let hits = index
                    .search(text.as_str())
                    .k(100)
                    .mode(mode)
                    .per_document(true)
                    .query_vector(v)
                    .execute()
                    .expect("searches");
                let ranked: Vec<String> = hits
                    .into_iter()
                    .map(|h| h.doc_id.to_string())
                    .filter(|d| d != qid)
                    .collect();
                ndcg_at(&ranked, &set.qrels[qid], 10)
            })
            .sum();
        total / set.queries.len().max(1) as f64
    };
    let mut ndcg10 = serde_json::json!({
        "dense": ndcg(&main, Mode::Dense),
        "hybrid": ndcg(&main, Mode::Hybrid),
    });
    if let Some(int8) = &int8 {
        ndcg10["dense_int8"] = ndcg(int8, Mode::Dense).into();
        ndcg10["hybrid_int8"] = ndcg(int8, Mode::Hybrid).into();
    }
    for q in queries.iter().take(5) {
        for e in [&int8, &int8_spinning].into_iter().flatten() {
            embed(e, q);
        }
        embed(&main, q);
        embed(&spinning, q);
        embed(&single_session, q);
        embed(&cached, q);
        search(q, Mode::Hybrid);
    }
    for q in &queries {
        embed(&cached, q);
    }
    let vectors: Vec<Vec<f32>> = queries
        .iter()
        .map(|q| main.embed(&[q.as_str()]).expect("embeds").remove(0))
        .collect();
    let mut next_vector = vectors.iter().cycle();
    let mut out = serde_json::json!({
        "side": "tribute",
        "data": std::path::Path::new(&data).file_name().map(|n| n.to_string_lossy().into_owned()),
        "ingest_s": ingest_s,
        "embed": time_each(&queries, |q| embed(&main, q)),
        "embed_spinning": time_each(&queries, |q| embed(&spinning, q)),
        "embed_single_session": time_each(&queries, |q| embed(&single_session, q)),
        "embed_cached": time_each(&queries, |q| embed(&cached, q)),
        "hybrid_with_embedding": time_each(&queries, |q| search(q, Mode::Hybrid)),
        "hybrid": time_each(&queries, |q| {
            let v = next_vector.next().cloned().unwrap_or_default();
            std::hint::black_box(index.search(q).k(10).query_vector(v).execute().expect("searches"));
        }),
        "dense_with_embedding": time_each(&queries, |q| search(q, Mode::Dense)),
        "lexical": time_each(&queries, |q| search(q, Mode::Bm25)),
        "ndcg10": ndcg10,
    });
    // As the index's own path does: embed the text, then search with the vector.
    let hybrid_via = |e: &OnnxEmbedder| {
        time_each(&queries, |q| {
            let v = e.embed(&[q]).expect("embeds").remove(0);
            std::hint::black_box(
                index
                    .search(q)
                    .k(10)
                    .query_vector(v)
                    .execute()
                    .expect("searches"),
            );
        })
    };
    if let (Some(int8), Some(int8_spinning), Some(fields)) =
        (&int8, &int8_spinning, out.as_object_mut())
    {
        fields.insert("hybrid_with_embedding_int8".into(), hybrid_via(int8).into());
        fields.insert(
            "hybrid_with_embedding_int8_spinning".into(),
            hybrid_via(int8_spinning).into(),
        );
        fields.insert(
            "embed_int8".into(),
            time_each(&queries, |q| embed(int8, q)).into(),
        );
        fields.insert(
            "embed_int8_spinning".into(),
            time_each(&queries, |q| embed(int8_spinning, q)).into(),
        );
    }
    println!("{out}");
}
