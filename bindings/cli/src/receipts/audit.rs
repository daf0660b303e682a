//! `tribute receipts audit`: recompute receipts' citation weights and reward split from
//! their attribution records (`tribute::Engine::audit`) and print match / mismatch.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use tribute::attribution::receipt::SignedReceipt;
use tribute::audit::{AuditReport, Verdict, journaled_receipt};
use tribute::{B256, Engine, EngineConfig};

use super::{parse_receipts, short};

/// `tribute receipts audit`.
#[derive(Args)]
pub struct AuditArgs {
    /// A receipt id (0x…, looked up in --journal) or a file of receipts (JSON or JSON
    /// lines, e.g. from `tribute receipts export`).
    receipt: String,
    /// The knowledge base the answers were retrieved from.
    #[arg(long, value_name = "DIR")]
    kb: PathBuf,
    /// The model that answered (default: the config's, else the bundled SmolLM2).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Embedding model directory (the `similarity` method; default: the bundled MiniLM).
    #[arg(long, value_name = "DIR")]
    embedder: Option<PathBuf>,
    /// Engine config file (TOML): adapters, embedder; --kb and --model override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The receipt journal (for a receipt id; its `records/` holds the attribution records),
    /// or the `postgres://` URL of a shared journal (records in its database).
    #[arg(long, value_name = "DIR|URL")]
    journal: Option<PathBuf>,
    /// The attribution records' directory (default: JOURNAL/records).
    #[arg(long, value_name = "DIR")]
    records: Option<PathBuf>,
    /// One JSON object per receipt, then {"summary":{…}}.
    #[arg(long)]
    json: bool,
}

/// Runs `tribute receipts audit`.
pub fn audit(a: AuditArgs) -> anyhow::Result<()> {
    let shared = a
        .journal
        .as_deref()
        .filter(|j| tribute::attribution::journal::is_postgres_url(j));
    let records = match (&a.records, &a.journal) {
        (Some(r), _) => Some(r.clone()),
        // A shared journal keeps the records in its database: the engine reads them there.
        (None, Some(_)) if shared.is_some() => None,
        (None, Some(j)) => Some(j.join(tribute::attribution::record::RECORDS_DIR)),
        (None, None) => bail!("give the records with --journal DIR (or --records DIR)"),
    };
    let receipts = load(&a)?;
    let mut config = match &a.config {
        Some(path) => EngineConfig::from_toml_file(path)?,
        None => EngineConfig::default(),
    };
    config.index = a.kb.clone();
    if let Some(m) = &a.model {
        config.model = Some(m.clone());
    }
    if let Some(e) = &a.embedder {
        config.embedder = Some(e.clone());
    }
    // Read-only: the engine neither journals nor signs (a shared journal is opened only to
    // read its records).
    config.receipts.journal = shared.map(Path::to_path_buf);
    let engine = Engine::builder().config(config).build()?;

    let (mut exact, mut tolerant, mut mismatched, mut failed) = (0, 0, 0, 0);
    if !a.json {
        println!(
            "{:<12} {:<10} {:<16} {:>10} {:>8}  DETAIL",
            "RECEIPT", "METHOD", "VERDICT", "MAX Δ", "Δ BPS"
        );
    }
    for r in &receipts {
        let id = r.receipt.receiptId;
        match engine.audit(r, records.as_deref()) {
            Ok(report) => {
                match report.verdict {
                    Verdict::Exact => exact += 1,
                    Verdict::WithinTolerance => tolerant += 1,
                    Verdict::Mismatch => mismatched += 1,
                }
                print_report(&report, a.json)?;
            }
            Err(e) => {
                failed += 1;
                if a.json {
                    println!("{}", json!({"receiptId": id, "error": e.to_string()}));
                } else {
                    println!(
                        "{:<12} {:<10} {:<16} {:>10} {:>8}  {e}",
                        short(id),
                        "-",
                        "cannot decide",
                        "-",
                        "-"
                    );
                }
            }
        }
    }
    let total = receipts.len();
    if a.json {
        let summary = json!({"receipts": total, "exact": exact, "withinTolerance": tolerant,
            "mismatch": mismatched, "undecided": failed});
        println!("{}", json!({ "summary": summary }));
    } else {
        println!(
            "{total} receipts: {} match ({exact} exact, {tolerant} within tolerance), {mismatched} mismatch, {failed} could not be decided",
            exact + tolerant
        );
    }
    if mismatched + failed > 0 {
        bail!("{} of {total} receipts did not match", mismatched + failed);
    }
    Ok(())
}

/// The receipts named on the command line: one id from the journal, or a file's.
fn load(a: &AuditArgs) -> anyhow::Result<Vec<SignedReceipt>> {
    let path = PathBuf::from(&a.receipt);
    if !path.exists()
        && let Ok(id) = a.receipt.trim().parse::<B256>()
    {
        let journal = a
            .journal
            .as_ref()
            .context("a receipt id needs the journal it is in (--journal DIR)")?;
        return Ok(vec![journaled_receipt(journal, id)?]);
    }
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is neither a receipt id (0x + 64 hex) nor a readable file",
            a.receipt
        )
    })?;
    let mut out = Vec::new();
    for p in parse_receipts(&text) {
        out.push(
            p.receipt
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), p.line))?,
        );
    }
    if out.is_empty() {
        bail!("{}: no receipts", path.display());
    }
    Ok(out)
}

fn print_report(r: &AuditReport, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    let verdict = match r.verdict {
        Verdict::Exact => "match (exact)",
        Verdict::WithinTolerance => "match (tol.)",
        Verdict::Mismatch => "MISMATCH",
    };
    let mut detail = if r.differences.is_empty() {
        format!("weights {:?} bps", r.recomputed_bps)
    } else {
        r.differences.join("; ")
    };
    // The text is unchanged, so the verdict stands; the place cited is not.
    for c in &r.locator_changes {
        detail.push_str(&format!("; locator moved: {c}"));
    }
    println!(
        "{:<12} {:<10} {:<16} {:>10.1e} {:>8}  {detail}",
        short(r.receipt_id),
        r.method.as_str(),
        verdict,
        r.max_score_diff,
        r.max_bps_diff
    );
    Ok(())
}
