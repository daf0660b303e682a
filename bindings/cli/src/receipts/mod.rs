//! `tribute receipts`: list, export, verify and audit signed usage receipts, settle a
//! journal's pending receipts on the ledger, and benchmark signing, verification and
//! settlement gas.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tribute::attribution::journal::{self, JournalBackend, StateKind, Stats};
use tribute::attribution::receipt::{Ledger, SignedReceipt};

#[cfg(feature = "onchain")]
use crate::keys::{KeyArgs, LedgerArgs, RpcArgs};

/// `tribute receipts …`.
#[derive(Subcommand)]
pub enum ReceiptsCommand {
    /// List a journal's receipts and their settlement state.
    List(ListArgs),
    /// Print a journal's receipts as canonical JSON, one per line.
    Export(ExportArgs),
    /// Verify receipts (signature recovers the payer, fields valid) from a file or stdin.
    Verify(VerifyArgs),
    /// Recompute receipts' citation weights and reward split from their attribution
    /// records, against a knowledge base and model: match or mismatch, and what differed.
    Audit(audit::AuditArgs),
    /// Settle a journal's pending receipts on the ledger in Merkle batches.
    #[cfg(feature = "onchain")]
    Settle(SettleArgs),
    /// Measure signing and verification speed, and settlement gas per receipt for batches of
    /// 1, 10, 100 and 1000 on fresh ledgers, against a real node (needs a funded key).
    #[cfg(feature = "onchain")]
    Bench(BenchArgs),
}

/// A settlement state, as given on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum StateArg {
    /// Journaled, not yet in a batch.
    Pending,
    /// In a Merkle batch, not yet sent.
    Batched,
    /// Sent to the chain, not yet mined.
    Submitted,
    /// Settled on chain.
    Confirmed,
}

impl From<StateArg> for StateKind {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Pending => StateKind::Pending,
            StateArg::Batched => StateKind::Batched,
            StateArg::Submitted => StateKind::Submitted,
            StateArg::Confirmed => StateKind::Confirmed,
        }
    }
}

/// `tribute receipts list`.
#[derive(Args)]
pub struct ListArgs {
    /// The receipt journal's directory, or the `postgres://` URL of a shared journal.
    #[arg(long, value_name = "DIR|URL")]
    journal: PathBuf,
    /// Only receipts in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// JSON lines: one object per receipt, then {"stats":{…}}.
    #[arg(long)]
    json: bool,
}

/// `tribute receipts export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The receipt journal's directory, or the `postgres://` URL of a shared journal.
    #[arg(long, value_name = "DIR|URL")]
    journal: PathBuf,
    /// Only receipts in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
}

/// `tribute receipts verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// A file with one receipt (JSON) or JSON lines; `-` reads stdin.
    file: PathBuf,
    /// A ledger file written by `tribute chain deploy --out`.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["chain_id", "contract"],
        required_unless_present_all = ["chain_id", "contract"]
    )]
    ledger: Option<PathBuf>,
    /// The ledger's chain id (with --contract).
    #[arg(long, value_name = "N", requires = "contract")]
    chain_id: Option<u64>,
    /// The ledger contract's address (with --chain-id).
    #[arg(long, value_name = "ADDR", requires = "chain_id")]
    contract: Option<String>,
    /// One JSON object per receipt.
    #[arg(long)]
    json: bool,
}

/// Runs `tribute receipts …`.
pub fn run(c: ReceiptsCommand) -> anyhow::Result<()> {
    match c {
        ReceiptsCommand::List(a) => list(a),
        ReceiptsCommand::Export(a) => export(a),
        ReceiptsCommand::Verify(a) => verify(a),
        ReceiptsCommand::Audit(a) => audit::audit(a),
        #[cfg(feature = "onchain")]
        ReceiptsCommand::Settle(a) => crate::chain::block_on(settle(a))?,
        #[cfg(feature = "onchain")]
        ReceiptsCommand::Bench(a) => crate::chain::block_on(bench(a))?,
    }
}

/// Opens an existing journal directory (never creates one), or a shared journal at a
/// `postgres://` URL.
fn open_journal(dir: &Path) -> anyhow::Result<Box<dyn JournalBackend>> {
    if !journal::is_postgres_url(dir) && !dir.join(journal::LOG_FILE).is_file() {
        anyhow::bail!(
            "{} is not a receipt journal (no {})",
            dir.display(),
            journal::LOG_FILE
        );
    }
    let shown = journal::redact_url(&dir.to_string_lossy());
    journal::open(dir).with_context(|| format!("opening the journal {shown}"))
}

fn stats_json(s: &Stats) -> Value {
    json!({
        "receipts": s.receipts,
        "pending": s.pending,
        "batched": s.batched,
        "submitted": s.submitted,
        "confirmed": s.confirmed,
    })
}

fn stats_line(s: &Stats) -> String {
    format!(
        "{} receipts: {} pending, {} batched, {} submitted, {} confirmed",
        s.receipts, s.pending, s.batched, s.submitted, s.confirmed
    )
}

/// The first 10 characters of a 0x-hex hash, and an ellipsis.
fn short(h: impl std::fmt::Display) -> String {
    let s = h.to_string();
    match s.get(..10) {
        Some(p) if s.len() > 10 => format!("{p}…"),
        _ => s,
    }
}

