//! Retrieval benchmark: prints ingest throughput and query latency tables.
//!
//! ```sh
//! cargo bench -p tribute-index --bench retrieval
//! ```
//! Sections:
//! 1. **Real model** on the first `TRIBUTE_BENCH_DOCS` (default 5000) Reuters-21578
//!    articles: ingest docs/s (against `python_ingest_baseline.py`, the plain Python ONNX
//!    Runtime loop, on the same documents), query-embedding latency, and search latency
//!    per mode with and without the query embedding.
//! 2. **Scale**: `TRIBUTE_BENCH_SCALES` (default `10000,100000`) chunks of Reuters text,
//!    BM25 on the real text and dense on random-projection bag-of-words vectors (384-d), to
//!    measure index latency at sizes the 2-core machine cannot embed in minutes; the chunk
//!    budget stays at least 20 tokens, and beyond what Reuters fills (≈ 120k chunks) synthetic
//!    Reuters-like articles (`retrieval/synthetic.rs`) make up the rest. With
//!    `TRIBUTE_BENCH_PG_URL` (and `--features postgres`), the same chunks also go into a
//!    fresh Postgres database: ingest rows/s, the HNSW index rebuilt alone (`REINDEX`), and
//!    the same latency table, next to the local index's. `TRIBUTE_BENCH_PG_BULK=1` loads
//!    as docs/SCALING.md's bulk recipe does instead: the HNSW and GIN indexes dropped, the
//!    chunks copied in, then both indexes built (each timed).
//!
//! Latencies are medians (p50) and p95 over the queries (Reuters titles), in ms.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use tribute_index::chunker::{ChunkerConfig, TokenCounter, WordCounter};
use tribute_index::embedder::{Embedder, EmbedderOptions, OnnxEmbedder, default_model_dir};
use tribute_index::eval::percentile;
use tribute_index::{Document, Index, IndexConfig, Mode};

#[path = "retrieval/synthetic.rs"]
mod synthetic;

/// The smallest chunk budget of the scale section, in words of the corpus per chunk: the
/// chunker's `max_tokens` (its tokens are words and punctuation, so a chunk holds ≈ 10–15
/// words). The 115k-chunk point's Reuters budget is 22.
const MIN_CHUNK_WORDS: usize = 20;

/// Reuters-21578 articles `(id, title, body)` from the SGML files.
fn reuters(dir: &Path, limit: usize) -> Vec<(String, String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "sgm"));
    files.sort();
    let between = |s: &str, open: &str, close: &str| -> Option<String> {
        let a = s.find(open)? + open.len();
        let b = s[a..].find(close)? + a;
        Some(unescape(&s[a..b]))
    };
    let mut out = Vec::new();
    for f in files {
        let raw = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
        for art in raw.split("</REUTERS>") {
            let Some(id) = between(art, "NEWID=\"", "\"") else {
                continue;
            };
            let title = between(art, "<TITLE>", "</TITLE>").unwrap_or_default();
            let Some(body) = between(art, "<BODY>", "</BODY>") else {
                continue;
            };
            let body = body
                .trim_end_matches("Reuter\n&#3;")
                .trim()
                .replace("\n    ", "\n")
                .replace('\n', " ");
            if body.len() > 40 {
                out.push((id, title.trim().to_owned(), body));
            }
            if out.len() >= limit {
                return out;
            }
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace("&#3;", "")
}

/// Random-projection bag-of-words vectors: every word gets a fixed pseudo-random 384-d
/// direction and a text is the normalised sum of its words' directions. Cheap enough for
/// 100k chunks on 2 cores, and topical like real embeddings (texts sharing words are
/// close), which matters for how HNSW behaves; uniformly random vectors would not be.
struct ProjectionEmbedder;

impl TokenCounter for ProjectionEmbedder {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        WordCounter.token_spans(text)
    }
}

fn word_direction(word: &str, out: &mut [f32]) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in word.bytes() {
        h = (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3);
    }
    for x in out.iter_mut() {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        *x += (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
    }
}

