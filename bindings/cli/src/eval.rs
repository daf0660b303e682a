//! `tribute eval beir`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use clap::{Args, Subcommand};
use serde::Serialize;
use tribute::index::eval::{BeirDataset, mrr_at, ndcg_at, percentile, recall_at};
use tribute::{Fusion, Index, IndexConfig, Mode};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Index a BEIR collection in a temporary directory and score every test query.
    Beir(BeirArgs),
    /// Score citation-weight methods on examples with known supporting passages.
    Attribution(crate::eval_attribution::AttributionArgs),
    /// Score answer quality (exact match, F1, support, looping, latency) on questions with gold answers.
    Qa(crate::eval_qa::QaArgs),
    /// Score a fine-tuned adapter against its base model: exact match and contains-answer of
    /// greedy answers to questions asked without sources.
    Adapter(crate::eval_adapter::AdapterArgs),
    /// Score citation precision/recall against gold supporting passages: Tribute's measured
    /// markers next to the markers the model writes when prompted to cite.
    Citations(crate::eval_citations::CitationsArgs),
    /// Score the source guard: flagged planted passages that take over answers, alerts on
    /// clean answers.
    Guard(crate::eval_guard::GuardArgs),
}

#[derive(Args)]
pub struct BeirArgs {
    /// BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv.
    #[arg(long)]
    data: PathBuf,
    /// hybrid, bm25, dense or all.
    #[arg(long, default_value = "all")]
    mode: String,
    /// Embedding model directory (default: the installed all-MiniLM-L6-v2).
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// What embeds the queries: `auto` (the int8 query encoder when installed, the default),
    /// `own` (the model's own file), or an ONNX file in the embedder's directory or a path;
    /// documents always keep the model's own.
    #[arg(long, default_value = "auto", value_parser = parse_query_model)]
    query_model: tribute::index::QueryModel,
    /// Fusion(s) for hybrid mode, comma-separated to compare several (default: the built-in default).
    #[arg(long)]
    fusion: Option<String>,
    /// Only the first N judged queries.
    #[arg(long)]
    limit: Option<usize>,
    /// Keep the index in this directory and reuse it on later runs (default: a temporary directory).
    #[arg(long)]
    kb: Option<PathBuf>,
    /// No progress output on stderr.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    dataset: String,
    mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fusion: Option<String>,
    queries: usize,
    #[serde(rename = "ndcg@10")]
    ndcg10: f64,
    #[serde(rename = "recall@100")]
    recall100: f64,
    #[serde(rename = "mrr@10")]
    mrr10: f64,
    index_seconds: f64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reused_index: bool,
    query_p50_ms: f64,
    query_p95_ms: f64,
}

/// The examples of a JSONL file, one per non-blank line (the `eval attribution` format
/// and its relatives); a line that does not parse, or that `check` refuses, is an error
/// naming the file and line.
pub fn read_examples<T: serde::de::DeserializeOwned>(
    path: &Path,
    check: impl Fn(&T) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<T>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut examples = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let where_ = || format!("{}:{}", path.display(), n + 1);
        let example: T = serde_json::from_str(&line).with_context(where_)?;
        check(&example).with_context(where_)?;
        examples.push(example);
    }
    Ok(examples)
}

pub fn run(c: EvalCommand) -> anyhow::Result<()> {
    match c {
        EvalCommand::Beir(a) => beir(a),
        EvalCommand::Attribution(a) => crate::eval_attribution::run(a),
        EvalCommand::Qa(a) => crate::eval_qa::run(a),
        EvalCommand::Adapter(a) => crate::eval_adapter::run(a),
        EvalCommand::Citations(a) => crate::eval_citations::run(a),
        EvalCommand::Guard(a) => crate::eval_guard::run(a),
    }
}

