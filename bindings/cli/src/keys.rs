//! Where the CLI finds the signing key ([`KeyArgs`]) and the ledger ([`LedgerArgs`]).
//!
//! A key is never taken on the command line (where `ps` and shell history would show it):
//! it comes from an environment variable, a file or an encrypted keystore, and no message
//! ever contains it.

// Without `onchain` nothing signs or sends yet (the `ask` command will load keys too).
#![cfg_attr(not(feature = "onchain"), allow(dead_code))]

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use tribute::attribution::receipt::{Ledger, PayerKey};

/// The environment variable read for a hex private key when nothing else is given.
pub const DEFAULT_KEY_ENV: &str = "TRIBUTE_KEY";

/// The environment variable read for the keystore password by default.
pub const DEFAULT_PASSWORD_ENV: &str = "TRIBUTE_KEYSTORE_PASSWORD";

/// Where the signing (and sending) key comes from: a file, a keystore, or else an
/// environment variable.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Environment variable holding the hex private key (used when neither --key-file nor
    /// --keystore is given).
    #[arg(long, value_name = "VAR", default_value = DEFAULT_KEY_ENV)]
    pub key_env: String,
    /// File holding the hex private key.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["keystore", "key_env"])]
    pub key_file: Option<PathBuf>,
    /// Encrypted JSON keystore (Web3 Secret Storage); the password is read from --password-env.
    #[arg(long, value_name = "PATH", conflicts_with = "key_env")]
    pub keystore: Option<PathBuf>,
    /// Environment variable holding the keystore's password.
    #[arg(long, value_name = "VAR", default_value = DEFAULT_PASSWORD_ENV)]
    pub password_env: String,
}

impl KeyArgs {
    /// Loads the key from the configured source; the error names the source that failed
    /// (and never contains the key).
    pub fn load(&self) -> anyhow::Result<PayerKey> {
        if let Some(path) = &self.key_file {
            return PayerKey::from_file(path).map_err(|e| anyhow::anyhow!("--key-file: {e}"));
        }
        if let Some(path) = &self.keystore {
            return load_keystore(path, &self.password_env);
        }
        if std::env::var_os(&self.key_env).is_none() {
            anyhow::bail!(
                "no signing key: set {} to a hex private key, or pass --key-file PATH or \
                 --keystore PATH",
                self.key_env
            );
        }
        PayerKey::from_env(&self.key_env).map_err(|e| anyhow::anyhow!("--key-env: {e}"))
    }

    /// Like [`KeyArgs::load`], but `Ok(None)` when no key is configured at all: no
    /// --key-file, no --keystore, and the default variable `TRIBUTE_KEY` unset (a variable
    /// named with --key-env must be set).
    pub fn load_optional(&self) -> anyhow::Result<Option<PayerKey>> {
        let configured = self.key_file.is_some()
            || self.keystore.is_some()
            || self.key_env != DEFAULT_KEY_ENV
            || std::env::var_os(&self.key_env).is_some();
        if configured {
            self.load().map(Some)
        } else {
            Ok(None)
        }
    }
}

fn load_keystore(path: &Path, password_env: &str) -> anyhow::Result<PayerKey> {
    let password = std::env::var(password_env).map_err(|_| {
        anyhow::anyhow!(
            "--keystore {}: the password variable {password_env} is not set (or not UTF-8)",
            path.display()
        )
    })?;
    PayerKey::from_keystore(path, &password).map_err(|e| anyhow::anyhow!("--keystore: {e}"))
}

/// Reads a ledger file as written by `tribute chain deploy --out`:
/// `{"chainId":31337,"contract":"0x…"}`.
pub fn read_ledger_file(path: &Path) -> anyhow::Result<Ledger> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the ledger file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a ledger file (expected {{\"chainId\": N, \"contract\": \"0x…\"}})",
            path.display()
        )
    })
}

/// Writes a ledger file (pretty JSON, as `tribute chain deploy --out` does).
pub fn write_ledger_file(path: &Path, ledger: &Ledger) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(ledger)?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("writing the ledger file {}", path.display()))
}

/// The node's JSON-RPC URL.
#[derive(Args, Debug, Clone)]
pub struct RpcArgs {
    /// The node's JSON-RPC URL.
    #[arg(
        long,
        value_name = "URL",
        env = "TRIBUTE_RPC",
        default_value = "http://127.0.0.1:8545"
    )]
    pub rpc: String,
}

/// Which ledger to talk to, and through which node: `--ledger FILE` (chain id and
/// address) or `--contract ADDR` (the chain id is read from the node).
#[derive(Args, Debug, Clone)]
pub struct LedgerArgs {
    /// The node.
    #[command(flatten)]
    pub rpc: RpcArgs,
    /// The ledger contract's address (the chain id is read from the node).
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "ledger",
        required_unless_present = "ledger"
    )]
    pub contract: Option<String>,
    /// A ledger file written by `tribute chain deploy --out`.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
}

#[cfg(feature = "onchain")]
impl LedgerArgs {
    /// The ledger: read from --ledger, or --contract on the node's chain.
    pub async fn resolve(&self) -> anyhow::Result<Ledger> {
        if let Some(path) = &self.ledger {
            return read_ledger_file(path);
        }
        let Some(contract) = &self.contract else {
            anyhow::bail!("give the ledger with --ledger FILE or --contract ADDR");
        };
        let contract = crate::chain::parse_addr("--contract", contract)?;
        let chain_id = crate::chain::chain_id(&self.rpc.rpc).await?;
        Ok(Ledger { chain_id, contract })
    }

    /// Connects to the ledger, sending from `key`'s account.
    pub async fn connect(
        &self,
        key: &PayerKey,
    ) -> anyhow::Result<tribute::attribution::chain::LedgerClient> {
        let ledger = self.resolve().await?;
        Ok(tribute::attribution::chain::LedgerClient::connect(
            &self.rpc.rpc,
            key.signer().clone(),
            ledger,
        )
        .await?)
    }
}