impl Embedder for ProjectionEmbedder {
    fn model_id(&self) -> &str {
        "projection-384"
    }
    fn dim(&self) -> usize {
        384
    }
    fn embed(&self, texts: &[&str]) -> tribute_index::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 384];
                for (_, w) in WordCounter
                    .token_spans(t)
                    .iter()
                    .map(|&(a, b)| (a, &t[a..b]))
                {
                    word_direction(w, &mut v);
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
                v.iter_mut().for_each(|x| *x /= n);
                v
            })
            .collect())
    }
}

fn docs_of(articles: &[(String, String, String)]) -> Vec<Document> {
    articles
        .iter()
        .map(|(id, title, body)| {
            Document::new(format!("reuters-{id}"), body.clone())
                .with_title(title.clone())
                .with_datanet("reuters")
        })
        .collect()
}

/// Ingests the articles in batches of 2,000 until the index holds `target` chunks (or the
/// articles run out); returns the chunk count.
fn ingest_until(index: &mut Index, articles: &[(String, String, String)], target: usize) -> usize {
    let mut docs = docs_of(articles);
    let mut chunks = 0;
    while chunks < target && !docs.is_empty() {
        let take = docs.len().min(2000);
        let batch: Vec<Document> = docs.drain(..take).collect();
        chunks += index.add_documents(batch, None).expect("ingest").chunks;
    }
    chunks
}

