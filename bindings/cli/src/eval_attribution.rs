//! `tribute eval attribution`: how well each citation-weight method finds the passages
//! that support an answer.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use tribute::attribution::{self, AttributionConfig, Method, Source};
use tribute::index::{Document, Index, IndexConfig, Mode};
use tribute::inference::{GenerateRequest, Generator, Prompt};
use tribute::rag::{DEFAULT_SYSTEM_PROMPT, EmbedderScorer, ModelScorer, PromptSource, RagPrompt};

/// Arguments of `tribute eval attribution`.
#[derive(Args)]
pub struct AttributionArgs {
    /// JSONL: {"id", "question", "answer"?, "passages": [{"id", "title", "text", "supporting"}]}.
    #[arg(long)]
    data: PathBuf,
    /// Model directory (default: $TRIBUTE_HOME/models/SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// loo, ablation, shapley, similarity, retrieval, loo-exact or all (comma-separated for
    /// several). `loo-exact` is leave-one-out with every subset's prompt rebuilt without
    /// the left-out sources and run in full (no masking): the reference the masked `loo`
    /// approximates; with both, the report adds their mean weight difference per source.
    #[arg(long, default_value = "all")]
    method: String,
    /// Evaluate only the first N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// Embedding model directory for retrieval scores and `similarity` (default MiniLM).
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// Random subsets for `ablation`.
    #[arg(long, default_value_t = 32)]
    samples: usize,
    /// Most subsets `shapley` may score per answer (exact when all 2^k fit).
    #[arg(long, default_value_t = 64)]
    shapley_passes: usize,
    /// Weight of the question's log-probability against the answer's in the model methods
    /// (0 = the answer alone).
    #[arg(long, default_value_t = AttributionConfig::default().question_weight)]
    question_weight: f64,
    /// Also write, per example, the answer tokens' log-probabilities under every subset of
    /// its passages (JSONL; k <= 8), for analysing methods offline.
    #[arg(long)]
    dump_subsets: Option<PathBuf>,
    /// Most tokens of a generated answer (examples without "answer").
    #[arg(long, default_value_t = 96)]
    max_tokens: usize,
    /// Print one JSON array of per-method results.
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize)]
struct Example {
    id: String,
    question: String,
    #[serde(default)]
    answer: Option<String>,
    passages: Vec<Passage>,
}

#[derive(Deserialize)]
struct Passage {
    id: String,
    #[serde(default)]
    title: String,
    text: String,
    #[serde(default)]
    supporting: bool,
}

#[derive(Default)]
struct Tally {
    examples: usize,
    top1: f64,
    mass: f64,
    recall2: f64,
    seconds: f64,
    fallbacks: usize,
}

/// A method as this benchmark runs it: a library method on the masked scorer, or
/// leave-one-out on the exact scorer (eval-only, see [`ExactScorer`]).
#[derive(Clone, Copy, PartialEq)]
enum EvalMethod {
    Masked(Method),
    LooExact,
}

impl EvalMethod {
    fn name(self) -> &'static str {
        match self {
            EvalMethod::Masked(m) => m.as_str(),
            EvalMethod::LooExact => "loo-exact",
        }
    }

    fn parse_list(list: &str) -> anyhow::Result<Vec<EvalMethod>> {
        if list.trim().eq_ignore_ascii_case("all") {
            return Ok(Method::ALL.iter().map(|&m| EvalMethod::Masked(m)).collect());
        }
        list.split(',')
            .map(|m| -> anyhow::Result<EvalMethod> {
                Ok(match m.trim() {
                    "loo-exact" => EvalMethod::LooExact,
                    other => EvalMethod::Masked(other.parse()?),
                })
            })
            .collect()
    }
}

/// Scores the answer with the left-out sources *removed* from the prompt: every subset's
/// prompt is rebuilt from the kept sources alone (renumbered, as a prompt without them
/// would be) and run in full, so nothing the model computes can have seen a left-out
/// source. The masked scorer instead runs the full prompt once and hides left-out sources
/// from the question and answer only. One prefill per subset: k + 1 for `loo`.
struct ExactScorer<'a> {
    generator: &'a Generator,
    question: &'a str,
    shown: &'a [PromptSource],
    answer_tokens: Vec<u32>,
    answer_spans: Vec<std::ops::Range<usize>>,
}

