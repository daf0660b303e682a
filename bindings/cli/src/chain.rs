//! `tribute chain`: deploy the `TributeLedger`, register models and adapters, deposit,
//! read balances and withdraw.

use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::transports::http::reqwest;
use anyhow::Context;
use clap::{Args, Subcommand};
use tribute::attribution::chain;
use tribute::attribution::provenance::SignedProvenance;
use tribute::attribution::receipt::{PayerKey, named_id};
use tribute::attribution::split::parse_address;

use crate::keys::{KeyArgs, LedgerArgs, RpcArgs};

/// `tribute chain …`.
#[derive(Subcommand)]
pub enum ChainCommand {
    /// Deploy a new TributeLedger and print it ({"chainId":…,"contract":"0x…"}).
    Deploy(DeployArgs),
    /// Register the owner of a model id (named_id(NAME)) on the ledger.
    RegisterModel(RegisterArgs),
    /// Register the owner of an adapter id (named_id(NAME)) on the ledger; with --manifest,
    /// also the hash of a fine-tuned adapter's provenance manifest, so that its training
    /// contributors share its fees.
    RegisterAdapter(RegisterAdapterArgs),
    /// Deposit ether for the key's account, as a payer of receipts.
    Deposit(DepositArgs),
    /// Payees' withdrawable balances (and, with --deposit, payers' deposits).
    Balance(BalanceArgs),
    /// Withdraw the key's whole balance as a payee.
    Withdraw(WithdrawArgs),
}

/// `tribute chain deploy`.
#[derive(Args)]
pub struct DeployArgs {
    /// The node.
    #[command(flatten)]
    rpc: RpcArgs,
    /// The deploying account's key.
    #[command(flatten)]
    key: KeyArgs,
    /// Also write the ledger JSON to this file (for --ledger).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print the ledger as JSON.
    #[arg(long)]
    json: bool,
}

