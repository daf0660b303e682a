//! `tribute eval citations`: citation precision and recall against gold supporting
//! passages, Tribute's measured markers next to the markers the model writes when prompted
//! to cite (see `tribute::citations`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tribute::Method;
use tribute::citations::{CitationBench, CitationCounts, CitationReport, GoldScores};
use tribute::inference::Generator;
use tribute::qa::QaExample;

/// Arguments of `tribute eval citations`.
#[derive(Args)]
pub struct CitationsArgs {
    /// JSONL: {"id", "question", "answer", "passages": [{"id", "title"?, "text", "supporting"}]}.
    #[arg(long, required_unless_present = "merge")]
    data: Option<PathBuf>,
    /// Instead of running the model, merge the `--json` reports of disjoint parts of a data
    /// set (e.g. run in parallel with --offset/--limit) and print the whole set's tables.
    #[arg(long, value_name = "REPORT.json", conflicts_with = "data")]
    merge: Vec<PathBuf>,
    /// Model directory (default: $TRIBUTE_HOME/models/SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Attribution method that measures each source's influence on each sentence.
    #[arg(long, default_value = "loo")]
    method: Method,
    /// Smallest influence that counts as measurable (default: 1 nat for loo, ablation and
    /// shapley; 0.5 for similarity and retrieval).
    #[arg(long)]
    min_influence: Option<f64>,
    /// Embedding model directory for `--method similarity` (default MiniLM).
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// Most answer tokens.
    #[arg(long, default_value_t = 96)]
    max_tokens: usize,
    /// Skip the first N examples.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Evaluate only N examples (after --offset).
    #[arg(long)]
    limit: Option<usize>,
    /// Print the report (with every answer) as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `tribute eval citations`.
pub fn run(a: CitationsArgs) -> anyhow::Result<()> {
    if !a.merge.is_empty() {
        let mut parts = Vec::with_capacity(a.merge.len());
        for p in &a.merge {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            parts.push(
                serde_json::from_str::<CitationReport>(text.trim()).with_context(|| {
                    format!("{}: not an `eval citations --json` report", p.display())
                })?,
            );
        }
        return print(&CitationReport::merge(parts)?, a.json);
    }
    let Some(data) = &a.data else {
        anyhow::bail!("give the examples with --data FILE (or reports with --merge)");
    };
    let mut all = QaExample::load_jsonl(data)?;
    let mut examples = all.split_off(a.offset.min(all.len()));
    if let Some(n) = a.limit {
        examples.truncate(n);
    }
    anyhow::ensure!(
        !examples.is_empty(),
        "no examples left after --offset {}",
        a.offset
    );
    let dir = a
        .model
        .clone()
        .unwrap_or_else(tribute::inference::default_model_dir);
    let generator = Generator::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let mut bench = CitationBench::new(Arc::new(generator))
        .method(a.method)
        .max_tokens(a.max_tokens);
    if let Some(t) = a.min_influence {
        bench = bench.threshold(t);
    }
    if a.method == Method::Similarity {
        bench = bench.embedder(crate::load_embedder(a.embedder.as_ref())?);
    }
    let quiet = a.json;
    let report = bench
        .progress(move |i, n, row| {
            if !quiet {
                eprintln!(
                    "[{}/{n}] {} prompted {:?} tribute {:?} measured {:?} gold {:?} {:.1}s",
                    i + 1,
                    row.id,
                    row.prompted,
                    row.tribute,
                    row.measured,
                    row.gold,
                    row.seconds
                );
            }
        })
        .run(&examples)?;
    print(&report, a.json)
}

fn print(report: &CitationReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print_tables(report);
    }
    Ok(())
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.3}"))
}

fn print_tables(r: &CitationReport) {
    let unit = r.unit.as_str();
    println!(
        "{} examples ({} skipped); influence measured by {} (measurable: >= {} {unit})\n",
        r.examples,
        r.skipped.len(),
        r.method,
        r.threshold
    );
    println!(
        "| markers | precision | recall | F1 | answers citing | sources cited per answer | audit precision | audit recall |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let line = |name: &str, g: &GoldScores, audit: Option<&CitationCounts>| {
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.2} | {} | {} |",
            opt(g.precision),
            g.recall,
            g.f1,
            g.citing_answers,
            g.citations_per_answer,
            audit.map_or("1.000".to_owned(), |c| opt(c.precision())),
            audit.map_or("1.000".to_owned(), |c| opt(c.recall())),
        );
    };
    line(
        "prompted (the model's own [n])",
        &r.prompted,
        Some(&r.prompted_audit),
    );
    line(
        "tribute (attribution's markers)",
        &r.tribute,
        Some(&r.tribute_audit),
    );
    line(
        &format!("measured (influence >= {} {unit})", r.threshold),
        &r.measured,
        None,
    );
    println!("\nmeasured markers at other thresholds:\n");
    println!("| threshold ({unit}) | precision | recall | F1 | answers citing |");
    println!("|---|---|---|---|---|");
    for s in &r.sweep {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} |",
            s.threshold,
            opt(s.gold.precision),
            s.gold.recall,
            s.gold.f1,
            s.gold.citing_answers
        );
    }
    let c = &r.tribute_audit;
    println!(
        "\n{} of {} answer sentences have no source with measurable influence; {:.1} s per example",
        c.unsupported_sentences, c.sentences, r.seconds_per_example
    );
    for s in &r.skipped {
        println!("skipped {}: {}", s.id, s.reason);
    }
}