impl<'a> ExactScorer<'a> {
    /// `answer_tokens` as the masked scorer scores them (the reference answer tokenized,
    /// or the generated tokens), with their byte spans in the answer.
    fn new(
        generator: &'a Generator,
        question: &'a str,
        shown: &'a [PromptSource],
        masked: &ModelScorer<'_>,
        answer_tokens: Vec<u32>,
    ) -> Self {
        ExactScorer {
            generator,
            question,
            shown,
            answer_tokens,
            answer_spans: attribution::ContextScorer::token_spans(masked),
        }
    }

    /// The prompt of the kept sources; (question log-probs, answer log-probs) under it.
    fn score(&self, keep: &[bool]) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        let kept: Vec<PromptSource> = self
            .shown
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(s, _)| s.clone())
            .collect();
        let prompt = RagPrompt::build(self.generator, DEFAULT_SYSTEM_PROMPT, self.question, &kept)?;
        let q = prompt.question_tokens.clone();
        let at = if q.is_empty() || q.start < 2 {
            prompt.tokens.len()
        } else {
            q.start
        };
        let (prefix, tail) = prompt.tokens.split_at(at);
        let rest: Vec<u32> = tail.iter().chain(&self.answer_tokens).copied().collect();
        let mut rows =
            self.generator
                .score_masked(prefix, &rest, &[vec![true; prefix.len()]], &[])?;
        let row = rows.pop().context("the scorer returned no row")?;
        let answer = row[tail.len()..].to_vec();
        let question = if at < prompt.tokens.len() {
            row[..q.len()].to_vec()
        } else {
            Vec::new()
        };
        Ok((question, answer))
    }
}

impl attribution::ContextScorer for ExactScorer<'_> {
    fn token_spans(&self) -> Vec<std::ops::Range<usize>> {
        self.answer_spans.clone()
    }

    fn token_log_probs(
        &self,
        subsets: &[Vec<bool>],
    ) -> Result<Vec<Vec<f32>>, attribution::ScorerError> {
        Ok(self.answer_and_question_log_probs(subsets)?.0)
    }

    fn answer_and_question_log_probs(
        &self,
        subsets: &[Vec<bool>],
    ) -> Result<attribution::AnswerAndQuestion, attribution::ScorerError> {
        let (mut answers, mut questions) = (Vec::new(), Vec::new());
        for keep in subsets {
            let (q, a) = self
                .score(keep)
                .map_err(|e| attribution::ScorerError(format!("{e:#}")))?;
            questions.push(q);
            answers.push(a);
        }
        // The question reads the same after any set of sources, so its token count is the
        // same in every subset; if the template made it differ, score the answer alone.
        let n = questions.first().map_or(0, Vec::len);
        let same = n > 0 && questions.iter().all(|q| q.len() == n);
        Ok((answers, same.then_some(questions)))
    }
}

/// How far masked `loo` weights are from `loo-exact`'s (shares of the answer, 0-1).
#[derive(Default)]
struct Gap {
    examples: usize,
    /// Sum over examples of the mean absolute difference per source.
    mean: f64,
    max: f64,
    same_top1: usize,
}

/// The index of the highest weight (the first on ties), as the tallies rank.
fn top(w: &[u32]) -> usize {
    let mut best = 0;
    for (i, &x) in w.iter().enumerate() {
        if x > w[best] {
            best = i;
        }
    }
    best
}

/// Problems that make an example unusable (reported and skipped, not fatal).
fn check_example(ex: &Example) -> anyhow::Result<()> {
    if ex.question.trim().is_empty() {
        bail!("empty question");
    }
    if ex.passages.is_empty() {
        bail!("no passages");
    }
    if let Some(p) = ex.passages.iter().find(|p| p.text.trim().is_empty()) {
        bail!("passage {} has empty text", p.id);
    }
    Ok(())
}

