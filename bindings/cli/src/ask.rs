//! `tribute ask`: answer a question from a knowledge base with the local model, cite the
//! sources with measured weights, and sign a usage receipt.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use tribute::{Answer, AskEvent};

use crate::engine_args::{AnswerArgs, EngineArgs};

/// Arguments of `tribute ask`.
#[derive(Args)]
pub struct AskArgs {
    /// The question.
    question: String,
    #[command(flatten)]
    engine: EngineArgs,
    /// LoRA adapter PATH[:WEIGHT] (a PEFT directory or an .onnx_adapter file; its id is
    /// the file or directory name; weight 1 by default). Repeatable: several are merged.
    #[arg(long = "adapter", value_name = "PATH[:WEIGHT]")]
    adapters: Vec<String>,
    #[command(flatten)]
    answer: AnswerArgs,
    /// Fee of this answer in wei.
    #[arg(long)]
    fee: Option<String>,
    /// Print text pieces as the model writes them (ignored with --json).
    #[arg(long)]
    stream: bool,
    /// Print the answer, citations, receipt and timings as JSON.
    #[arg(long)]
    json: bool,
}

/// Splits `PATH[:WEIGHT]`; the id is the path's file name without an `.onnx_adapter`
/// extension.
fn parse_adapter(spec: &str) -> anyhow::Result<(String, PathBuf, f32)> {
    let (path, weight) = match spec.rsplit_once(':') {
        Some((p, w)) if w.parse::<f32>().is_ok() => (p, w.parse::<f32>().unwrap_or(1.0)),
        _ => (spec, 1.0),
    };
    if !weight.is_finite() {
        bail!("--adapter {spec}: the weight is not a finite number");
    }
    let path = PathBuf::from(path);
    let id = adapter_id(&path)
        .with_context(|| format!("--adapter {spec}: no file or directory name"))?;
    Ok((id, path, weight))
}

/// An adapter's id: its path's file name without an `.onnx_adapter` extension (its
/// on-chain id is `named_id` of it).
pub(crate) fn adapter_id(path: &std::path::Path) -> Option<String> {
    path.file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_end_matches(".onnx_adapter")
                .to_owned()
        })
        .filter(|n| !n.is_empty())
}

/// Runs `tribute ask`.
pub fn run(a: AskArgs) -> anyhow::Result<()> {
    let mut config = a.engine.config()?;
    let mut adapters = Vec::new();
    for spec in &a.adapters {
        let (id, path, weight) = parse_adapter(spec)?;
        config.adapters.push(tribute::config::AdapterConfig {
            id: id.clone(),
            path,
        });
        adapters.push((id, weight));
    }
    let engine = a.engine.build(config)?;
    let mut request = engine
        .ask(a.question.clone())
        .options(a.answer.options()?)
        .adapters(adapters);
    if let Some(f) = &a.fee {
        let fee = alloy_primitives::U256::from_str_radix(f.trim(), 10)
            .with_context(|| format!("--fee {f:?}: not a decimal amount of wei"))?;
        request = request.fee(fee);
    }

    if a.json {
        let answer = request.run()?;
        let mut v = serde_json::to_value(&answer)?;
        v["timings"] = serde_json::to_value(answer.usage.timings)?;
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let answer = if a.stream {
        let mut out = std::io::stdout().lock();
        let mut done = None;
        for event in request.stream()? {
            match event? {
                AskEvent::Text(t) => {
                    write!(out, "{t}")?;
                    out.flush()?;
                }
                AskEvent::Done(answer) => done = Some(*answer),
            }
        }
        writeln!(out, "\n")?;
        done.context("the stream ended without an answer")?
    } else {
        request.run()?
    };
    print_answer(&answer, a.stream);
    Ok(())
}

fn print_answer(answer: &Answer, streamed: bool) {
    if !streamed || !answer.citations.is_empty() {
        println!("{}\n", answer.cited_text.trim());
    }
    if !answer.citations.is_empty() {
        println!(
            "{:<4} {:>7}  {:<42}  {:<14}  source",
            "", "weight", "contributor", "datanet"
        );
        for c in &answer.citations {
            let snippet: String = c.snippet.chars().take(60).collect();
            let locator = c
                .locator
                .as_ref()
                .map_or(String::new(), |l| format!(" ({l})"));
            println!(
                "[{}]  {:>6.2}%  {:<42}  {:<14}  {}{locator}: {}…",
                c.marker,
                f64::from(c.weight_bps) / 100.0,
                c.contributor,
                c.datanet,
                c.title,
                snippet.trim_end()
            );
        }
        println!();
    }
    if let Some(audit) = &answer.citation_audit {
        println!("{}", audit_line(audit));
    }
    match (&answer.receipt, &answer.no_receipt) {
        (Some(r), _) => println!(
            "receipt {} signed by {} (fee {} wei)",
            r.receipt.receiptId, r.receipt.payer, r.receipt.fee
        ),
        (None, Some(why)) => println!("no receipt was signed: {why}"),
        (None, None) => println!("no receipt was signed"),
    }
    let t = answer.usage.timings;
    println!(
        "{} prompt + {} answer tokens; retrieval {:.0} ms, prefill {:.0} ms, decode {:.0} ms, \
         attribution {:.0} ms ({}), total {:.0} ms",
        answer.usage.prompt_tokens,
        answer.usage.answer_tokens,
        t.retrieval_ms,
        t.prefill_ms,
        t.decode_ms,
        t.attribution_ms,
        answer.usage.method.map_or("-", |m| m.as_str()),
        t.total_ms
    );
}

/// One line of the citation audit: precision, recall, and what they count.
fn audit_line(a: &tribute::citations::CitationAudit) -> String {
    let pct = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |x| format!("{:.0}%", x * 100.0));
    let c = &a.counts;
    format!(
        "citation audit ({}, influence >= {} {}): precision {}, recall {}; {} cited but unused, \
         {} used but uncited, {} of {} sentences unsupported",
        a.method,
        a.threshold,
        a.unit.as_str(),
        pct(a.precision),
        pct(a.recall),
        c.markers_shown - c.markers_used,
        c.influential - c.influential_cited,
        c.unsupported_sentences,
        c.sentences
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_specs_parse_ids_and_weights() {
        let (id, p, w) = parse_adapter("/x/zephyr-lora:0.5").expect("spec");
        assert_eq!(
            (id.as_str(), p, w),
            ("zephyr-lora", PathBuf::from("/x/zephyr-lora"), 0.5)
        );
        let (id, _, w) = parse_adapter("a/caps.onnx_adapter").expect("spec");
        assert_eq!((id.as_str(), w), ("caps", 1.0));
        let (id, _, w) = parse_adapter("a/b:-1").expect("spec");
        assert_eq!((id.as_str(), w), ("b", -1.0));
        assert!(parse_adapter("a/b:inf").is_err());
    }

    #[test]
    fn audit_line_names_precision_recall_and_counts() {
        let counts = tribute::citations::CitationCounts {
            sentences: 3,
            unsupported_sentences: 1,
            markers_shown: 4,
            markers_used: 3,
            influential: 4,
            influential_cited: 3,
        };
        let audit = tribute::citations::CitationAudit::new(tribute::Method::Loo, 1.0, counts);
        assert_eq!(
            audit_line(&audit),
            "citation audit (loo, influence >= 1 nats): precision 75%, recall 75%; \
             1 cited but unused, 1 used but uncited, 1 of 3 sentences unsupported"
        );
    }
}
