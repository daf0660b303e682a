//! `tribute receipts`: list, export and verify signed usage receipts, settle a journal's
//! pending receipts on the ledger, and benchmark signing, verification and settlement gas.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tribute::attribution::journal::{self, Journal, StateKind, Stats};
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
    /// The receipt journal's directory.
    #[arg(long, value_name = "DIR")]
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
    /// The receipt journal's directory.
    #[arg(long, value_name = "DIR")]
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
        #[cfg(feature = "onchain")]
        ReceiptsCommand::Settle(a) => crate::chain::block_on(settle(a))?,
        #[cfg(feature = "onchain")]
        ReceiptsCommand::Bench(a) => crate::chain::block_on(bench(a))?,
    }
}

/// Opens an existing journal (never creates one).
fn open_journal(dir: &Path) -> anyhow::Result<Journal> {
    if !dir.join(journal::LOG_FILE).is_file() {
        anyhow::bail!(
            "{} is not a receipt journal (no {})",
            dir.display(),
            journal::LOG_FILE
        );
    }
    Journal::open(dir).with_context(|| format!("opening the journal {}", dir.display()))
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
        for (r, state) in journal.receipts(kind) {
            let mut v = serde_json::to_value(state)?;
            v["receiptId"] = json!(r.receipt.receiptId);
            v["fee"] = json!(r.receipt.fee.to_string());
            v["chunks"] = json!(r.receipt.chunks.len());
            v["payer"] = json!(r.receipt.payer);
            println!("{v}");
        }
        println!("{}", json!({"stats": stats_json(&journal.stats())}));
        return Ok(());
    }
    println!(
        "{:<12} {:<10} {:>22} {:>6}  PAYER",
        "RECEIPT", "STATE", "FEE (wei)", "CHUNKS"
    );
    for (r, state) in journal.receipts(kind) {
        let state = match state.kind() {
            StateKind::Pending => "pending",
            StateKind::Batched => "batched",
            StateKind::Submitted => "submitted",
            StateKind::Confirmed => "confirmed",
        };
        println!(
            "{:<12} {:<10} {:>22} {:>6}  {}",
            short(r.receipt.receiptId),
            state,
            r.receipt.fee,
            r.receipt.chunks.len(),
            r.receipt.payer
        );
    }
    println!("{}", stats_line(&journal.stats()));
    Ok(())
}