fn list(a: ListArgs) -> anyhow::Result<()> {
    let journal = open_journal(&a.journal)?;
    let kind = a.state.map(StateKind::from);
    if a.json {
        for (r, state) in journal.list(kind)? {
            let mut v = serde_json::to_value(state)?;
            v["receiptId"] = json!(r.receipt.receiptId);
            v["fee"] = json!(r.receipt.fee.to_string());
            v["chunks"] = json!(r.receipt.chunks.len());
            v["payer"] = json!(r.receipt.payer);
            println!("{v}");
        }
        println!("{}", json!({"stats": stats_json(&journal.summary()?)}));
        return Ok(());
    }
    println!(
        "{:<12} {:<10} {:>22} {:>6}  PAYER",
        "RECEIPT", "STATE", "FEE (wei)", "CHUNKS"
    );
    for (r, state) in journal.list(kind)? {
        let state = state.kind().as_str();
        println!(
            "{:<12} {:<10} {:>22} {:>6}  {}",
            short(r.receipt.receiptId),
            state,
            r.receipt.fee,
            r.receipt.chunks.len(),
            r.receipt.payer
        );
    }
    println!("{}", stats_line(&journal.summary()?));
    Ok(())
}

fn export(a: ExportArgs) -> anyhow::Result<()> {
    let journal = open_journal(&a.journal)?;
    let kind = a.state.map(StateKind::from);
    let mut out = String::new();
    for (r, _) in journal.list(kind)? {
        out.push_str(&r.to_json());
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

/// One receipt read from a file: where it starts and what it parsed to.
struct Parsed {
    line: usize,
    receipt: Result<SignedReceipt, String>,
}

/// Reads receipts from `text`: one JSON value (an object, possibly pretty-printed, or an
/// array of them), or JSON lines (each non-empty line one receipt, errors per line).
fn parse_receipts(text: &str) -> Vec<Parsed> {
    let whole = serde_json::from_str::<Value>(text);
    let parse_value =
        |v: &Value| SignedReceipt::from_json(&v.to_string()).map_err(|e| e.to_string());
    match whole {
        Ok(Value::Array(items)) => {
            return items
                .iter()
                .map(|v| Parsed {
                    line: 1,
                    receipt: parse_value(v),
                })
                .collect();
        }
        Ok(v) => {
            let line = text
                .lines()
                .position(|l| !l.trim().is_empty())
                .map_or(1, |i| i + 1);
            return vec![Parsed {
                line,
                receipt: parse_value(&v),
            }];
        }
        Err(e) => {
            // A pretty-printed document ("{" or "[" alone on its first line) is one value:
            // report where it breaks rather than an error on each of its lines.
            let first = text.lines().map(str::trim).find(|l| !l.is_empty());
            if matches!(first, Some("{" | "[")) {
                return vec![Parsed {
                    line: e.line().max(1),
                    receipt: Err(format!("malformed JSON: {e}")),
                }];
            }
        }
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Parsed {
            line: i + 1,
            receipt: SignedReceipt::from_json(l).map_err(|e| e.to_string()),
        })
        .collect()
}

fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let ledger = match (&a.ledger, a.chain_id, &a.contract) {
        (Some(path), _, _) => crate::keys::read_ledger_file(path)?,
        (None, Some(chain_id), Some(contract)) => Ledger {
            chain_id,
            contract: tribute::attribution::split::parse_address(contract.trim())
                .map_err(|e| anyhow::anyhow!("--contract: {e}"))?,
        },
        _ => anyhow::bail!("give the ledger with --ledger FILE or --chain-id N --contract ADDR"),
    };
    let (source, text) = if a.file.as_os_str() == "-" {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("reading receipts from stdin")?;
        ("<stdin>".to_owned(), t)
    } else {
        let t = std::fs::read_to_string(&a.file)
            .with_context(|| format!("reading {}", a.file.display()))?;
        (a.file.display().to_string(), t)
    };
    let parsed = parse_receipts(&text);
    if parsed.is_empty() {
        anyhow::bail!("{source}: no receipts");
    }
    let mut failed = 0;
    for p in &parsed {
        let outcome = p.receipt.as_ref().map_err(String::clone).and_then(|r| {
            r.verify(&ledger)
                .map(|_| r)
                .map_err(|e| format!("receipt {}: {e}", r.receipt.receiptId))
        });
        match outcome {
            Ok(r) => {
                if a.json {
                    let v = json!({
                        "line": p.line, "ok": true,
                        "receiptId": r.receipt.receiptId, "signer": r.receipt.payer,
                    });
                    println!("{v}");
                } else {
                    println!(
                        "{source}:{}: ok   receipt {} signed by {}",
                        p.line, r.receipt.receiptId, r.receipt.payer
                    );
                }
            }
            Err(e) => {
                failed += 1;
                if a.json {
                    println!("{}", json!({"line": p.line, "ok": false, "error": e}));
                } else {
                    println!("{source}:{}: FAIL {e}", p.line);
                }
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{source}: {failed} of {} receipts failed verification",
            parsed.len()
        );
    }
    if !a.json {
        println!("{source}: all {} receipts verify", parsed.len());
    }
    Ok(())
}

mod audit;

#[cfg(feature = "onchain")]
pub use onchain::{BenchArgs, SettleArgs};
#[cfg(feature = "onchain")]
use onchain::{bench, settle};

#[cfg(feature = "onchain")]
mod onchain;