/// `tribute chain register-model` and `register-adapter`.
#[derive(Args)]
pub struct RegisterArgs {
    /// The name (its id is keccak256 of it) or a 0x-prefixed 32-byte id.
    name: String,
    /// The owner who is paid this id's share of fees.
    #[arg(long, value_name = "ADDR")]
    owner: String,
    /// The ledger.
    #[command(flatten)]
    ledger: LedgerArgs,
    /// The sending account's key.
    #[command(flatten)]
    key: KeyArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `tribute chain register-adapter`.
#[derive(Args)]
pub struct RegisterAdapterArgs {
    #[command(flatten)]
    register: RegisterArgs,
    /// The fine-tuned adapter's directory: its provenance.json is verified (signature,
    /// adapter files) and its hash registered with the id, for good.
    #[arg(long, value_name = "DIR")]
    manifest: Option<PathBuf>,
}

/// `tribute chain deposit`.
#[derive(Args)]
pub struct DepositArgs {
    /// The amount: wei, or with a unit: `0.5ether`, `20gwei`, `1000wei`.
    amount: String,
    /// The ledger.
    #[command(flatten)]
    ledger: LedgerArgs,
    /// The payer's key (its account sends the ether).
    #[command(flatten)]
    key: KeyArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `tribute chain balance`.
#[derive(Args)]
pub struct BalanceArgs {
    /// Addresses (default: the key's address).
    #[arg(value_name = "ADDR")]
    addresses: Vec<String>,
    /// Also show each address's deposit as a payer.
    #[arg(long)]
    deposit: bool,
    /// The ledger.
    #[command(flatten)]
    ledger: LedgerArgs,
    /// A key, only to default the address to its own.
    #[command(flatten)]
    key: KeyArgs,
    /// Print the balances as JSON (one array).
    #[arg(long)]
    json: bool,
}

/// `tribute chain withdraw`.
#[derive(Args)]
pub struct WithdrawArgs {
    /// The ledger.
    #[command(flatten)]
    ledger: LedgerArgs,
    /// The payee's key.
    #[command(flatten)]
    key: KeyArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a future on a current-thread tokio runtime.
pub fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    Ok(rt.block_on(f))
}

/// Runs `tribute chain …`.
pub fn run(c: ChainCommand) -> anyhow::Result<()> {
    block_on(async move {
        match c {
            ChainCommand::Deploy(a) => deploy(a).await,
            ChainCommand::RegisterModel(a) => register(a, Registry::Model).await,
            ChainCommand::RegisterAdapter(a) => {
                let manifest = match &a.manifest {
                    Some(dir) => Some(verified_manifest_hash(dir)?),
                    None => None,
                };
                register(a.register, Registry::Adapter(manifest)).await
            }
            ChainCommand::Deposit(a) => deposit(a).await,
            ChainCommand::Balance(a) => balance(a).await,
            ChainCommand::Withdraw(a) => withdraw(a).await,
        }
    })?
}

/// Parses a user-given address (`what` names the option in the error). Mixed case must
/// carry a valid EIP-55 checksum.
pub fn parse_addr(what: &str, text: &str) -> anyhow::Result<Address> {
    parse_address(text.trim()).map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

/// The chain id the node at `rpc_url` serves (5 s connect timeout, 30 s request timeout).
pub async fn chain_id(rpc_url: &str) -> anyhow::Result<u64> {
    let url: reqwest::Url = rpc_url
        .parse()
        .with_context(|| format!("RPC {rpc_url}: invalid URL"))?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(chain::DEFAULT_TIMEOUT)
        .build()
        .with_context(|| format!("RPC {rpc_url}: HTTP client"))?;
    let provider =
        ProviderBuilder::new().connect_client(RpcClient::builder().http_with_client(http, url));
    provider
        .get_chain_id()
        .await
        .with_context(|| format!("RPC {rpc_url}: eth_chainId"))
}

/// Parses an amount of ether: plain wei (`1000`), or a decimal with a unit (`0.5ether`,
/// `1.5 gwei`, `7wei`). Exact integer arithmetic: a fraction finer than one wei is refused.
pub fn parse_amount(text: &str) -> anyhow::Result<U256> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let (number, decimals, unit) = if let Some(n) = lower.strip_suffix("ether") {
        (n, 18, true)
    } else if let Some(n) = lower.strip_suffix("gwei") {
        (n, 9, true)
    } else if let Some(n) = lower.strip_suffix("wei") {
        (n, 0, true)
    } else {
        (lower.as_str(), 0, false)
    };
    let bad = |why: &str| {
        anyhow::anyhow!(
            "amount {text:?}: {why} (write wei, or a number with ether, gwei or wei: 0.5ether)"
        )
    };
    let number = number.trim().replace('_', "");
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number.as_str(), ""),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(bad("no number"));
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad("not a number"));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > decimals {
        return Err(if unit {
            bad("finer than one wei")
        } else {
            anyhow::anyhow!(
                "amount {text:?}: without a unit it is wei, which has no fractions (did you mean {t}ether?)"
            )
        });
    }
    let digits = format!("{int}{frac:0<decimals$}");
    let digits = if digits.is_empty() { "0" } else { &digits };
    U256::from_str_radix(digits, 10).map_err(|_| bad("too large"))
}