fn time_queries(
    index: &Index,
    queries: &[(String, Vec<f32>)],
    mode: Mode,
    with_embedding: bool,
) -> (f64, f64) {
    let mut lat = Vec::with_capacity(queries.len());
    for (q, v) in queries {
        let t = Instant::now();
        let mut req = index.search(q.as_str()).k(10).mode(mode);
        if !with_embedding {
            req = req.query_vector(v.clone());
        }
        let hits = req.execute().expect("search");
        std::hint::black_box(hits);
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    (percentile(&lat, 50.0), percentile(&lat, 95.0))
}

fn latency_table(label: &str, index: &Index, queries: &[(String, Vec<f32>)], real_model: bool) {
    for mode in Mode::ALL {
        let (p50, p95) = time_queries(index, queries, mode, false);
        let with = if real_model && mode != Mode::Bm25 {
            let (a, b) = time_queries(index, queries, mode, true);
            format!("{a:>8.3} {b:>8.3}")
        } else {
            format!("{:>8} {:>8}", "-", "-")
        };
        println!(
            "{label:<28} {:<7} {p50:>8.3} {p95:>8.3}   {with}",
            mode.as_str()
        );
    }
}

fn main() {
    let data = PathBuf::from(std::env::var("TRIBUTE_BENCH_REUTERS").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/reuters21578")
            .display()
            .to_string()
    }));
    let n_docs: usize = std::env::var("TRIBUTE_BENCH_DOCS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let scales: Vec<usize> = std::env::var("TRIBUTE_BENCH_SCALES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let all = reuters(&data, usize::MAX);
    assert!(
        !all.is_empty(),
        "no Reuters articles under {}",
        data.display()
    );
    let query_titles: Vec<String> = all
        .iter()
        .rev()
        .filter(|a| !a.1.is_empty())
        .take(200)
        .map(|a| a.1.to_lowercase())
        .collect();

    println!(
        "# tribute-index retrieval benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<28} {:<7} {:>8} {:>8}   {:>8} {:>8}",
        "corpus", "mode", "p50 ms", "p95 ms", "+emb p50", "+emb p95"
    );

    // 1. Real model.
    if n_docs > 0 {
        let embedder = Arc::new(
            OnnxEmbedder::from_dir(&default_model_dir(), EmbedderOptions::default())
                .expect("run scripts/setup.sh first"),
        );
        let articles = &all[..n_docs.min(all.len())];
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut index = Index::open(
            tmp.path().join("kb"),
            Some(embedder.clone()),
            IndexConfig::default(),
        )
        .expect("open");
        let t = Instant::now();
        let report = index
            .add_documents(docs_of(articles), None)
            .expect("ingest");
        let secs = t.elapsed().as_secs_f64();
        let ours = articles.len() as f64 / secs;

        let mut emb_lat = Vec::new();
        let mut queries = Vec::new();
        for q in &query_titles {
            let t = Instant::now();
            let v = embedder.embed(&[q.as_str()]).expect("embed").remove(0);
            emb_lat.push(t.elapsed().as_secs_f64() * 1e3);
            queries.push((q.clone(), v));
        }
        emb_lat.sort_by(f64::total_cmp);
        latency_table(
            &format!("reuters {} docs/{} chunks", articles.len(), report.chunks),
            &index,
            &queries,
            true,
        );
        println!();
        println!(
            "query embedding (all-MiniLM-L6-v2, {} titles): p50 {:.2} ms, p95 {:.2} ms",
            emb_lat.len(),
            percentile(&emb_lat, 50.0),
            percentile(&emb_lat, 95.0)
        );
        println!(
            "ingest (chunk + embed + index + commit): {} docs in {secs:.1}s = {ours:.1} docs/s (embedding {:.1}s)",
            articles.len(),
            report.embed_seconds
        );

        // The peer: a plain Python ONNX Runtime loop, (a) over exactly the texts we
        // embedded (title + chunk), the same work; (b) over the documents, truncated at 256.
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_ingest_baseline.py");
        let chunk_file = tmp.path().join("chunks.jsonl");
        let doc_file = tmp.path().join("docs.jsonl");
        let chunk_lines: String = index
            .chunks()
            .expect("chunks of a local index")
            .into_iter()
            .map(|c| {
                format!(
                    "{}\n",
                    serde_json::json!({"_id": c.chunk_id, "text": c.embedded_text()})
                )
            })
            .collect();
        let doc_lines: String = articles
            .iter()
            .map(|(id, title, body)| {
                format!(
                    "{}\n",
                    serde_json::json!({"_id": id, "title": title, "text": body})
                )
            })
            .collect();
        std::fs::write(&chunk_file, chunk_lines).expect("write");
        std::fs::write(&doc_file, doc_lines).expect("write");
        let peer = |file: &Path| -> Option<f64> {
            let o = Command::new(&python)
                .arg(&script)
                .arg(default_model_dir())
                .arg(file)
                .output()
                .ok()?;
            if !o.status.success() {
                println!(
                    "python ORT loop unavailable: {}",
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
                return None;
            }
            serde_json::from_slice::<serde_json::Value>(&o.stdout).ok()?["seconds"].as_f64()
        };
        let embed_rate = report.chunks as f64 / report.embed_seconds;
        if let Some(py_secs) = peer(&chunk_file) {
            let py_rate = report.chunks as f64 / py_secs;
            println!(
                "same {} chunk texts, python ORT loop (batch 32): {py_rate:.1} chunks/s; tribute embedding {embed_rate:.1} chunks/s, whole ingest {:.1} chunks/s → {:.2}x",
                report.chunks,
                report.chunks as f64 / secs,
                (report.chunks as f64 / secs) / py_rate
            );
        }
        if let Some(py_secs) = peer(&doc_file) {
            let py = articles.len() as f64 / py_secs;
            println!(
                "documents, python ORT loop truncating at 256 tokens: {py:.1} docs/s; tribute (chunks everything) {ours:.1} docs/s → {:.2}x",
                ours / py
            );
        }
        println!();
    }

    // 2. Scale, synthetic vectors.
    for &target in &scales {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Small chunks so that the Reuters text yields `target` chunks, but no smaller than
        // MIN_CHUNK_WORDS: beyond what Reuters can fill, synthetic Reuters-like articles
        // (a bigram chain fit on it) make up the rest.
        let words = |a: &[synthetic::Article]| -> usize {
            a.iter().map(|a| a.2.split_whitespace().count()).sum()
        };
        let mut corpus = all.clone();
        let missing = (target * MIN_CHUNK_WORDS).saturating_sub(words(&corpus));
        if missing > 0 {
            let chain = synthetic::Bigrams::fit(&all);
            let per_article = (words(&all) / all.len()).max(1);
            corpus.extend(chain.articles(missing / per_article + 1, target as u64));
            println!(
                "scale {target}: {} Reuters articles + {} synthetic ones (bigram chain)",
                all.len(),
                corpus.len() - all.len()
            );
        }
        let all = &corpus;
        let total_words = words(all);
        let max_tokens = (total_words / target).clamp(8, 220);
        let config = IndexConfig {
            chunker: ChunkerConfig {
                max_tokens,
                overlap_tokens: 0,
            },
            near_duplicate_threshold: None,
            commit_every: 50_000,
            ..IndexConfig::default()
        };
        let embedder: Arc<dyn Embedder> = Arc::new(ProjectionEmbedder);
        let mut index = Index::open(
            tmp.path().join("kb"),
            Some(embedder.clone()),
            config.clone(),
        )
        .expect("open");
        let t = Instant::now();
        let chunks = ingest_until(&mut index, all, target);
        let build = t.elapsed().as_secs_f64();
        let queries: Vec<(String, Vec<f32>)> = query_titles
            .iter()
            .map(|q| {
                (
                    q.clone(),
                    embedder.embed(&[q.as_str()]).expect("embed").remove(0),
                )
            })
            .collect();
        latency_table(
            &format!("scale {chunks} chunks (projection)"),
            &index,
            &queries,
            false,
        );
        println!(
            "  (built in {build:.1}s: {:.0} chunks/s)",
            chunks as f64 / build
        );
        #[cfg(feature = "postgres")]
        if let Ok(url) = std::env::var("TRIBUTE_BENCH_PG_URL") {
            postgres_scale(&url, all, target, config, &queries);
        }
    }
}

/// The scale section's chunks in a fresh Postgres database: ingest, HNSW build, latency.
#[cfg(feature = "postgres")]
fn postgres_scale(
    url: &str,
    all: &[(String, String, String)],
    target: usize,
    config: IndexConfig,
    queries: &[(String, Vec<f32>)],
) {
    let db = tribute_common::scratch_db::fresh_database(url, "tribute_bench")
        .unwrap_or_else(|e| panic!("TRIBUTE_BENCH_PG_URL={url}: {e}"));
    let mut index = Index::open(&db, Some(Arc::new(ProjectionEmbedder)), config).expect("open");
    let mut client = postgres::Client::connect(&db, postgres::NoTls).expect("connect");
    let bulk = std::env::var("TRIBUTE_BENCH_PG_BULK").is_ok_and(|v| v == "1");
    if bulk {
        client
            .batch_execute("DROP INDEX tribute_chunks_embedding; DROP INDEX tribute_chunks_tsv")
            .expect("drop the search indexes");
    }
    let t = Instant::now();
    let chunks = ingest_until(&mut index, all, target);
    let ingest = t.elapsed().as_secs_f64();
    let timed = |client: &mut postgres::Client, sql: &str| {
        let t = Instant::now();
        client.batch_execute(sql).expect(sql);
        t.elapsed().as_secs_f64()
    };
    let per_100k = |s: f64| s * 100_000.0 / chunks as f64;
    if bulk {
        // The graph of 1M 384-d rows needs ≈ 2 GB to be built in memory.
        client
            .batch_execute(
                "SET maintenance_work_mem = '4GB'; SET max_parallel_maintenance_workers = 1",
            )
            .expect("settings");
        let hnsw = timed(
            &mut client,
            "CREATE INDEX tribute_chunks_embedding ON tribute_chunks \
             USING hnsw (embedding vector_cosine_ops)",
        );
        let gin = timed(
            &mut client,
            "CREATE INDEX tribute_chunks_tsv ON tribute_chunks USING gin (tsv)",
        );
        let analyze = timed(&mut client, "ANALYZE");
        println!(
            "  (bulk: copied in {ingest:.1}s = {:.0} chunks/s without the search indexes; \
             HNSW built in {hnsw:.1}s = {:.1}s per 100k rows, GIN in {gin:.1}s, ANALYZE {analyze:.1}s; \
             {:.0} chunks/s in all)",
            chunks as f64 / ingest,
            per_100k(hnsw),
            chunks as f64 / (ingest + hnsw + gin + analyze)
        );
    } else {
        let hnsw = timed(&mut client, "REINDEX INDEX tribute_chunks_embedding");
        println!(
            "  (ingest {ingest:.1}s: {:.0} chunks/s with COPY and the HNSW and GIN indexes kept up; \
             HNSW rebuilt alone in {hnsw:.1}s = {:.1}s per 100k rows)",
            chunks as f64 / ingest,
            per_100k(hnsw)
        );
    }
    latency_table(
        &format!("scale {chunks} chunks (postgres)"),
        &index,
        queries,
        false,
    );
}
