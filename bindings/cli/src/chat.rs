//! `tribute chat`: a conversation with a knowledge base. Reads questions from stdin, one
//! per line (typed or piped), streams each answer, then prints its citations (numbered
//! across the conversation) and receipt. `/reset` starts a new conversation, `/exit` ends.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use tribute::attribution::Method;
use tribute::index::Mode;
use tribute::{Answer, AskEvent, AskOptions, Engine, EngineConfig, QueryRewrite, Session};

use crate::keys::{KeyArgs, read_ledger_file};

const HELP: &str = "Type a question and press Enter. /reset starts a new conversation, \
/exit (or end of input) ends, /help shows this.";

/// Arguments of `tribute chat`.
#[derive(Args)]
pub struct ChatArgs {
    /// Engine config file (TOML); the options below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Knowledge base directory.
    #[arg(long)]
    kb: Option<PathBuf>,
    /// Model directory (default: $TRIBUTE_HOME/models/SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Embedding model directory (default: the bundled MiniLM).
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// How follow-up questions are rewritten for retrieval: model (falls back to
    /// content-words without a model or a usable rewrite), content-words or off.
    #[arg(long, default_value = "model")]
    rewrite: String,
    /// Attribution method: loo, ablation, similarity or retrieval.
    #[arg(long)]
    method: Option<String>,
    /// Sources to retrieve per turn.
    #[arg(long)]
    top_k: Option<usize>,
    /// Retrieval mode: hybrid, bm25 or dense.
    #[arg(long)]
    mode: Option<String>,
    /// Only these datanets (repeatable).
    #[arg(long = "datanet")]
    datanets: Vec<String>,
    /// Most answer tokens per turn.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    temperature: Option<f32>,
    /// Sampler seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Ledger file (`tribute chain deploy --out`) whose domain receipts are signed for.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Receipt journal directory (each turn's receipt is journaled before it prints).
    #[arg(long)]
    journal: Option<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
    /// Print each turn's answer as one line of JSON (no streaming).
    #[arg(long)]
    json: bool,
}

/// Runs `tribute chat`.
pub fn run(a: ChatArgs) -> anyhow::Result<()> {
    let session = open_session(&a)?;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive && !a.json {
        eprintln!("{HELP}");
    }
    let mut failed = 0usize;
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let question = line.trim();
        match question {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                session.reset();
                if !a.json {
                    println!("(new conversation)\n");
                }
                continue;
            }
            "/help" => {
                eprintln!("{HELP}");
                continue;
            }
            _ if question.starts_with('/') => {
                eprintln!("unknown command {question} ({HELP})");
                continue;
            }
            _ => {}
        }
        if let Err(e) = turn(&session, question, a.json) {
            eprintln!("error: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} turn(s) failed");
    }
    Ok(())
}

/// The engine from the config file and flags, and a session with the turn options.
fn open_session(a: &ChatArgs) -> anyhow::Result<Session> {
    let mut config = match &a.config {
        Some(path) => EngineConfig::from_toml_file(path)?,
        None => EngineConfig::default(),
    };
    if let Some(kb) = &a.kb {
        config.index = kb.clone();
    } else if a.config.is_none() {
        bail!("give the knowledge base with --kb DIR (or a --config file)");
    }
    if let Some(m) = &a.model {
        config.model = Some(m.clone());
    }
    if let Some(e) = &a.embedder {
        config.embedder = Some(e.clone());
    }
    if let Some(l) = &a.ledger {
        config.receipts.ledger = Some(read_ledger_file(l)?);
    }
    if let Some(j) = &a.journal {
        config.receipts.journal = Some(j.clone());
    }
    let rewrite: QueryRewrite = a
        .rewrite
        .parse()
        .with_context(|| format!("--rewrite {}", a.rewrite))?;
    let options = AskOptions {
        top_k: a.top_k,
        mode: a.mode.as_deref().map(str::parse::<Mode>).transpose()?,
        datanets: (!a.datanets.is_empty()).then(|| a.datanets.clone()),
        method: a.method.as_deref().map(str::parse::<Method>).transpose()?,
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        seed: a.seed,
        ..AskOptions::default()
    };
    let mut builder = Engine::builder().config(config);
    if let Some(key) = a.key.load_optional()? {
        builder = builder.signer(key);
    }
    let engine = builder.build()?;
    Ok(engine.chat().options(options).rewrite(rewrite))
}

/// Asks one question of the conversation and prints the answer.
fn turn(session: &Session, question: &str, json: bool) -> anyhow::Result<()> {
    if json {
        let answer = session.ask(question)?;
        println!("{}", serde_json::to_string(&answer)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let mut done = None;
    for event in session.stream(question)? {
        match event? {
            AskEvent::Text(t) => {
                write!(out, "{t}")?;
                out.flush()?;
            }
            AskEvent::Done(answer) => done = Some(*answer),
        }
    }
    writeln!(out)?;
    let answer = done.context("the stream ended without an answer")?;
    print_citations(&mut out, &answer)?;
    Ok(())
}

/// The answer with its markers, the citations and the receipt, after the streamed text.
fn print_citations(out: &mut impl Write, answer: &Answer) -> std::io::Result<()> {
    if let Some(q) = &answer.retrieval_query {
        writeln!(out, "(searched for: {q})")?;
    }
    if !answer.citations.is_empty() {
        writeln!(out, "{}", answer.cited_text.trim())?;
        for c in &answer.citations {
            let snippet: String = c.snippet.chars().take(60).collect();
            let locator = c
                .locator
                .as_ref()
                .map_or(String::new(), |l| format!(" ({l})"));
            writeln!(
                out,
                "[{}] {:>6.2}%  {}  {}{locator}: {}…",
                c.marker,
                f64::from(c.weight_bps) / 100.0,
                c.contributor,
                c.title,
                snippet.trim_end()
            )?;
        }
    }
    match (&answer.receipt, &answer.no_receipt) {
        (Some(r), _) => writeln!(out, "receipt {}", r.receipt.receiptId)?,
        (None, Some(why)) => writeln!(out, "no receipt: {why}")?,
        (None, None) => writeln!(out, "no receipt")?,
    }
    writeln!(out)
}
