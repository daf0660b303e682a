//! `tribute eval adapter`: a fine-tuned adapter against its base model (see
//! `tribute::qa::evaluate_adapter`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tribute::inference::Generator;
use tribute::qa::{AdapterQuestion, AdapterReport, evaluate_adapter};

/// Arguments of `tribute eval adapter`.
#[derive(Args)]
pub struct AdapterArgs {
    /// The adapter: a PEFT directory (as `tribute finetune` writes) or an `.onnx_adapter` file.
    #[arg(long)]
    adapter: PathBuf,
    /// JSONL: {"question", "expect"} or {"question", "answer"} (a `tribute finetune` QA line).
    #[arg(long)]
    data: PathBuf,
    /// Base model directory (default: the installed SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Most answer tokens.
    #[arg(long, default_value_t = 40)]
    max_tokens: usize,
    /// Evaluate only the first N questions.
    #[arg(long)]
    limit: Option<usize>,
    /// Print the report (with every answer) as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `tribute eval adapter`.
pub fn run(a: AdapterArgs) -> anyhow::Result<()> {
    let mut questions = AdapterQuestion::load_jsonl(&a.data)?;
    if let Some(n) = a.limit {
        questions.truncate(n);
    }
    let dir = a
        .model
        .clone()
        .unwrap_or_else(tribute::inference::default_model_dir);
    let generator = Generator::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let quiet = a.json;
    let report = evaluate_adapter(
        &generator,
        &a.adapter,
        &questions,
        a.max_tokens,
        |i, n, row| {
            if !quiet {
                let mark = |c: f64| if c > 0.0 { "ok" } else { "--" };
                eprintln!(
                    "[{}/{n}] base {} adapter {}  {}",
                    i + 1,
                    mark(row.base.contains_answer),
                    mark(row.adapter.contains_answer),
                    row.question
                );
            }
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &AdapterReport) {
    println!("| model | questions | exact match | contains answer | s/question |");
    println!("|---|---|---|---|---|");
    for (name, s) in [("base", &r.base), ("adapter", &r.adapter)] {
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.2} |",
            r.examples, s.exact_match, s.contains_answer, s.seconds_per_question
        );
    }
}
