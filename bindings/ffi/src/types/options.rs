//! How an engine is set up: its options, the ledger receipts are signed for, and where
//! they are settled.

use tribute::attribution::receipt::Ledger as RustLedger;

use crate::error::{Result, TributeError};
use crate::types::{AttributionMethod, SearchMode, size};

/// Where receipts are settled: the chain id and the `TributeLedger` contract (the EIP-712
/// domain receipts are signed for).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Ledger {
    /// The EVM chain id.
    pub chain_id: u64,
    /// The ledger contract's address (0x-hex).
    pub contract: String,
}

impl TryFrom<&Ledger> for RustLedger {
    type Error = TributeError;

    fn try_from(l: &Ledger) -> Result<Self> {
        let contract = tribute::Contributor::parse(&l.contract)
            .map_err(|e| TributeError::Config(format!("ledger contract: {e}")))?
            .address();
        Ok(RustLedger {
            chain_id: l.chain_id,
            contract,
        })
    }
}

impl From<&RustLedger> for Ledger {
    fn from(l: &RustLedger) -> Self {
        Ledger {
            chain_id: l.chain_id,
            contract: l.contract.to_checksum(None),
        }
    }
}

/// How an [`Engine`](crate::engine::Engine) is set up; unset fields take the defaults of
/// the Rust `EngineConfig`.
#[derive(Debug, Clone, Default, PartialEq, uniffi::Record)]
pub struct EngineOptions {
    /// The ledger receipts are signed for; with a signing key, answers carry receipts.
    #[uniffi(default = None)]
    pub ledger: Option<Ledger>,
    /// The receipt journal directory (receipts are appended, fsynced, before an ask returns).
    #[uniffi(default = None)]
    pub journal: Option<String>,
    /// Chunks retrieved per question (default 4).
    #[uniffi(default = None)]
    pub top_k: Option<u32>,
    /// Retrieval mode (default hybrid).
    #[uniffi(default = None)]
    pub mode: Option<SearchMode>,
    /// Only these datanets (default all).
    #[uniffi(default = None)]
    pub datanets: Option<Vec<String>>,
    /// Attribution method (default loo).
    #[uniffi(default = None)]
    pub method: Option<AttributionMethod>,
    /// Most answer tokens (default 160).
    #[uniffi(default = None)]
    pub max_tokens: Option<u32>,
    /// The fee of an answer in wei, as a decimal string.
    #[uniffi(default = None)]
    pub fee_wei: Option<String>,
    /// Where `settle()` pays the receipts (none: `settle()` throws `Chain`).
    #[uniffi(default = None)]
    pub chain: Option<ChainOptions>,
}

/// Where an engine settles its receipts (`Engine.settle()`): the node and who gets the
/// treasury share. The ledger contract is `EngineOptions.ledger`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ChainOptions {
    /// The node's HTTP JSON-RPC URL.
    pub rpc: String,
    /// Receipts per settlement batch (default 100).
    #[uniffi(default = None)]
    pub batch_size: Option<u32>,
    /// The treasury's address (default: the payer's).
    #[uniffi(default = None)]
    pub treasury: Option<String>,
    /// Paid the shares of model or adapter ids without a registered owner (default none:
    /// such ids make settlement fail).
    #[uniffi(default = None)]
    pub fallback_owner: Option<String>,
    /// Seconds to wait for each RPC request or transaction receipt (default 30).
    #[uniffi(default = None)]
    pub timeout_secs: Option<u32>,
}

impl TryFrom<ChainOptions> for tribute::config::ChainConfig {
    type Error = TributeError;

    fn try_from(c: ChainOptions) -> Result<Self> {
        let address = |what: &str, a: Option<String>| {
            a.map(|a| {
                tribute::common::parse_address(&a)
                    .map_err(|e| TributeError::Config(format!("chain {what}: {e}")))
            })
            .transpose()
        };
        let mut config = tribute::config::ChainConfig {
            rpc: c.rpc,
            treasury: address("treasury", c.treasury)?,
            fallback_owner: address("fallback_owner", c.fallback_owner)?,
            ..tribute::config::ChainConfig::default()
        };
        if let Some(n) = c.batch_size {
            config.batch_size = size(n);
        }
        if let Some(t) = c.timeout_secs {
            config.timeout_secs = u64::from(t);
        }
        Ok(config)
    }
}

/// Reads a ledger JSON file (`{"chainId": …, "contract": "0x…"}`, as `tribute chain deploy
/// --out` writes it). Throws `Config` when it is unreadable or malformed.
#[uniffi::export]
pub fn load_ledger(path: String) -> Result<Ledger> {
    crate::error::guard(|| {
        let bad = |m: String| TributeError::Config(format!("ledger: {path}: {m}"));
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let ledger: RustLedger = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        Ok(Ledger::from(&ledger))
    })
}

impl EngineOptions {
    /// Applies the options to a config.
    pub(crate) fn apply(self, config: &mut tribute::EngineConfig) -> Result<()> {
        if let Some(l) = &self.ledger {
            config.receipts.ledger = Some(l.try_into()?);
        }
        config.receipts.journal = self.journal.map(Into::into);
        if let Some(k) = self.top_k {
            config.retrieval.top_k = size(k);
        }
        if let Some(m) = self.mode {
            config.retrieval.mode = m.into();
        }
        if let Some(d) = self.datanets {
            config.retrieval.datanets = d;
        }
        if let Some(m) = self.method {
            config.attribution.method = m.into();
        }
        if let Some(n) = self.max_tokens {
            config.generation.max_tokens = size(n);
        }
        if let Some(f) = self.fee_wei {
            config.receipts.fee_wei = tribute::common::wei::parse_wei(&f)
                .map_err(|e| TributeError::Config(format!("fee_wei: {e}")))?;
        }
        config.chain = self.chain.map(TryInto::try_into).transpose()?;
        Ok(())
    }
}