/// Hybrid retrieval scores of the example's passages for its question, in passage order.
fn retrieval_scores(
    embedder: &std::sync::Arc<dyn tribute::index::Embedder>,
    ex: &Example,
) -> anyhow::Result<Vec<f64>> {
    let tmp = tempfile::tempdir()?;
    let mut index = Index::open(tmp.path(), Some(embedder.clone()), IndexConfig::default())?;
    let docs: Vec<Document> = ex
        .passages
        .iter()
        .enumerate()
        .map(|(i, p)| Document::new(i.to_string(), p.text.clone()).with_title(p.title.clone()))
        .collect();
    index.add_documents(docs, None)?;
    let hits = index
        .search(ex.question.as_str())
        .k(ex.passages.len())
        .mode(Mode::Hybrid)
        .per_document(true)
        .execute()?;
    let mut scores = vec![0.0; ex.passages.len()];
    for h in hits {
        if let Ok(i) = h.doc_id.to_string().parse::<usize>()
            && i < scores.len()
        {
            scores[i] = f64::from(h.score);
        }
    }
    Ok(scores)
}

/// Writes one JSONL line: the log-probability of each answer token under every subset of
/// the example's passages (bit `i` of `mask` = passage `i` kept).
fn dump_subsets(
    out: &mut impl std::io::Write,
    ex: &Example,
    sources: &[Source],
    scorer: &dyn attribution::ContextScorer,
    generator: &Generator,
    prompt: &RagPrompt,
) -> anyhow::Result<()> {
    let k = sources.len();
    if k > 8 {
        bail!(
            "--dump-subsets takes at most 8 passages per example ({} has {k})",
            ex.id
        );
    }
    let subsets: Vec<Vec<bool>> = (0..1u32 << k)
        .map(|m| (0..k).map(|i| m & (1 << i) != 0).collect())
        .collect();
    let lp = scorer
        .token_log_probs(&subsets)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The question's own tokens (they follow the sources) under the same subsets: how much
    // each source helps the model read the question.
    let question_lp = question_log_probs(ex, &subsets, generator, prompt)?;
    let line = serde_json::json!({
        "question_log_probs": question_lp,
        "id": ex.id,
        "supporting": ex.passages.iter().map(|p| p.supporting).collect::<Vec<_>>(),
        "retrieval": sources.iter().map(|s| s.retrieval_score).collect::<Vec<_>>(),
        "log_probs": lp,
    });
    writeln!(out, "{line}")?;
    Ok(())
}

/// Log-probabilities of the question's tokens, after the sources, under each subset.
fn question_log_probs(
    ex: &Example,
    subsets: &[Vec<bool>],
    generator: &Generator,
    prompt: &RagPrompt,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let q = ex.question.trim();
    let at = prompt
        .text
        .rfind(q)
        .with_context(|| format!("{}: question not found in the prompt", ex.id))?;
    let (_, offsets) = generator
        .tokenizer()
        .encode_with_offsets(&prompt.text, false)?;
    let first = offsets
        .iter()
        .position(|o| o.start >= at)
        .context("question tokens")?;
    let last = offsets
        .iter()
        .rposition(|o| o.end <= at + q.len() && o.end > o.start)
        .context("question tokens")?;
    let (before, question) = (&prompt.tokens[..first], &prompt.tokens[first..=last]);
    let masks: Vec<Vec<bool>> = subsets
        .iter()
        .map(|keep| {
            let mut m = vec![true; before.len()];
            for (i, r) in prompt.source_tokens.iter().enumerate() {
                if !keep[i] {
                    m[r.clone()].iter_mut().for_each(|x| *x = false);
                }
            }
            m
        })
        .collect();
    Ok(generator.score_masked(before, question, &masks, &[])?)
}

