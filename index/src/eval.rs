//! Retrieval evaluation on BEIR-format collections, with trec_eval's metric definitions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::document::{Document, LoadOptions, load_jsonl};
use crate::error::{Error, Result};

/// Graded judgments: query id → document id → relevance.
pub type Qrels = HashMap<String, HashMap<String, i32>>;

/// A BEIR collection: `corpus.jsonl`, `queries.jsonl`, `qrels/test.tsv`.
#[derive(Debug)]
pub struct BeirDataset {
    /// Collection name (the directory's name).
    pub name: String,
    /// The documents.
    pub corpus: Vec<Document>,
    /// Queries `(id, text)` that have judgments, in file order.
    pub queries: Vec<(String, String)>,
    /// The judgments.
    pub qrels: Qrels,
}

#[derive(Deserialize)]
struct QueryLine {
    #[serde(alias = "id")]
    _id: serde_json::Value,
    text: String,
}

fn id_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl BeirDataset {
    /// Reads a BEIR folder. Only queries with at least one judgment are kept (as trec_eval
    /// does); documents with neither title nor text are skipped (public sets have a few).
    pub fn load(dir: &Path) -> Result<Self> {
        let options = LoadOptions {
            skip_empty: true,
            ..LoadOptions::default()
        };
        let corpus = load_jsonl(&dir.join("corpus.jsonl"), &options)?;
        let qrels_path = ["qrels/test.tsv", "qrels/dev.tsv"]
            .iter()
            .map(|p| dir.join(p))
            .find(|p| p.is_file())
            .unwrap_or_else(|| dir.join("qrels/test.tsv"));
        let qrels = load_qrels(&qrels_path)?;
        let qpath = dir.join("queries.jsonl");
        let text = std::fs::read_to_string(&qpath).map_err(Error::io(&qpath))?;
        let mut queries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let q: QueryLine =
                serde_json::from_str(line).map_err(|e| Error::MalformedDocument {
                    path: qpath.clone(),
                    line: i + 1,
                    message: e.to_string(),
                })?;
            let id = id_string(&q._id);
            if qrels.contains_key(&id) {
                queries.push((id, q.text));
            }
        }
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Self {
            name,
            corpus,
            queries,
            qrels,
        })
    }
}

/// Reads a qrels TSV (`query-id corpus-id score`, header optional).
pub fn load_qrels(path: &PathBuf) -> Result<Qrels> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let mut qrels: Qrels = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
        if cols.len() < 3 || line.trim().is_empty() {
            continue;
        }
        let Ok(score) = cols[cols.len() - 1].parse::<i32>() else {
            if i == 0 {
                continue; // header
            }
            return Err(Error::MalformedDocument {
                path: path.clone(),
                line: i + 1,
                message: format!("relevance {:?} is not an integer", cols[cols.len() - 1]),
            });
        };
        let (q, d) = if cols.len() >= 4 {
            (cols[0], cols[2])
        } else {
            (cols[0], cols[1])
        };
        qrels
            .entry(q.to_owned())
            .or_default()
            .insert(d.to_owned(), score);
    }
    Ok(qrels)
}

/// nDCG@k with linear graded gains (trec_eval `ndcg_cut`).
pub fn ndcg_at(ranked: &[String], judged: &HashMap<String, i32>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| {
            f64::from(judged.get(d).copied().unwrap_or(0).max(0)) / ((i + 2) as f64).log2()
        })
        .sum();
    let mut ideal: Vec<i32> = judged.values().copied().filter(|&r| r > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &r)| f64::from(r) / ((i + 2) as f64).log2())
        .sum();
    if idcg > 0.0 { dcg / idcg } else { 0.0 }
}

/// Recall@k: relevant (score ≥ 1) documents found in the top k over all relevant ones.
pub fn recall_at(ranked: &[String], judged: &HashMap<String, i32>, k: usize) -> f64 {
    let relevant = judged.values().filter(|&&r| r > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|d| judged.get(*d).is_some_and(|&r| r > 0))
        .count();
    found as f64 / relevant as f64
}

/// Reciprocal rank of the first relevant document within the top k (0 if none).
pub fn mrr_at(ranked: &[String], judged: &HashMap<String, i32>, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| judged.get(d).is_some_and(|&r| r > 0))
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// Percentile (nearest-rank) of a sample.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i32)]) -> HashMap<String, i32> {
        pairs.iter().map(|(d, r)| (d.to_string(), *r)).collect()
    }
    fn run(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    // Reference values computed with pytrec_eval (pytrec-eval-terrier, trec_eval 9):
    // qrels {q: {a: 2, b: 1, c: 0, d: 3}}, run a > x > b > d > c.
    #[test]
    fn metrics_match_trec_eval() {
        let j = judged(&[("a", 2), ("b", 1), ("c", 0), ("d", 3)]);
        let r = run(&["a", "x", "b", "d", "c"]);
        assert!(
            (ndcg_at(&r, &j, 10) - 0.796_333_799_5).abs() < 1e-9,
            "{}",
            ndcg_at(&r, &j, 10)
        );
        assert!(
            (ndcg_at(&r, &j, 3) - 0.525_004_989_4).abs() < 1e-9,
            "{}",
            ndcg_at(&r, &j, 3)
        );
        assert!((recall_at(&r, &j, 100) - 1.0).abs() < 1e-12);
        assert!((recall_at(&r, &j, 2) - 1.0 / 3.0).abs() < 1e-12);
        assert!((mrr_at(&run(&["x", "c", "b"]), &j, 10) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(mrr_at(&run(&["x"]), &j, 10), 0.0);
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
    }
}
