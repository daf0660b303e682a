//! `tribute receipts settle` and `tribute receipts bench`: the commands that talk to a chain
//! (feature `onchain`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::{Address, U256, keccak256};
use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use tribute::attribution::chain::{self, LedgerClient};
use tribute::attribution::journal::{Journal, JournalBackend};
use tribute::attribution::provenance::verified_manifest;
use tribute::attribution::receipt::{
    AdapterUse, CitedChunk, Ledger, PayerKey, RECEIPT_VERSION, SignedReceipt, UsageReceipt,
    named_id,
};
use tribute::attribution::settle::{BatchOutcome, SettleOptions, SettleReport, settle_journal};
use tribute::attribution::split::RewardConfig;

use super::{KeyArgs, LedgerArgs, RpcArgs, open_journal, stats_json, stats_line};
use crate::chain::parse_addr;

/// `tribute receipts settle`.
#[derive(Args)]
pub struct SettleArgs {
    /// The receipt journal's directory, or the `postgres://` URL of a shared journal.
    #[arg(long, value_name = "DIR|URL")]
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
    /// A fine-tuned adapter's directory (repeatable; its id is the directory's name, as
    /// for `tribute ask --adapter`): its verified provenance.json names whose data trained
    /// it, and they share its fees when it is registered with that manifest.
    #[arg(long = "adapter", value_name = "DIR")]
    adapters: Vec<PathBuf>,
    /// Timeout of each request and each wait for a transaction, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
    /// Blocks deep (its own included) a settlement must be before its receipts are
    /// confirmed; a shallower one stays submitted until a later run (use the chain's
    /// finality depth on a public chain).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    confirmations: u64,
    /// Recent blocks to re-check for confirmed settlements a reorg dropped (settled again)
    /// or moved; 0 skips the check.
    #[arg(long, value_name = "N", default_value_t = 128)]
    reconcile_blocks: u64,
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
    let batch_json = |b: &BatchOutcome| {
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
    };
    let skipped: Vec<Value> = report
        .skipped
        .iter()
        .map(|(id, why)| json!({"receiptId": id, "reason": why}))
        .collect();
    json!({
        "batches": report.batches.iter().map(batch_json).collect::<Vec<_>>(),
        "awaiting": report.awaiting.iter().map(batch_json).collect::<Vec<_>>(),
        "reorged": report.reorged,
        "moved": report.moved,
        "unresolved": report
            .unresolved
            .iter()
            .map(|(root, why)| json!({"root": root, "reason": why}))
            .collect::<Vec<_>>(),
        "skipped": skipped,
        "other_payers": report.other_payers,
        "still_pending": report.still_pending,
        "confirmed_receipts": report.confirmed_receipts(),
        "awaiting_receipts": report.awaiting_receipts(),
        "gas_used": report.gas_used(),
    })
}

fn print_report(report: &SettleReport) {
    for root in &report.reorged {
        println!("batch {root}: its settlement was dropped by a reorg; settling it again");
    }
    for root in &report.moved {
        println!("batch {root}: its settlement moved to another block; re-confirmed there");
    }
    for b in &report.awaiting {
        let s = &b.settlement;
        let block = s.block_number.map_or("?".into(), |n| n.to_string());
        println!(
            "batch {}: {} receipts mined in block {block}, not yet deep enough to confirm (tx {})",
            s.root, b.receipts, s.tx_hash
        );
    }
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
    for (root, why) in &report.unresolved {
        println!("unresolved batch {root}: {why}");
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
    let result = settle_inner(&a, &mut *journal).await;
    let stats = journal.summary()?;
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

async fn settle_inner(
    a: &SettleArgs,
    journal: &mut dyn JournalBackend,
) -> anyhow::Result<SettleReport> {
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
    options.confirmations = a.confirmations;
    options.reconcile_blocks = a.reconcile_blocks;
    options.fallback_owner = a
        .fallback_owner
        .as_deref()
        .map(|t| parse_addr("--fallback-owner", t))
        .transpose()?;
    if let Some(path) = &a.rewards {
        options.rewards = read_rewards(path)?;
    }
    for dir in &a.adapters {
        let id = crate::ask::adapter_id(dir)
            .with_context(|| format!("--adapter {}: no directory name", dir.display()))?;
        let manifest = verified_manifest(dir)
            .with_context(|| format!("--adapter {}", dir.display()))?
            .with_context(|| {
                format!(
                    "--adapter {}: no provenance.json there (only fine-tuned adapters carry one)",
                    dir.display()
                )
            })?;
        options.manifests.insert(named_id(&id), manifest);
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
        attributionHash: Default::default(),
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
async fn fresh_ledger(rpc: &str, key: &PayerKey, deposit: U256) -> anyhow::Result<LedgerClient> {
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
    let pool: [Address; 5] = std::array::from_fn(|i| bench_address(&format!("contributor-{i}")));

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
