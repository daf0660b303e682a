//! `tribute chat`: a conversation with a knowledge base. Reads questions from stdin, one
//! per line (typed or piped), streams each answer, then prints its citations (numbered
//! across the conversation) and receipt. `/reset` starts a new conversation, `/exit` ends.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use clap::Args;
use tribute::{Answer, AskEvent, QueryRewrite, Session};

use crate::engine_args::{AnswerArgs, EngineArgs};

const HELP: &str = "Type a question and press Enter. /reset starts a new conversation, \
/exit (or end of input) ends, /help shows this.";

/// Arguments of `tribute chat`.
#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// How follow-up questions are rewritten for retrieval: model (falls back to
    /// content-words without a model or a usable rewrite), content-words or off.
    #[arg(long, default_value = "model")]
    rewrite: String,
    #[command(flatten)]
    answer: AnswerArgs,
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
    let rewrite: QueryRewrite = a
        .rewrite
        .parse()
        .with_context(|| format!("--rewrite {}", a.rewrite))?;
    let engine = a.engine.build(a.engine.config()?)?;
    Ok(engine.chat().options(a.answer.options()?).rewrite(rewrite))
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