/// Runs `tribute eval attribution`.
pub fn run(a: AttributionArgs) -> anyhow::Result<()> {
    let methods = EvalMethod::parse_list(&a.method)?;
    let mut examples: Vec<Example> = crate::eval::read_examples(&a.data, |ex: &Example| {
        if ex.passages.is_empty() {
            bail!("example {} has no passages", ex.id);
        }
        Ok(())
    })?;
    if let Some(n) = a.limit {
        examples.truncate(n);
    }
    if examples.is_empty() {
        bail!("{} holds no examples", a.data.display());
    }
    let dir = a
        .model
        .clone()
        .unwrap_or_else(tribute::inference::default_model_dir);
    let generator = Generator::load(&dir).with_context(|| format!("loading {}", dir.display()))?;
    let embedder = crate::load_embedder(a.embedder.as_ref())?;
    let sim = EmbedderScorer(embedder.clone());
    let config = AttributionConfig {
        ablation_samples: a.samples,
        shapley_passes: a.shapley_passes,
        question_weight: a.question_weight,
        ..Default::default()
    };
    let mut dump = match &a.dump_subsets {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("{}", p.display()))?,
        )),
        None => None,
    };
    let mut tallies: Vec<Tally> = methods.iter().map(|_| Tally::default()).collect();
    let mut gap = Gap::default();
    let (mut gen_seconds, mut generated) = (0.0, 0);
    let mut skipped = 0usize;
    for (n, ex) in examples.iter().enumerate() {
        if let Err(e) = check_example(ex) {
            eprintln!("{}: skipped: {e}", ex.id);
            skipped += 1;
            continue;
        }
        // Retrieval scores: the hybrid retriever over this example's passages (ids by
        // position, so repeated passage ids in the data do not matter).
        let scores = match retrieval_scores(&embedder, ex) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: retrieval scores unavailable ({e:#}); using 0", ex.id);
                vec![0.0; ex.passages.len()]
            }
        };
        let sources: Vec<Source> = ex
            .passages
            .iter()
            .zip(&scores)
            .map(|(p, &s)| Source::new(p.id.clone(), p.text.clone()).with_retrieval_score(s))
            .collect();
        let shown: Vec<PromptSource> = ex
            .passages
            .iter()
            .map(|p| PromptSource {
                title: p.title.clone(),
                text: p.text.clone(),
            })
            .collect();
        let prompt = match RagPrompt::build(&generator, DEFAULT_SYSTEM_PROMPT, &ex.question, &shown)
        {
            Ok(p) if p.tokens.len() + a.max_tokens < generator.config().context_length => p,
            Ok(p) => {
                eprintln!(
                    "{}: skipped: the prompt has {} tokens, too long for the model's context",
                    ex.id,
                    p.tokens.len()
                );
                skipped += 1;
                continue;
            }
            Err(e) => {
                eprintln!("{}: skipped: {e}", ex.id);
                skipped += 1;
                continue;
            }
        };
        let (answer, scorer, answer_tokens) = match &ex.answer {
            Some(ans) if !ans.trim().is_empty() => (
                ans.clone(),
                ModelScorer::new(&generator, &prompt, ans, Vec::new())?,
                generator.tokenizer().encode_with_offsets(ans, false)?.0,
            ),
            _ => {
                let t = Instant::now();
                let g = generator.generate(
                    &GenerateRequest::new(Prompt::Tokens(prompt.tokens.clone()))
                        .max_tokens(a.max_tokens),
                )?;
                gen_seconds += t.elapsed().as_secs_f64();
                generated += 1;
                let mut toks = g.tokens.clone();
                toks.retain(|t| !generator.config().eos_token_ids.contains(t));
                (
                    g.text.clone(),
                    ModelScorer::from_tokens(&generator, &prompt, toks.clone(), Vec::new())?,
                    toks,
                )
            }
        };
        if answer.trim().is_empty() {
            eprintln!("{}: empty answer, skipped", ex.id);
            continue;
        }
        if let Some(out) = dump.as_mut() {
            dump_subsets(out, ex, &sources, &scorer, &generator, &prompt)?;
        }
        // Cheap to make: it scores nothing until `loo-exact` runs.
        let exact = ExactScorer::new(&generator, &ex.question, &shown, &scorer, answer_tokens);
        let (mut loo_weights, mut exact_weights) = (None, None);
        for (m, tally) in methods.iter().zip(tallies.iter_mut()) {
            let r = match m {
                EvalMethod::Masked(m) => attribution::attribute(
                    *m,
                    &answer,
                    &sources,
                    Some(&scorer),
                    Some(&sim),
                    &config,
                ),
                EvalMethod::LooExact => attribution::attribute(
                    Method::Loo,
                    &answer,
                    &sources,
                    Some(&exact),
                    None,
                    &config,
                ),
            }
            .with_context(|| format!("{} with {}", ex.id, m.name()))?;
            match m {
                EvalMethod::Masked(Method::Loo) => loo_weights = Some(r.weights_bps.clone()),
                EvalMethod::LooExact => exact_weights = Some(r.weights_bps.clone()),
                EvalMethod::Masked(_) => {}
            }
            let supporting: Vec<bool> = ex.passages.iter().map(|p| p.supporting).collect();
            let n_sup = supporting.iter().filter(|s| **s).count();
            let mut order: Vec<usize> = (0..sources.len()).collect();
            order.sort_by(|&x, &y| r.weights_bps[y].cmp(&r.weights_bps[x]).then(x.cmp(&y)));
            tally.examples += 1;
            tally.top1 += f64::from(u8::from(supporting[order[0]]));
            tally.mass += supporting
                .iter()
                .zip(&r.weights_bps)
                .filter(|(s, _)| **s)
                .map(|(_, w)| f64::from(*w))
                .sum::<f64>()
                / 10_000.0;
            if n_sup > 0 {
                tally.recall2 +=
                    order.iter().take(2).filter(|&&i| supporting[i]).count() as f64 / n_sup as f64;
            }
            tally.seconds += r.seconds;
            tally.fallbacks += usize::from(r.fallback.is_some());
        }
        if let (Some(l), Some(x)) = (&loo_weights, &exact_weights) {
            let diffs: Vec<f64> = l
                .iter()
                .zip(x)
                .map(|(a, b)| f64::from(a.abs_diff(*b)) / 10_000.0)
                .collect();
            gap.examples += 1;
            gap.mean += diffs.iter().sum::<f64>() / diffs.len().max(1) as f64;
            gap.max = diffs.iter().copied().fold(gap.max, f64::max);
            gap.same_top1 += usize::from(top(l) == top(x));
        }
        if !a.json {
            eprintln!("[{}/{}] {}", n + 1, examples.len(), ex.id);
        }
    }
    if let Some(mut d) = dump {
        std::io::Write::flush(&mut d)?;
    }
    if tallies.iter().all(|t| t.examples == 0) {
        bail!(
            "none of the {} examples could be evaluated ({skipped} skipped; see the messages above)",
            examples.len()
        );
    }
    let rows: Vec<serde_json::Value> = methods
        .iter()
        .zip(&tallies)
        .map(|(m, t)| {
            let n = t.examples.max(1) as f64;
            serde_json::json!({
                "method": m.name(),
                "examples": t.examples,
                "top1_accuracy": t.top1 / n,
                "supporting_mass": t.mass / n,
                "recall@2": t.recall2 / n,
                "mean_seconds": t.seconds / n,
                "fallbacks": t.fallbacks,
                "skipped": skipped,
            })
        })
        .collect();
    let gap_json = (gap.examples > 0).then(|| {
        let n = gap.examples as f64;
        serde_json::json!({
            "comparison": "loo (masked) vs loo-exact",
            "examples": gap.examples,
            "mean_abs_weight_diff": gap.mean / n,
            "max_abs_weight_diff": gap.max,
            "same_top1": gap.same_top1 as f64 / n,
        })
    });
    if a.json {
        let mut rows = rows;
        rows.extend(gap_json);
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!("| method | examples | top-1 accuracy | supporting mass | recall@2 | mean seconds |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r["method"].as_str().unwrap_or_default(),
            r["examples"],
            r["top1_accuracy"].as_f64().unwrap_or(0.0),
            r["supporting_mass"].as_f64().unwrap_or(0.0),
            r["recall@2"].as_f64().unwrap_or(0.0),
            r["mean_seconds"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(g) = gap_json {
        println!(
            "\nloo (masked) vs loo-exact on {} examples: mean |weight difference| per source \
             {:.4}, largest {:.4}, same top source {:.3}",
            g["examples"],
            g["mean_abs_weight_diff"].as_f64().unwrap_or(0.0),
            g["max_abs_weight_diff"].as_f64().unwrap_or(0.0),
            g["same_top1"].as_f64().unwrap_or(0.0)
        );
    }
    if skipped > 0 {
        println!("\n{skipped} examples skipped (see the messages above)");
    }
    if generated > 0 {
        println!(
            "\n{generated} answers generated, {:.2} s each on average",
            gen_seconds / generated as f64
        );
    }
    Ok(())
}
