//! `tribute`: the command-line front end of the Tribute SDK.

mod adapters;
mod ask;
#[cfg(feature = "onchain")]
mod chain;
mod chat;
mod delete;
mod engine_args;
mod eval;
mod eval_adapter;
mod eval_attribution;
mod eval_citations;
mod eval_guard;
mod eval_qa;
#[cfg(feature = "finetune")]
mod finetune;
mod generate;
mod ingest;
mod keys;
mod logging;
mod mcp;
mod models;
mod receipts;
mod search;
mod serve;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tribute::index::embedder::{Embedder, EmbedderOptions, OnnxEmbedder, default_model_dir};

/// Tribute: answers from your own knowledge, with attribution.
#[derive(Parser)]
#[command(name = "tribute", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest documents (.jsonl, .txt, .md files or directories) into a knowledge base.
    Ingest(ingest::IngestArgs),
    /// Make a knowledge base match a folder (added, changed and removed files), once or with --watch.
    Sync(sync::SyncArgs),
    /// Search a knowledge base.
    Search(search::SearchArgs),
    /// Delete documents (and their chunks) by id.
    Delete(delete::DeleteArgs),
    /// Answer a question from a knowledge base, with weighted citations and a signed receipt.
    Ask(ask::AskArgs),
    /// Chat with a knowledge base: follow-up questions, streamed answers, citations numbered
    /// across the conversation, a receipt per turn (questions from stdin, one per line).
    Chat(chat::ChatArgs),
    /// Generate text with the local LM (and LoRA adapters).
    Generate(generate::GenerateArgs),
    /// Evaluate retrieval, attribution, answers, citations, adapters and the source guard.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Deploy and use the TributeLedger: register models and adapters, deposit, balances, withdraw.
    #[cfg(feature = "onchain")]
    #[command(subcommand)]
    Chain(chain::ChainCommand),
    /// Signed usage receipts: list, export, verify, settle on chain, benchmark.
    #[command(subcommand)]
    Receipts(receipts::ReceiptsCommand),
    /// Models from the Hugging Face hub: pull (download, verify, export once).
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Fine-tune a LoRA adapter on a JSONL file or a datanet, with a signed provenance manifest.
    #[cfg(feature = "finetune")]
    Finetune(finetune::FinetuneArgs),
    /// Fine-tuned adapters: verify their provenance manifests.
    #[command(subcommand)]
    Adapters(adapters::AdaptersCommand),
    /// Serve the engine to agents over the Model Context Protocol (stdio).
    Mcp(mcp::McpArgs),
    /// Serve the engine over HTTP: an OpenAI-compatible API with citations and receipts.
    Serve(serve::ServeArgs),
}

/// Loads the embedder from `dir`, or the default model.
pub(crate) fn load_embedder(dir: Option<&PathBuf>) -> anyhow::Result<Arc<dyn Embedder>> {
    let dir = dir.cloned().unwrap_or_else(default_model_dir);
    Ok(Arc::new(OnnxEmbedder::from_dir(
        &dir,
        EmbedderOptions::default(),
    )?))
}

/// Output piped into a reader that stops early (`tribute receipts list | head`) ends the
/// command quietly, as with other Unix tools, instead of a panic in `println!`. The
/// servers keep Rust's default (the signal ignored, a closed connection an error to handle).
fn quiet_on_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: sets the default disposition of one signal, before any thread is started; no
    // handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let otlp = match &cli.command {
        Command::Serve(a) => a
            .otlp
            .as_deref()
            .map(|url| Some(url).filter(|u| !u.is_empty())),
        _ => None,
    };
    let logs = match logging::init(otlp) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if !matches!(cli.command, Command::Mcp(_) | Command::Serve(_)) {
        quiet_on_broken_pipe();
    }
    let result = match cli.command {
        Command::Ingest(a) => ingest::run(a),
        Command::Sync(a) => sync::run(a),
        Command::Search(a) => search::run(a),
        Command::Delete(a) => delete::run(a),
        Command::Eval(c) => eval::run(c),
        Command::Generate(a) => generate::run(a),
        Command::Ask(a) => ask::run(a),
        Command::Chat(a) => chat::run(a),
        #[cfg(feature = "onchain")]
        Command::Chain(c) => chain::run(c),
        Command::Receipts(c) => receipts::run(c),
        Command::Models(c) => models::run(c),
        #[cfg(feature = "finetune")]
        Command::Finetune(a) => finetune::run(a),
        Command::Adapters(c) => adapters::run(c),
        Command::Mcp(a) => mcp::run(a),
        Command::Serve(a) => serve::run(a),
    };
    let result = result.and_then(|()| logs.finish());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