/// Formats wei as ether, exactly (`500000000000000000` → `0.5`).
pub fn format_ether(wei: U256) -> String {
    let unit = U256::from(10u64).pow(U256::from(18u64));
    let (int, frac) = (wei / unit, wei % unit);
    if frac.is_zero() {
        return int.to_string();
    }
    let frac = format!("{frac:0>18}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

async fn deploy(a: DeployArgs) -> anyhow::Result<()> {
    let key = a.key.load()?;
    let ledger = chain::deploy(&a.rpc.rpc, key.signer().clone()).await?;
    if let Some(out) = &a.out {
        crate::keys::write_ledger_file(out, &ledger)?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&ledger)?);
    } else {
        println!(
            "deployed TributeLedger at {} on chain {} (from {})",
            ledger.contract,
            ledger.chain_id,
            key.address()
        );
        if let Some(out) = &a.out {
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Registry {
    Model,
    /// An adapter, with its provenance manifest hash when it was fine-tuned.
    Adapter(Option<B256>),
}

impl Registry {
    fn noun(self) -> &'static str {
        match self {
            Registry::Model => "model",
            Registry::Adapter(_) => "adapter",
        }
    }

    /// The provenance manifest hash to register (a trained adapter's).
    fn manifest(self) -> Option<B256> {
        match self {
            Registry::Model => None,
            Registry::Adapter(m) => m,
        }
    }
}

/// The hash of the verified provenance manifest in the adapter directory `dir`.
fn verified_manifest_hash(dir: &std::path::Path) -> anyhow::Result<B256> {
    let verified = SignedProvenance::read(dir)
        .and_then(|signed| signed.verify(dir))
        .with_context(|| format!("--manifest {}", dir.display()))?;
    Ok(verified.manifest_hash)
}

async fn register(a: RegisterArgs, kind: Registry) -> anyhow::Result<()> {
    let owner = parse_addr("--owner", &a.owner)?;
    let key = a.key.load()?;
    let client = a.ledger.connect(&key).await?;
    let id = named_id(&a.name);
    let noun = kind.noun();
    let current = match kind {
        Registry::Model => client.model_owner(id).await?,
        Registry::Adapter(_) => client.adapter_owner(id).await?,
    };
    let tx = match current {
        Some(o) if o != owner => anyhow::bail!(
            "{noun} {:?} (id {id}) is already registered to {o}; only that owner can transfer it",
            a.name
        ),
        Some(_) => {
            if let Registry::Adapter(wanted) = kind {
                let registered = client.adapter_manifest(id).await?;
                if registered != wanted {
                    anyhow::bail!(
                        "adapter {:?} (id {id}) is already registered to {owner} with {}, not {}: a registration is fixed",
                        a.name,
                        describe_manifest(registered),
                        describe_manifest(wanted)
                    );
                }
            }
            None
        }
        None => Some(match kind {
            Registry::Model => client.register_model(id, owner).await?,
            Registry::Adapter(None) => client.register_adapter(id, owner).await?,
            Registry::Adapter(Some(m)) => client.register_trained_adapter(id, owner, m).await?,
        }),
    };
    let manifest = kind.manifest();
    if a.json {
        let mut v = serde_json::json!({
            "kind": noun,
            "name": a.name,
            "id": id,
            "owner": owner,
            "tx": tx,
            "already_registered": tx.is_none(),
        });
        if let Some(m) = manifest {
            v["manifest_hash"] = serde_json::json!(m);
        }
        println!("{v}");
        return Ok(());
    }
    let with = manifest
        .map(|m| format!(" with provenance manifest {m}"))
        .unwrap_or_default();
    match tx {
        Some(tx) => println!(
            "registered {noun} {:?} (id {id}) to {owner}{with} in tx {tx}",
            a.name
        ),
        None => println!(
            "{noun} {:?} (id {id}) is already registered to {owner}{with}; nothing sent",
            a.name
        ),
    }
    Ok(())
}

fn describe_manifest(m: Option<B256>) -> String {
    m.map_or_else(
        || "no provenance manifest".into(),
        |h| format!("provenance manifest {h}"),
    )
}

async fn deposit(a: DepositArgs) -> anyhow::Result<()> {
    let amount = parse_amount(&a.amount)?;
    if amount.is_zero() {
        anyhow::bail!("amount {:?}: nothing to deposit", a.amount);
    }
    let key = a.key.load()?;
    let client = a.ledger.connect(&key).await?;
    let tx = client.deposit(amount).await?;
    let total = client.deposits(key.address()).await?;
    if a.json {
        let v = serde_json::json!({
            "payer": key.address(),
            "amount": amount.to_string(),
            "deposit": total.to_string(),
            "tx": tx,
        });
        println!("{v}");
    } else {
        println!(
            "deposited {} ether for {} in tx {tx}; deposit now {} ether",
            format_ether(amount),
            key.address(),
            format_ether(total)
        );
    }
    Ok(())
}

async fn balance(a: BalanceArgs) -> anyhow::Result<()> {
    let mut addresses = a
        .addresses
        .iter()
        .map(|t| parse_addr("address", t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Reads only: a throw-away sender unless a key is configured.
    let key = a.key.load_optional()?;
    if addresses.is_empty() {
        match &key {
            Some(k) => addresses.push(k.address()),
            None => anyhow::bail!("give addresses, or a key (TRIBUTE_KEY, --key-file, --keystore)"),
        }
    }
    let sender = key.unwrap_or_else(PayerKey::random);
    let client = a.ledger.connect(&sender).await?;
    let mut rows = Vec::with_capacity(addresses.len());
    for addr in addresses {
        let balance = client.balance(addr).await?;
        let deposit = if a.deposit {
            Some(client.deposits(addr).await?)
        } else {
            None
        };
        rows.push((addr, balance, deposit));
    }
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(addr, balance, deposit)| {
                let mut o = serde_json::json!({"address": addr, "balance": balance.to_string()});
                if let Some(d) = deposit {
                    o["deposit"] = d.to_string().into();
                }
                o
            })
            .collect();
        println!("{}", serde_json::Value::from(v));
        return Ok(());
    }
    for (addr, balance, deposit) in rows {
        let mut line = format!("{addr}  balance {} ether", format_ether(balance));
        if let Some(d) = deposit {
            line.push_str(&format!("  deposit {} ether", format_ether(d)));
        }
        println!("{line}");
    }
    Ok(())
}

async fn withdraw(a: WithdrawArgs) -> anyhow::Result<()> {
    let key = a.key.load()?;
    let client = a.ledger.connect(&key).await?;
    let amount = client.withdraw().await?;
    if a.json {
        let v = serde_json::json!({"payee": key.address(), "amount": amount.to_string()});
        println!("{v}");
    } else {
        println!(
            "withdrew {} ether to {}",
            format_ether(amount),
            key.address()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wei(s: &str) -> U256 {
        U256::from_str_radix(s, 10).expect("decimal")
    }

    #[test]
    fn amounts_parse_exactly() {
        let ok = [
            ("1000", "1000"),
            ("1000wei", "1000"),
            ("0.5ether", "500000000000000000"),
            ("0.5 ether", "500000000000000000"),
            ("1ETHER", "1000000000000000000"),
            (".25ether", "250000000000000000"),
            ("3.ether", "3000000000000000000"),
            ("1.5gwei", "1500000000"),
            ("20gwei", "20000000000"),
            ("0.000000000000000001ether", "1"),
            ("1.10gwei", "1100000000"),
            ("1_000_000", "1000000"),
            ("0", "0"),
        ];
        for (text, expect) in ok {
            assert_eq!(parse_amount(text).expect(text), wei(expect), "{text}");
        }
        for bad in [
            "",
            "ether",
            "1.5",
            "0.5wei",
            "1e18",
            "-1",
            "0x10",
            "1.0000000001gwei",
            "1..2ether",
            "0.0000000000000000001ether",
            "abc",
        ] {
            assert!(parse_amount(bad).is_err(), "{bad:?} should be refused");
        }
        let huge = format!("{}0", U256::MAX);
        assert!(parse_amount(&huge).is_err());
    }

    #[test]
    fn ether_formats_exactly() {
        assert_eq!(format_ether(wei("500000000000000000")), "0.5");
        assert_eq!(format_ether(wei("1000000000000000000")), "1");
        assert_eq!(format_ether(wei("1")), "0.000000000000000001");
        assert_eq!(format_ether(U256::ZERO), "0");
        assert_eq!(format_ether(wei("1230000000000000000000")), "1230");
    }
}