fn export(a: ExportArgs) -> anyhow::Result<()> {
    let journal = open_journal(&a.journal)?;
    let kind = a.state.map(StateKind::from);
    let mut out = String::new();
    for (r, _) in journal.receipts(kind) {
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

#[cfg(feature = "onchain")]
pub use onchain::{BenchArgs, SettleArgs};
#[cfg(feature = "onchain")]
use onchain::{bench, settle};

#[cfg(feature = "onchain")]
mod onchain {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use alloy_primitives::{Address, U256, keccak256};
    use anyhow::Context;
    use clap::Args;
    use serde_json::{Value, json};
    use tribute::attribution::chain::{self, LedgerClient};
    use tribute::attribution::journal::Journal;
    use tribute::attribution::receipt::{
        AdapterUse, CitedChunk, Ledger, PayerKey, RECEIPT_VERSION, SignedReceipt, UsageReceipt,
        named_id,
    };
    use tribute::attribution::settle::{SettleOptions, SettleReport, settle_journal};
    use tribute::attribution::split::RewardConfig;

    use super::{KeyArgs, LedgerArgs, RpcArgs, open_journal, stats_json, stats_line};
    use crate::chain::parse_addr;

    /// `tribute receipts settle`.
    #[derive(Args)]
    pub struct SettleArgs {
        /// The receipt journal's directory.
        #[arg(long, value_name = "DIR")]
        journal: PathBuf,
        /// The ledger.
        #[command(flatten)]
        ledger: LedgerArgs,
        /// The payer's key: it signs the batches and its account sends them.
        #[command(flatten)]
        key: KeyArgs,
        /// Receipts per Merkle batch.
        #[arg(long, value_name = "N", default_value_t = 100)]
        batch: usize,
        /// Settle at most this many new batches.
        #[arg(long, value_name = "N")]
        max_batches: Option<usize>,
        /// Paid the treasury share and the rounding dust (default: the key's address).
        #[arg(long, value_name = "ADDR")]
        treasury: Option<String>,
        /// Paid the share of model or adapter ids with no owner on the ledger (default:
        /// such receipts are an error).
        #[arg(long, value_name = "ADDR")]
        fallback_owner: Option<String>,
        /// The split policy and governance (a JSON RewardConfig; default 70/10/15/5 %).
        #[arg(long, value_name = "FILE")]
        rewards: Option<PathBuf>,
        /// Timeout of each request and each wait for a transaction, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    }

    fn read_rewards(path: &std::path::Path) -> anyhow::Result<RewardConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the reward config {}", path.display()))?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
        {
            anyhow::bail!(
                "{}: TOML reward configs are not supported yet; write the same as JSON",
                path.display()
            );
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON reward config", path.display()))
    }

    fn report_json(report: &SettleReport) -> Value {
        let batches: Vec<Value> = report
            .batches
            .iter()
            .map(|b| {
                let s = &b.settlement;
                json!({
                    "root": s.root,
                    "receipts": b.receipts,
                    "tx": s.tx_hash,
                    "block": s.block_number,
                    "gas_used": s.gas_used,
                    "payees": s.payee_count,
                    "total": s.total.to_string(),
                    "batch_nonce": s.batch_nonce,
                    "already_settled": s.already_settled,
                    "resumed": b.resumed,
                })
            })
            .collect();
        let skipped: Vec<Value> = report
            .skipped
            .iter()
            .map(|(id, why)| json!({"receiptId": id, "reason": why}))
            .collect();
        json!({
            "batches": batches,
            "skipped": skipped,
            "other_payers": report.other_payers,
            "still_pending": report.still_pending,
            "confirmed_receipts": report.confirmed_receipts(),
            "gas_used": report.gas_used(),
        })
    }

    fn print_report(report: &SettleReport) {
        for (i, b) in report.batches.iter().enumerate() {
            let s = &b.settlement;
            let mut notes = Vec::new();
            if s.already_settled {
                notes.push("already settled");
            }
            if b.resumed {
                notes.push("resumed");
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join(", "))
            };
            println!(
                "batch {}: {} receipts, {} payees, {} ether, gas {} ({} per receipt){notes}",
                i + 1,
                b.receipts,
                s.payee_count,
                crate::chain::format_ether(s.total),
                s.gas_used,
                s.gas_used / b.receipts.max(1) as u64,
            );
            let block = s.block_number.map_or("?".into(), |n| n.to_string());
            println!("  root {}\n  tx   {} (block {block})", s.root, s.tx_hash);
        }
        for (id, why) in &report.skipped {
            println!("skipped receipt {id}: {why}");
        }
        if report.other_payers > 0 {
            println!(
                "{} pending receipts of other payers left alone",
                report.other_payers
            );
        }
        if report.still_pending > 0 {
            println!(
                "{} pending receipts wait for a later run (--max-batches)",
                report.still_pending
            );
        }
        println!(
            "settled {} receipts in {} batches, {} gas",
            report.confirmed_receipts(),
            report.batches.len(),
            report.gas_used()
        );
    }

    /// Runs `tribute receipts settle`.
    pub async fn settle(a: SettleArgs) -> anyhow::Result<()> {
        let mut journal = open_journal(&a.journal)?;
        let result = settle_inner(&a, &mut journal).await;
        let stats = journal.stats();
        match result {
            Ok(report) => {
                if a.json {
                    let mut v = report_json(&report);
                    v["stats"] = stats_json(&stats);
                    println!("{v}");
                } else {
                    print_report(&report);
                    println!("journal: {}", stats_line(&stats));
                }
                Ok(())
            }
            Err(e) => {
                if a.json {
                    println!(
                        "{}",
                        json!({"error": format!("{e:#}"), "stats": stats_json(&stats)})
                    );
                } else {
                    eprintln!("journal: {}", stats_line(&stats));
                }
                Err(e)
            }
        }
    }

    async fn settle_inner(a: &SettleArgs, journal: &mut Journal) -> anyhow::Result<SettleReport> {
        if a.batch == 0 {
            anyhow::bail!("--batch must be at least 1");
        }
        let key = a.key.load()?;
        let treasury = match &a.treasury {
            Some(t) => parse_addr("--treasury", t)?,
            None => key.address(),
        };
        let mut options = SettleOptions::new(treasury);
        options.batch_size = a.batch;
        options.max_batches = a.max_batches;
        options.fallback_owner = a
            .fallback_owner
            .as_deref()
            .map(|t| parse_addr("--fallback-owner", t))
            .transpose()?;
        if let Some(path) = &a.rewards {
            options.rewards = read_rewards(path)?;
        }
        let client = a
            .ledger
            .connect(&key)
            .await?
            .with_timeout(Duration::from_secs(a.timeout.max(1)));
        Ok(settle_journal(&client, journal, &key, &options).await?)
    }

    /// `tribute receipts bench`.
    #[derive(Args)]
    pub struct BenchArgs {
        /// The node (its chain must fund the key's account).
        #[command(flatten)]
        rpc: RpcArgs,
        /// A funded key: it deploys, deposits, signs and settles.
        #[command(flatten)]
        key: KeyArgs,
        /// Receipts to sign and verify.
        #[arg(long, value_name = "N", default_value_t = 2000)]
        n: usize,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    }

    /// The batch sizes whose settlement gas is measured.
    const BATCH_SIZES: [usize; 4] = [1, 10, 100, 1000];
    /// Each bench receipt's fee in wei.
    const FEE: u64 = 1_000_000_000_000;
    const MODEL: &str = "tribute-bench-model";
    const ADAPTER: &str = "tribute-bench-adapter";

    fn bench_address(label: &str) -> Address {
        Address::from_word(keccak256(format!("tribute-bench/{label}")))
    }

    /// A realistic receipt: 4 cited chunks from a pool of 5 contributors (uneven weights
    /// summing to 10,000 bps), 1 adapter, a fee of 10^12 wei. `salt` keeps ids unique.
    fn bench_receipt(payer: Address, salt: &str, i: usize, pool: &[Address; 5]) -> UsageReceipt {
        let a = 2_500 + (i % 11) as u16 * 100;
        let c = 2_000 + (i % 5) as u16 * 100;
        let weights = [a, 2_500, c, 10_000 - a - 2_500 - c];
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        UsageReceipt {
            version: RECEIPT_VERSION,
            receiptId: keccak256(format!("{salt}/receipt/{i}")),
            payer,
            servingNode: bench_address("serving-node"),
            modelId: named_id(MODEL),
            adapters: vec![AdapterUse {
                adapterId: named_id(ADAPTER),
                weightMicros: 1_000_000,
            }],
            queryHash: keccak256(format!("{salt}/query/{i}")),
            answerHash: keccak256(format!("{salt}/answer/{i}")),
            chunks: weights
                .iter()
                .enumerate()
                .map(|(k, w)| CitedChunk {
                    contentHash: keccak256(format!("{salt}/chunk/{i}/{k}")),
                    contributor: pool[(i + k) % 5],
                    weightBps: *w,
                })
                .collect(),
            fee: U256::from(FEE),
            nonce: i as u64,
            timestamp,
        }
    }

    fn sign_batch(
        key: &PayerKey,
        ledger: &Ledger,
        salt: &str,
        n: usize,
        pool: &[Address; 5],
    ) -> anyhow::Result<Vec<SignedReceipt>> {
        (0..n)
            .map(|i| {
                key.sign(bench_receipt(key.address(), salt, i, pool), ledger)
                    .context("signing a bench receipt")
            })
            .collect()
    }

    /// A fresh ledger with the bench model and adapter registered and `deposit` wei
    /// deposited by the key.
    async fn fresh_ledger(
        rpc: &str,
        key: &PayerKey,
        deposit: U256,
    ) -> anyhow::Result<LedgerClient> {
        let ledger = chain::deploy(rpc, key.signer().clone()).await?;
        let client = LedgerClient::connect(rpc, key.signer().clone(), ledger).await?;
        client
            .register_model(named_id(MODEL), bench_address("model-owner"))
            .await?;
        client
            .register_adapter(named_id(ADAPTER), bench_address("adapter-owner"))
            .await?;
        client.deposit(deposit).await?;
        Ok(client)
    }

    /// Journals `size` fresh receipts and settles them as one batch; returns its gas.
    async fn settle_once(
        client: &LedgerClient,
        journal: &mut Journal,
        key: &PayerKey,
        salt: &str,
        size: usize,
        pool: &[Address; 5],
    ) -> anyhow::Result<u64> {
        let receipts = sign_batch(key, client.ledger(), salt, size, pool)?;
        journal.append_batch(&receipts)?;
        let mut options = SettleOptions::new(key.address());
        options.batch_size = size;
        options.max_batches = Some(1);
        let report = settle_journal(client, journal, key, &options).await?;
        match report.batches.as_slice() {
            [b] if b.receipts == size && !b.settlement.already_settled => Ok(b.settlement.gas_used),
            _ => anyhow::bail!(
                "expected one new batch of {size} receipts, settled {} batches ({} receipts)",
                report.batches.len(),
                report.confirmed_receipts()
            ),
        }
    }

    /// Runs `tribute receipts bench`.
    pub async fn bench(a: BenchArgs) -> anyhow::Result<()> {
        if a.n == 0 {
            anyhow::bail!("--n must be at least 1");
        }
        let key = a.key.load()?;
        let rpc = a.rpc.rpc.as_str();
        let progress = |msg: &str| {
            if !a.json {
                eprintln!("{msg}");
            }
        };
        let pool: [Address; 5] =
            std::array::from_fn(|i| bench_address(&format!("contributor-{i}")));

        // Signing and verification, one thread, on a freshly deployed ledger's domain.
        progress("deploying a ledger…");
        let ledger = chain::deploy(rpc, key.signer().clone()).await?;
        let receipts: Vec<UsageReceipt> = (0..a.n)
            .map(|i| bench_receipt(key.address(), "sign", i, &pool))
            .collect();
        progress(&format!("signing {} receipts…", a.n));
        let t = Instant::now();
        let signed = receipts
            .into_iter()
            .map(|r| key.sign(r, &ledger))
            .collect::<Result<Vec<_>, _>>()?;
        let sign_per_s = a.n as f64 / t.elapsed().as_secs_f64();
        progress(&format!("verifying {} receipts…", a.n));
        let t = Instant::now();
        for r in &signed {
            r.verify(&ledger)?;
        }
        let verify_per_s = a.n as f64 / t.elapsed().as_secs_f64();

        // Settlement gas: for each batch size a fresh ledger (cold storage), settled twice.
        let mut first = BTreeMap::new();
        let mut steady = BTreeMap::new();
        let mut batch_gas = BTreeMap::new();
        for size in BATCH_SIZES {
            progress(&format!("settling batches of {size}…"));
            let deposit = U256::from(FEE) * U256::from(2 * size);
            let client = fresh_ledger(rpc, &key, deposit).await?;
            let dir = tempfile::tempdir().context("creating a temporary journal")?;
            let mut journal = Journal::open(dir.path())?;
            let mut gas = [0u64; 2];
            for (run, g) in gas.iter_mut().enumerate() {
                let salt = format!("settle/{size}/{run}");
                *g = settle_once(&client, &mut journal, &key, &salt, size, &pool).await?;
            }
            let per = |g: u64| (g as f64 / size as f64).round() as u64;
            first.insert(size.to_string(), per(gas[0]));
            steady.insert(size.to_string(), per(gas[1]));
            batch_gas.insert(size, gas);
        }

        if a.json {
            let v = json!({
                "sign_per_s": sign_per_s.round() as u64,
                "verify_per_s": verify_per_s.round() as u64,
                "gas_per_receipt": steady,
                "gas_per_receipt_first": first,
            });
            println!("{v}");
            return Ok(());
        }
        println!(
            "# receipts bench: {} receipts (4 cited chunks of 5 contributors, 1 adapter, fee {FEE} wei), one thread\n",
            a.n
        );
        println!("| operation | per second |\n|---|---|");
        println!("| sign (digest + ECDSA) | {sign_per_s:.0} |");
        println!("| verify (digest + recover + compare) | {verify_per_s:.0} |\n");
        println!(
            "| batch size | gas per receipt | batch gas | first batch: gas per receipt | first batch gas |"
        );
        println!("|---|---|---|---|---|");
        for size in BATCH_SIZES {
            let [g0, g1] = batch_gas.get(&size).copied().unwrap_or_default();
            let key = size.to_string();
            println!(
                "| {size} | {} | {g1} | {} | {g0} |",
                steady.get(&key).copied().unwrap_or_default(),
                first.get(&key).copied().unwrap_or_default(),
            );
        }
        println!(
            "\nfirst batch: on a fresh ledger (new payees, the payer's first batch); \
             gas per receipt: the second batch (payees already have balances)."
        );
        Ok(())
    }
}
