//! `tribute mcp --config FILE`: the engine as a Model Context Protocol server on stdio,
//! built with the official Rust SDK (`rmcp`).
//!
//! Three tools: `search` (attributed retrieval), `ask` (a cited, generated answer) and
//! `receipts` (the journaled usage receipts). Every tool call that uses sources signs and
//! journals a receipt when the config has a payer key and a ledger. Each tool declares an
//! output schema and returns its result as structured content and as JSON text
//! ([`output`]). Engine calls are CPU-bound and blocking, so each runs on tokio's blocking
//! pool; an engine error becomes a tool error (`isError: true`) carrying the engine's
//! message, and the server keeps serving. Stdout carries the protocol only; logs go to
//! stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tribute::Engine;
use tribute::attribution::Method;
use tribute::attribution::journal::StateKind;

mod output;

/// The most hits `search` returns and the most sources `ask` retrieves.
const MAX_K: usize = 50;

/// What the server tells the agent about itself at initialization.
const INSTRUCTIONS: &str = "Tribute answers from a local knowledge base of attributed \
documents: every chunk says who contributed it (an EVM address) and which datanet it \
belongs to, and every use of sources is credited — and paid — with a signed usage receipt.\n\
Tools:\n\
- search: retrieve the chunks most relevant to a query (text, title, contributor, datanet, \
score) with their citation weights, to read or quote them yourself. Cite the chunk_id or \
doc_id of what you use.\n\
- ask: have the local model answer a question from the knowledge base; returns the answer \
with inline [n] citation markers, the cited sources and their weights.\n\
- receipts: list the usage receipts journaled so far (pending until settled on chain) and \
their counts by state.\n\
Each search or ask that uses sources signs and journals a receipt crediting the \
contributors (when the server has a payer key and a ledger configured; otherwise the \
result's no_receipt field says why).";

/// `tribute mcp`: serve the engine over the Model Context Protocol on stdio.
#[derive(clap::Args, Debug)]
pub struct McpArgs {
    /// The engine's TOML config (knowledge base, models, receipts; see docs/GETTING_STARTED.md, "A config file").
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
}

/// Loads the engine, then serves MCP on stdin/stdout until the client closes stdin.
pub fn run(a: McpArgs) -> anyhow::Result<()> {
    let engine = Engine::from_config_file(&a.config)
        .with_context(|| format!("loading the engine from {}", a.config.display()))?;
    let size = engine.index_size()?;
    let (docs, chunks) = (size.documents, size.chunks);
    eprintln!(
        "tribute mcp: serving {} ({docs} documents, {chunks} chunks; receipts {}) on stdio",
        engine.config().index.display(),
        match engine.payer() {
            Some(payer) if engine.config().receipts.ledger.is_some() => {
                format!("signed by {payer}")
            }
            _ => "off: no payer key or ledger".to_owned(),
        }
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(serve(engine));
    // An ask still running for a client that went away must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(engine: Engine) -> anyhow::Result<()> {
    let service = TributeServer::new(engine)
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP initialization")?;
    let reason = service.waiting().await.context("the MCP service task")?;
    tracing::info!(?reason, "MCP session ended");
    Ok(())
}

/// The MCP server: the engine and its three tools.
#[derive(Clone)]
pub struct TributeServer {
    engine: Engine,
    tool_router: ToolRouter<Self>,
}

fn default_k() -> usize {
    5
}

fn default_limit() -> usize {
    20
}

/// Arguments of the `search` tool.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// What to look for, in natural language or keywords.
    pub query: String,
    /// How many chunks to return at most (1 to 50). Only relevant chunks are returned,
    /// so there may be fewer.
    #[serde(default = "default_k")]
    #[schemars(range(min = 1, max = 50))]
    pub k: usize,
    /// Only search these datanets (named document collections); omit to search all.
    pub datanets: Option<Vec<String>>,
}

/// An attribution method: how the answer's credit is split among its sources.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MethodParam {
    /// Leave-one-out: re-score the answer without each source (most faithful, slowest).
    Loo,
    /// Ablation of groups of sources.
    Ablation,
    /// Shapley values over subsets of the sources (credits sources needed together).
    Shapley,
    /// Embedding similarity of the answer's sentences to each source.
    Similarity,
    /// Retrieval scores only (no model passes).
    Retrieval,
}

