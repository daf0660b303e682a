//! `tribute eval qa`: how right the engine's answers are (see `tribute::qa`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tribute::inference::Generator;
use tribute::qa::{QaBench, QaContext, QaExample, QaReport};
use tribute::{AnswerMode, EngineConfig};

/// Arguments of `tribute eval qa`.
#[derive(Args)]
pub struct QaArgs {
    /// JSONL: {"id", "question", "answer", "passages": [{"id", "title"?, "text", "supporting"?}]}.
    #[arg(long)]
    data: PathBuf,
    /// Engine config (TOML) to evaluate (default: the built-in defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model directory (overrides the config's).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Embedding model directory (overrides the config's).
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// Answer from each example's own passages (the default).
    #[arg(long, group = "context")]
    gold: bool,
    /// Answer from retrieval over the passages of all examples.
    #[arg(long, group = "context")]
    retrieve: bool,
    /// Answer with no sources (the model's own knowledge).
    #[arg(long, group = "context")]
    no_context: bool,
    /// Attribution method for the supported-sentence measure (overrides the config's).
    #[arg(long)]
    method: Option<tribute::Method>,
    /// generative or extractive (overrides the config's `answer_mode`).
    #[arg(long)]
    answer_mode: Option<tribute::AnswerMode>,
    /// Most sentences of an extractive answer (overrides the config's).
    #[arg(long)]
    extractive_sentences: Option<usize>,
    /// Decode as before the repetition guard (greedy, no n-gram block, no repeat stop).
    #[arg(long)]
    no_guard: bool,
    /// System prompt (overrides the config's; empty: none of Tribute's own).
    #[arg(long)]
    system_prompt: Option<String>,
    /// Most answer tokens (overrides the config's).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Evaluate only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// Print the report (with every answer) as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `tribute eval qa`.
pub fn run(a: QaArgs) -> anyhow::Result<()> {
    let mut examples = QaExample::load_jsonl(&a.data)?;
    if let Some(n) = a.limit {
        examples.truncate(n);
    }
    let mut config = match &a.config {
        Some(p) => EngineConfig::from_toml_file(p)?,
        None => EngineConfig::default(),
    };
    if let Some(m) = &a.model {
        config.model = Some(m.clone());
    }
    if let Some(e) = &a.embedder {
        config.embedder = Some(e.clone());
    }
    if let Some(m) = a.method {
        config.attribution.method = m;
    }
    if let Some(m) = a.answer_mode {
        config.answer_mode = m;
    }
    if let Some(n) = a.extractive_sentences {
        config.extractive.sentences = n;
    }
    if a.no_guard {
        config.generation = config.generation.without_guard();
    }
    if let Some(s) = &a.system_prompt {
        config.generation.system_prompt = Some(s.clone());
    }
    if let Some(n) = a.max_tokens {
        config.generation.max_tokens = n;
    }
    let context = if a.retrieve {
        QaContext::Retrieve
    } else if a.no_context {
        QaContext::NoContext
    } else {
        QaContext::Gold
    };
    // Extractive answers without a model given: no generator at all, as an app would run.
    let needs_model = config.answer_mode == AnswerMode::Generative
        || config.model.is_some()
        || context == QaContext::NoContext;
    let embedder = crate::load_embedder(config.embedder.as_ref())?;
    let work = tempfile::tempdir()?;
    let mut bench = QaBench::new(config.clone(), work.path()).embedder(embedder);
    if needs_model {
        let dir = config
            .model
            .clone()
            .unwrap_or_else(tribute::inference::default_model_dir);
        let generator =
            Generator::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
        bench = bench.generator(Arc::new(generator));
    }
    let quiet = a.json;
    let report = bench
        .progress(move |i, n, row| {
            if !quiet {
                eprintln!(
                    "[{}/{n}] {} f1 {:.2} {:.1}s{}",
                    i + 1,
                    row.id,
                    row.f1,
                    row.seconds,
                    if row.looping { " looping" } else { "" }
                );
            }
        })
        .run(&examples, context)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &QaReport) {
    println!(
        "| context | examples | exact match | F1 | contains answer | answer recall | unsupported sentences | looping | answer tokens | s/question |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:.1} | {:.2} |",
        r.context.as_str(),
        r.examples,
        r.exact_match,
        r.f1,
        r.contains_answer,
        r.answer_recall,
        r.unsupported_sentence_rate
            .map_or_else(|| "n/a".to_owned(), |x| format!("{x:.3}")),
        r.looping_rate,
        r.answer_tokens,
        r.seconds_per_question
    );
}