fn beir(a: BeirArgs) -> anyhow::Result<()> {
    let modes: Vec<Mode> = if a.mode.trim().eq_ignore_ascii_case("all") {
        Mode::ALL.to_vec()
    } else {
        vec![a.mode.parse()?]
    };
    let fusions: Vec<Fusion> = match &a.fusion {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![Fusion::default()],
    };
    let mut data = BeirDataset::load(&a.data)?;
    if let Some(n) = a.limit {
        data.queries.truncate(n);
    }
    let log = |msg: String| {
        if !a.json {
            eprintln!("{msg}");
        }
    };
    let needs_dense = modes.iter().any(|m| *m != Mode::Bm25);
    let embedder = if needs_dense {
        let dir = a
            .embedder
            .clone()
            .unwrap_or_else(tribute::index::embedder::default_model_dir);
        let mut options = tribute::index::EmbedderOptions::default();
        options.query.model = a.query_model.clone();
        let embedder: std::sync::Arc<dyn tribute::index::Embedder> =
            std::sync::Arc::new(tribute::index::OnnxEmbedder::from_dir(&dir, options)?);
        Some(embedder)
    } else {
        None
    };
    let tmp = tempfile::tempdir()?;
    let dir = a.kb.clone().unwrap_or_else(|| tmp.path().to_owned());
    let mut index = Index::open(&dir, embedder, IndexConfig::default())?;
    let reused_index = index.document_count() > 0;
    let started = Instant::now();
    let corpus = std::mem::take(&mut data.corpus);
    if reused_index {
        log(format!(
            "{}: reusing the index in {}",
            data.name,
            dir.display()
        ));
    } else {
        log(format!(
            "{}: indexing {} documents…",
            data.name,
            corpus.len()
        ));
        index.add_documents(corpus, None)?;
    }
    let index_seconds = started.elapsed().as_secs_f64();
    log(format!(
        "{}: indexed in {index_seconds:.1}s; {} queries",
        data.name,
        data.queries.len()
    ));

    let mut reports = Vec::new();
    for mode in &modes {
        let fusion_list: Vec<Option<Fusion>> = if *mode == Mode::Hybrid {
            fusions.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        for fusion in fusion_list {
            let (mut ndcg, mut recall, mut mrr) = (0.0, 0.0, 0.0);
            let mut latencies = Vec::with_capacity(data.queries.len());
            for (qid, text) in &data.queries {
                let t = Instant::now();
                let mut req = index
                    .search(text.as_str())
                    .k(100)
                    .mode(*mode)
                    .per_document(true);
                if let Some(f) = fusion {
                    req = req.fusion(f);
                }
                let hits = req.execute()?;
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                // As BEIR does, a document never counts as an answer to the query of the same id.
                let ranked: Vec<String> = hits
                    .into_iter()
                    .map(|h| h.doc_id.to_string())
                    .filter(|d| d != qid)
                    .collect();
                let judged = &data.qrels[qid];
                ndcg += ndcg_at(&ranked, judged, 10);
                recall += recall_at(&ranked, judged, 100);
                mrr += mrr_at(&ranked, judged, 10);
            }
            latencies.sort_by(f64::total_cmp);
            let n = data.queries.len().max(1) as f64;
            let r = Report {
                dataset: data.name.clone(),
                mode: mode.to_string(),
                fusion: fusion.map(|f| f.to_string()),
                queries: data.queries.len(),
                ndcg10: round4(ndcg / n),
                recall100: round4(recall / n),
                mrr10: round4(mrr / n),
                index_seconds: round4(index_seconds),
                reused_index,
                query_p50_ms: round4(percentile(&latencies, 50.0)),
                query_p95_ms: round4(percentile(&latencies, 95.0)),
            };
            log(format!(
                "{:<10} {:<7} {:<14} nDCG@10 {:.4}  R@100 {:.4}  MRR@10 {:.4}  p50 {:.2} ms  p95 {:.2} ms",
                r.dataset,
                r.mode,
                r.fusion.as_deref().unwrap_or(""),
                r.ndcg10,
                r.recall100,
                r.mrr10,
                r.query_p50_ms,
                r.query_p95_ms
            ));
            reports.push(r);
        }
    }
    if reports.len() == 1 && a.mode.trim() != "all" {
        println!("{}", serde_json::to_string(&reports[0])?);
    } else {
        println!("{}", serde_json::to_string(&reports)?);
    }
    Ok(())
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// `--query-model`: `auto`, `own` or a file.
fn parse_query_model(value: &str) -> Result<tribute::index::QueryModel, String> {
    Ok(match value {
        "auto" => tribute::index::QueryModel::Auto,
        "own" => tribute::index::QueryModel::Own,
        "" => return Err("expected auto, own or an ONNX file".into()),
        file => tribute::index::QueryModel::File(file.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Line {
        id: String,
    }

    #[test]
    fn read_examples_skips_blank_lines_and_names_the_bad_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "{\"id\":\"a\"}\n\n  \n{\"id\":\"b\"}\n").expect("write");
        let ids: Vec<String> = read_examples::<Line>(&path, |_| Ok(()))
            .expect("read")
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);

        std::fs::write(&path, "{\"id\":\"a\"}\n{\"id\":\n").expect("write");
        let e = read_examples::<Line>(&path, |_| Ok(()))
            .err()
            .expect("a bad line");
        assert!(format!("{e}").ends_with("x.jsonl:2"), "{e}");
    }
}