impl From<MethodParam> for Method {
    fn from(m: MethodParam) -> Method {
        match m {
            MethodParam::Loo => Method::Loo,
            MethodParam::Ablation => Method::Ablation,
            MethodParam::Shapley => Method::Shapley,
            MethodParam::Similarity => Method::Similarity,
            MethodParam::Retrieval => Method::Retrieval,
        }
    }
}

/// Arguments of the `ask` tool.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AskParams {
    /// The question to answer from the knowledge base.
    pub question: String,
    /// How many chunks to retrieve as sources (1 to 50); omit for the server's default.
    #[schemars(range(min = 1, max = 50))]
    pub top_k: Option<usize>,
    /// Only use sources from these datanets; omit to use all.
    pub datanets: Option<Vec<String>>,
    /// LoRA adapters registered on the server to merge into the model, by id, with their
    /// merge weights (for example {"legal": 1.0}); omit for the base model.
    pub adapters: Option<BTreeMap<String, f32>>,
    /// How the answer's credit is split among its sources; omit for the server's default.
    pub method: Option<MethodParam>,
    /// The most answer tokens to generate; omit for the server's default.
    #[schemars(range(min = 1))]
    pub max_tokens: Option<usize>,
}

/// A receipt's settlement state.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateParam {
    /// Journaled, not yet in a settlement batch.
    Pending,
    /// In a Merkle batch, not yet sent to the chain.
    Batched,
    /// Sent to the chain, not yet mined.
    Submitted,
    /// Settled on chain.
    Confirmed,
}

impl From<StateParam> for StateKind {
    fn from(s: StateParam) -> StateKind {
        match s {
            StateParam::Pending => StateKind::Pending,
            StateParam::Batched => StateKind::Batched,
            StateParam::Submitted => StateKind::Submitted,
            StateParam::Confirmed => StateKind::Confirmed,
        }
    }
}

/// Arguments of the `receipts` tool.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsParams {
    /// Only receipts in this settlement state; omit for all.
    pub state: Option<StateParam>,
    /// How many receipts to list at most, the most recent ones.
    #[serde(default = "default_limit")]
    #[schemars(range(min = 1))]
    pub limit: usize,
}

#[tool_router]
impl TributeServer {
    /// A server for `engine`.
    pub fn new(engine: Engine) -> Self {
        TributeServer {
            engine,
            tool_router: Self::tool_router(),
        }
    }

