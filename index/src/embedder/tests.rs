//! The query session on a model file of its own (`QueryOptions::model`), with the
//! installed all-MiniLM-L6-v2 (`make setup`).

use std::path::{Path, PathBuf};

use super::*;

const QUERY: &str = "What problems and concerns are there in making up descriptive titles? \
    What difficulties are involved in automatically retrieving articles from approximate titles?";

fn model_dir() -> PathBuf {
    let dir = default_model_dir();
    assert!(
        dir.join("model.onnx").is_file(),
        "no model in {}: run `make setup` first",
        dir.display()
    );
    dir
}

/// One ingest session, the cache off (every call runs the model), this query model.
fn embedder(dir: &Path, model: QueryModel) -> Result<OnnxEmbedder> {
    let options = EmbedderOptions {
        sessions: Some(1),
        query: QueryOptions {
            cache_entries: 0,
            model,
            ..QueryOptions::default()
        },
        ..EmbedderOptions::default()
    };
    OnnxEmbedder::from_dir(dir, options)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Texts batched into one request on a query model file run one per call: a query's
/// vector is bit-for-bit the one it gets alone.
#[test]
fn on_a_query_model_file_each_text_runs_alone() {
    let dir = model_dir();
    let e = embedder(&dir, QueryModel::File("model.onnx".into())).expect("loads");
    let alone = e.embed(&[QUERY]).expect("alone").remove(0);
    let longer = format!("{QUERY} {QUERY} And why do titles mislead readers?");
    let batched = e.embed(&["short", QUERY, &longer]).expect("batched");
    assert_eq!(alone, batched[1], "not bit-identical to the query alone");
    let default_path = embedder(&dir, QueryModel::Own).expect("loads");
    let reference = default_path.embed(&[QUERY]).expect("embeds").remove(0);
    assert!(cosine(&alone, &reference) > 1.0 - 1e-6);
}

#[test]
fn a_missing_query_model_file_is_a_model_directory_error() {
    let err = embedder(&model_dir(), QueryModel::File("no_such_model.onnx".into())).unwrap_err();
    assert!(
        matches!(&err, Error::ModelDirectory { reason, .. } if reason.contains("no_such_model.onnx")),
        "{err}"
    );
}

/// A scratch copy of the model directory (its files linked) without the int8 query
/// encoder; with `int8`, the encoder is made there by the project's Python environment, as
/// `make setup` does.
fn scratch_model_dir(scratch: &Path, int8: bool) -> PathBuf {
    let dir = model_dir();
    for entry in std::fs::read_dir(&dir).expect("model directory") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name != INT8_QUERY_MODEL {
            let to = scratch.join(&name);
            std::os::unix::fs::symlink(entry.path(), to).expect("links the model's files");
        }
    }
    if !int8 {
        return scratch.to_owned();
    }
    let python = tribute_common::tribute_home().join("venv/bin/python");
    let status = std::process::Command::new(&python)
        .args(["-W", "ignore", "-m", "tribute_export.query_encoder"])
        .arg(scratch)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (the exporter with onnxruntime; `make setup`): {e}",
                python.display()
            )
        });
    assert!(
        status.success(),
        "tribute_export.query_encoder failed: {status}"
    );
    scratch.to_owned()
}

/// `Auto` runs queries on the int8 encoder when the directory holds one, and on the
/// model's own file when it does not.
#[test]
fn auto_picks_the_int8_encoder_only_when_it_is_installed() {
    let with = tempfile::tempdir().expect("tempdir");
    let with = scratch_model_dir(with.path(), true);
    let auto = embedder(&with, QueryModel::Auto).expect("loads");
    let int8 = embedder(&with, QueryModel::File(INT8_QUERY_MODEL.into())).expect("loads");
    let own = embedder(&with, QueryModel::Own).expect("loads");
    let auto_v = auto.embed(&[QUERY]).expect("auto").remove(0);
    assert_eq!(auto_v, int8.embed(&[QUERY]).expect("int8").remove(0));
    let own_v = own.embed(&[QUERY]).expect("own").remove(0);
    assert!(
        cosine(&auto_v, &own_v) < 1.0 - 1e-5,
        "auto ran the model's own file"
    );

    let without = tempfile::tempdir().expect("tempdir");
    let without = scratch_model_dir(without.path(), false);
    let auto = embedder(&without, QueryModel::Auto).expect("loads without the encoder");
    let own = embedder(&without, QueryModel::Own).expect("loads");
    let (auto_v, own_v) = (
        auto.embed(&[QUERY]).expect("auto").remove(0),
        own.embed(&[QUERY]).expect("own").remove(0),
    );
    assert!(cosine(&auto_v, &own_v) > 1.0 - 1e-6);
}

/// The int8 query encoder: close to the model (cosine ≥ 0.99, as measured on CISI's
/// queries: mean 0.998), and a query's vector does not depend on its batch.
#[test]
fn the_int8_query_encoder_is_close_and_batch_independent() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch_model_dir(scratch.path(), true);
    let int8 =
        embedder(&dir, QueryModel::File(INT8_QUERY_MODEL.into())).expect("loads the int8 encoder");
    let fp32 = embedder(&dir, QueryModel::Own).expect("loads");
    let queries = [
        QUERY,
        "drone batteries in cold weather",
        "How do search engines rank documents by relevance to a query?",
    ];
    let quantised = int8.embed(&queries).expect("int8");
    let reference = fp32.embed(&queries).expect("fp32");
    for (q, r) in quantised.iter().zip(&reference) {
        let norm = cosine(q, q).sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "unit length, got {norm}");
        let c = cosine(q, r);
        assert!(c >= 0.99, "cosine to fp32 {c}");
    }
    let alone = int8.embed(&[QUERY]).expect("alone").remove(0);
    assert_eq!(alone, quantised[0], "depends on what it was batched with");
    // Documents (large requests) still go through the model itself.
    let bulk: Vec<String> = (0..8).map(|i| format!("filler document {i}")).collect();
    let mut texts: Vec<&str> = bulk.iter().map(String::as_str).collect();
    texts.push(QUERY);
    let in_bulk = int8.embed(&texts).expect("bulk").remove(8);
    assert!(cosine(&in_bulk, &reference[0]) > 1.0 - 1e-6);
}