    /// The `search` tool.
    #[tool(
        description = "Search the knowledge base and return the most relevant chunks, best \
first, as JSON: hits (chunk_id, doc_id, title, text, score, contributor, datanet, \
content_hash), citations (each hit's share of the credit in basis points) and the signed \
usage receipt that credits the contributors (or no_receipt saying why none was signed). \
Use it to read sources yourself; use `ask` for a generated, cited answer.",
        annotations(title = "Search the knowledge base", open_world_hint = false),
        output_schema = output::search_schema()
    )]
    async fn search(
        &self,
        Parameters(p): Parameters<SearchParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if !(1..=MAX_K).contains(&p.k) {
            return Ok(tool_error(format!(
                "k must be between 1 and {MAX_K}, got {}",
                p.k
            )));
        }
        let engine = self.engine.clone();
        let result = blocking(move || {
            let mut request = engine.retrieve(p.query).top_k(p.k);
            if let Some(d) = p.datanets {
                request = request.datanets(d);
            }
            request.run()
        })
        .await;
        Ok(match result {
            Ok(r) => output::structured(vec![], &r).unwrap_or_else(tool_error),
            Err(e) => tool_error(e),
        })
    }

    /// The `ask` tool.
    #[tool(
        description = "Answer a question from the knowledge base with the local model. \
Returns the answer with inline [n] markers after each supported sentence, then the full \
result as JSON: text, cited_text, citations (marker, weight_bps — the source's share of \
the credit, all summing to 10000 — chunk_id, doc_id, title, contributor, datanet, \
snippet), sentences, usage and timings, and the signed usage receipt (or no_receipt). \
When nothing in the knowledge base is relevant the answer says so and cites nothing.",
        annotations(title = "Ask a question", open_world_hint = false),
        output_schema = output::ask_schema()
    )]
    async fn ask(&self, Parameters(p): Parameters<AskParams>) -> Result<CallToolResult, ErrorData> {
        if let Some(k) = p.top_k
            && !(1..=MAX_K).contains(&k)
        {
            return Ok(tool_error(format!(
                "top_k must be between 1 and {MAX_K}, got {k}"
            )));
        }
        if p.max_tokens == Some(0) {
            return Ok(tool_error("max_tokens must be at least 1"));
        }
        let engine = self.engine.clone();
        let result = blocking(move || {
            let mut req = engine.ask(p.question);
            if let Some(k) = p.top_k {
                req = req.top_k(k);
            }
            if let Some(d) = p.datanets {
                req = req.datanets(d);
            }
            if let Some(a) = p.adapters {
                req = req.adapters(a);
            }
            if let Some(m) = p.method {
                req = req.method(m.into());
            }
            if let Some(n) = p.max_tokens {
                req = req.max_tokens(n);
            }
            req.run()
        })
        .await;
        let answer = match result {
            Ok(a) => a,
            Err(e) => return Ok(tool_error(e)),
        };
        let mut summary = answer.cited_text.trim().to_owned();
        if !answer.citations.is_empty() {
            summary.push_str("\n\nSources:");
            for c in &answer.citations {
                summary.push_str(&format!(
                    "\n[{}] {} ({}), {:.1}% — contributor {}, datanet {}",
                    c.marker,
                    if c.title.is_empty() {
                        &c.doc_id
                    } else {
                        &c.title
                    },
                    c.chunk_id,
                    f64::from(c.weight_bps) / 100.0,
                    c.contributor,
                    c.datanet,
                ));
            }
        }
        Ok(
            output::structured(vec![ContentBlock::text(summary)], &answer)
                .unwrap_or_else(tool_error),
        )
    }

    /// The `receipts` tool.
    #[tool(
        description = "List the signed usage receipts this server has journaled (each search \
or ask that used sources), most recent last, as JSON: receipts (each the canonical receipt \
object — receiptId, payer, servingNode, modelId, fee, contributors and their shares, \
signature — with its settlement state) and stats (counts by state: pending, batched, \
submitted, confirmed).",
        annotations(
            title = "List usage receipts",
            read_only_hint = true,
            open_world_hint = false
        ),
        output_schema = output::receipts_schema()
    )]
    async fn receipts(
        &self,
        Parameters(p): Parameters<ReceiptsParams>,
    ) -> Result<CallToolResult, ErrorData> {
        if p.limit == 0 {
            return Ok(tool_error("limit must be at least 1"));
        }
        let engine = self.engine.clone();
        let state = p.state.map(StateKind::from);
        let result = blocking(move || {
            let all = engine.receipts(state)?;
            let stats = engine.receipt_stats()?;
            Ok((all, stats, engine.config().receipts.journal.is_some()))
        })
        .await;
        let (all, stats, journaled) = match result {
            Ok(r) => r,
            Err(e) => return Ok(tool_error(e)),
        };
        let total = all.len();
        let mut receipts = Vec::with_capacity(total.min(p.limit));
        for j in all.iter().skip(total.saturating_sub(p.limit)) {
            let receipt: Value = match serde_json::from_str(&j.receipt.to_json()) {
                Ok(v) => v,
                Err(e) => return Ok(tool_error(format!("receipt JSON: {e}"))),
            };
            let state = match serde_json::to_value(j.state) {
                Ok(v) => v,
                Err(e) => return Ok(tool_error(format!("receipt state JSON: {e}"))),
            };
            receipts.push(json!({ "receipt": receipt, "state": state }));
        }
        let mut out = json!({
            "receipts": receipts,
            "matching": total,
            "stats": {
                "receipts": stats.receipts,
                "pending": stats.pending,
                "batched": stats.batched,
                "submitted": stats.submitted,
                "confirmed": stats.confirmed,
            },
        });
        if !journaled {
            out["note"] =
                json!("no receipt journal is configured (receipts.journal), so nothing is listed");
        }
        Ok(output::structured(vec![], &out).unwrap_or_else(tool_error))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TributeServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("tribute", env!("CARGO_PKG_VERSION"))
                    .with_title("Tribute: answers with attribution"),
            )
            .with_instructions(INSTRUCTIONS)
    }
}

/// Runs a blocking engine call on tokio's blocking pool; an engine error (or a panic in
/// the call) becomes its message.
async fn blocking<T, F>(f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> tribute::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(tribute::common::error_chain(&e)),
        Err(e) => Err(format!("the engine call failed: {e}")),
    }
}

/// A tool-level error the agent sees (`isError: true`).
fn tool_error(msg: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(msg)])
}
