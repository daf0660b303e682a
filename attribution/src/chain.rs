//! On-chain settlement of signed usage receipts against the `TributeLedger` contract
//! (`attribution/contracts`), behind the `onchain` feature (alloy + tokio).
//!
//! [`LedgerClient`] talks to one ledger over HTTP JSON-RPC with one sending account (the
//! *settler*: it pays gas and is the account that deposits and withdraws). Settling a batch
//! is authorised separately by the payer's [`PayerKey`], which signs the EIP-712
//! [`SettleBatch`]; the settler may be the payer or anyone else.
//!
//! [`LedgerClient::settle`]:
//! 1. verifies every receipt off chain (signature, fields, payer = the key's address, no
//!    duplicate receipt);
//! 2. requires `Σ payouts == Σ receipt fees` exactly (a batch pays out exactly what its
//!    receipts charged: split each fee with [`crate::split`] and add the shares up per payee);
//! 3. builds the Merkle root over the receipt leaves **sorted ascending** ([`BatchTree`]), so
//!    the same set of receipts always gives the same root, whatever their order;
//! 4. if the root is already settled, returns the existing settlement (found from its
//!    `BatchSettled` event) with `already_settled: true` and sends nothing (idempotent
//!    retries);
//! 5. reads `batchNonces(payer)`, signs the `SettleBatch`, simulates with `eth_call` so that a
//!    revert surfaces as a typed [`ChainError`] (Replay, InvalidNonce, BadSignature,
//!    InsufficientDeposit{have, need}, …) before any gas is spent, then sends and waits for
//!    the receipt with a timeout.
//!
//! The contract keeps no per-root storage: a root is settled when a `BatchSettled` event with
//! that root (an indexed topic) exists, which [`LedgerClient::settlement_of`] and
//! [`LedgerClient::is_settled`] look up with `eth_getLogs`. Replay protection is the payer's
//! batch nonce; `lastRoot(payer)` ([`LedgerClient::last_root`]) holds each payer's latest
//! root, and re-settling it reverts with `Replay()`. A simulation that fails with
//! `InvalidNonce` for a root that turns out to be settled (another settler got there first)
//! is reported as [`ChainError::Replay`] too, so a settler only has one case to handle.
//!
//! Every RPC request has a timeout ([`LedgerClient::with_timeout`], default 30 s; the HTTP
//! client also has a 5 s connect timeout), so an unreachable node is a prompt
//! [`ChainError::Rpc`] naming the URL, never a hang.

use std::collections::HashSet;
use std::time::Duration;

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, Signature, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::{Filter, TransactionReceipt};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use alloy::transports::http::reqwest;

use crate::receipt::{
    Ledger, MerkleTree, PayerKey, ReceiptError, SettleBatch, SignedReceipt, UsageReceipt,
    payouts_hash,
};

alloy::sol!(
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug)]
    TributeLedger,
    "contracts/artifacts/TributeLedger.json"
);

pub use TributeLedger::TributeLedgerInstance;

/// The default timeout of one RPC request or of a wait for a transaction receipt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an on-chain operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The node is unreachable, answered with an error, or the URL is unusable.
    #[error("RPC {url}: {message}")]
    Rpc {
        /// The node's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A request or a wait for a transaction receipt took too long.
    #[error("RPC {url}: {what} timed out after {after:?}")]
    Timeout {
        /// The node's URL.
        url: String,
        /// What was being waited for.
        what: String,
        /// The timeout.
        after: Duration,
    },
    /// The node serves another chain than the ledger's.
    #[error("the node serves chain {actual}, the ledger is on chain {expected}")]
    WrongChain {
        /// The ledger's chain id.
        expected: u64,
        /// The node's chain id.
        actual: u64,
    },
    /// No contract code at the ledger's address.
    #[error("no contract at {address} on chain {chain_id}")]
    UnknownContract {
        /// The ledger's address.
        address: Address,
        /// The chain id.
        chain_id: u64,
    },
    /// A receipt of the batch was refused off chain.
    #[error("receipt {index} of the batch: {source}")]
    InvalidReceipt {
        /// Its position in the batch.
        index: usize,
        /// Why.
        source: ReceiptError,
    },
    /// A receipt's payer is not the key that signs the batch.
    #[error("receipt {index} is owed by {payer}, the batch is signed by {key}")]
    WrongPayer {
        /// Its position in the batch.
        index: usize,
        /// The receipt's payer.
        payer: Address,
        /// The batch key's address.
        key: Address,
    },
    /// The same receipt appears twice in the batch.
    #[error("receipt {0} appears twice in the batch")]
    DuplicateReceipt(B256),
    /// The payouts do not add up to the receipts' fees.
    #[error("payouts sum to {payouts} wei, the receipts' fees to {fees} wei")]
    PayoutMismatch {
        /// Σ receipt fees.
        fees: U256,
        /// Σ payouts.
        payouts: U256,
    },
    /// A sum of amounts overflows 256 bits.
    #[error("amounts overflow 256 bits")]
    Overflow,
    /// The batch signature could not be made.
    #[error(transparent)]
    Signing(ReceiptError),
    /// The batch root is already settled: `Replay()` (it is the payer's latest root,
    /// `lastRoot(payer)`), or an `InvalidNonce` simulation for a root whose `BatchSettled`
    /// event exists. Look the settlement up with [`LedgerClient::settlement_of`].
    #[error("replay: the batch root is already settled")]
    Replay,
    /// `InvalidNonce(expected, got)`.
    #[error("batch nonce {got}, the ledger expects {expected}")]
    InvalidNonce {
        /// The payer's next batch nonce.
        expected: u64,
        /// The nonce that was signed.
        got: u64,
    },
    /// `BadSignature()`: the batch signature does not recover to the payer.
    #[error("the batch signature is not the payer's")]
    BadSignature,
    /// `InsufficientDeposit(have, need)`.
    #[error("the payer's deposit is {have} wei, the batch needs {need} wei")]
    InsufficientDeposit {
        /// The payer's deposit.
        have: U256,
        /// The batch total.
        need: U256,
    },
    /// `LengthMismatch()`: payees and amounts differ in length.
    #[error("payees and amounts differ in length")]
    LengthMismatch,
    /// `EmptyBatch()`: no receipts or no payouts.
    #[error("empty batch")]
    EmptyBatch,
    /// `ZeroAddress()`: a payee is the zero address.
    #[error("a payee is the zero address")]
    ZeroAddress,
    /// `NothingToWithdraw()`.
    #[error("nothing to withdraw")]
    NothingToWithdraw,
    /// `TransferFailed()`.
    #[error("the ether transfer failed")]
    TransferFailed,
    /// `Reentrancy()`.
    #[error("reentrant call")]
    Reentrancy,
    /// `AmountTooLarge()`.
    #[error("amount too large")]
    AmountTooLarge,
    /// `AlreadyRegistered()`: the model or adapter id already has an owner.
    #[error("the id is already registered to an owner")]
    AlreadyRegistered,
    /// `NotOwner()`: only the registered owner may transfer an id.
    #[error("the sender does not own this id")]
    NotOwner,
    /// The transaction needs more gas than the limit set with [`LedgerClient::with_gas_limit`].
    #[error("{what} ran out of gas (limit {limit})")]
    OutOfGas {
        /// The operation.
        what: String,
        /// The gas limit.
        limit: u64,
    },
    /// Any other revert (another custom error, a failed transaction or a deployment).
    #[error("{what} reverted: {reason}")]
    Reverted {
        /// The operation.
        what: String,
        /// The revert data or reason.
        reason: String,
    },
}

impl ChainError {
    fn from_ledger_error(e: TributeLedger::TributeLedgerErrors) -> Self {
        use TributeLedger::TributeLedgerErrors as E;
        match e {
            E::Replay(_) => ChainError::Replay,
            E::InvalidNonce(n) => ChainError::InvalidNonce {
                expected: n.expected,
                got: n.got,
            },
            E::BadSignature(_) => ChainError::BadSignature,
            E::InsufficientDeposit(d) => ChainError::InsufficientDeposit {
                have: d.have,
                need: d.need,
            },
            E::LengthMismatch(_) => ChainError::LengthMismatch,
            E::EmptyBatch(_) => ChainError::EmptyBatch,
            E::ZeroAddress(_) => ChainError::ZeroAddress,
            E::NothingToWithdraw(_) => ChainError::NothingToWithdraw,
            E::TransferFailed(_) => ChainError::TransferFailed,
            E::Reentrancy(_) => ChainError::Reentrancy,
            E::AmountTooLarge(_) => ChainError::AmountTooLarge,
            E::AlreadyRegistered(_) => ChainError::AlreadyRegistered,
            E::NotOwner(_) => ChainError::NotOwner,
        }
    }

    /// Maps an error of a contract call: a ledger custom error becomes its typed variant,
    /// other reverts [`ChainError::Reverted`], anything else [`ChainError::Rpc`].
    pub fn from_contract(url: &str, what: &str, e: alloy::contract::Error) -> Self {
        if let Some(decoded) = e.as_decoded_interface_error::<TributeLedger::TributeLedgerErrors>()
        {
            return Self::from_ledger_error(decoded);
        }
        if let Some(data) = e.as_revert_data() {
            return ChainError::Reverted {
                what: what.into(),
                reason: data.to_string(),
            };
        }
        ChainError::Rpc {
            url: url.into(),
            message: format!("{what}: {e}"),
        }
    }
}

/// A settled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The batch's Merkle root.
    pub root: B256,
    /// The payer.
    pub payer: Address,
    /// Σ payouts, debited from the payer's deposit.
    pub total: U256,
    /// The batch nonce it was settled with.
    pub batch_nonce: u64,
    /// The settling transaction.
    pub tx_hash: B256,
    /// Its block.
    pub block_number: Option<u64>,
    /// The gas it used.
    pub gas_used: u64,
    /// The number of payees (from the `BatchSettled` event).
    pub payee_count: u64,
    /// True when the root was already settled and nothing was sent.
    pub already_settled: bool,
}

/// The Merkle tree of a batch: receipt leaves sorted ascending (duplicates refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTree {
    leaves: Vec<B256>,
    tree: MerkleTree,
}

impl BatchTree {
    /// Builds the tree of these leaves (any order); `None` for none.
    pub fn new(mut leaves: Vec<B256>) -> Option<Self> {
        leaves.sort_unstable();
        let tree = MerkleTree::new(leaves.clone())?;
        Some(BatchTree { leaves, tree })
    }

    /// The tree of these receipts' leaves on `ledger` (signatures are not checked).
    pub fn of_receipts(receipts: &[SignedReceipt], ledger: &Ledger) -> Option<Self> {
        Self::new(receipts.iter().map(|r| r.leaf(ledger)).collect())
    }

    /// The root.
    pub fn root(&self) -> B256 {
        self.tree.root()
    }

    /// The sorted leaves.
    pub fn leaves(&self) -> &[B256] {
        &self.leaves
    }

    /// The inclusion proof of `leaf`, if it is in the tree.
    pub fn proof(&self, leaf: B256) -> Option<Vec<B256>> {
        let i = self.leaves.binary_search(&leaf).ok()?;
        self.tree.proof(i)
    }
}

/// A client of one `TributeLedger` deployment, sending from one account.
#[derive(Debug, Clone)]
pub struct LedgerClient {
    provider: DynProvider,
    contract: TributeLedgerInstance<DynProvider>,
    ledger: Ledger,
    sender: Address,
    url: String,
    timeout: Duration,
    gas_limit: Option<u64>,
}

/// A batch checked off chain and ready to be authorised: its root, total and payouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedBatch {
    /// The payer whose receipts these are.
    pub payer: Address,
    /// The Merkle root of the receipts' leaves ([`BatchTree`]).
    pub root: B256,
    /// Σ payouts = Σ receipt fees.
    pub total: U256,
    /// Who is paid what.
    pub payouts: Vec<(Address, U256)>,
    /// How many receipts.
    pub receipts: usize,
}

/// A prepared batch with the payer's signature for the ledger's current batch nonce, its
/// `settleBatch` simulated successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedBatch {
    /// The batch.
    pub batch: PreparedBatch,
    /// The payer's batch nonce it is signed for.
    pub batch_nonce: u64,
    /// The payer's EIP-712 signature over [`SettleBatch`].
    pub signature: Signature,
}

fn connect_provider(rpc_url: &str, signer: PrivateKeySigner) -> Result<DynProvider, ChainError> {
    let rpc_err = |message: String| ChainError::Rpc {
        url: rpc_url.into(),
        message,
    };
    let url: reqwest::Url = rpc_url
        .parse()
        .map_err(|e| rpc_err(format!("invalid URL: {e}")))?;
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(DEFAULT_TIMEOUT)
        .build()
        .map_err(|e| rpc_err(format!("HTTP client: {e}")))?;
    let client = RpcClient::builder().http_with_client(http, url);
    Ok(ProviderBuilder::new()
        .with_simple_nonce_management()
        .wallet(EthereumWallet::from(signer))
        .connect_client(client)
        .erased())
}

async fn timed<T, E: std::fmt::Display>(
    url: &str,
    what: &str,
    after: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, ChainError> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ChainError::Rpc {
            url: url.into(),
            message: format!("{what}: {e}"),
        }),
        Err(_) => Err(ChainError::Timeout {
            url: url.into(),
            what: what.into(),
            after,
        }),
    }
}

/// Whether a node's error message says the gas ran out ("out of gas" from geth,
/// "OutOfGas" from anvil/revm, "gas required exceeds allowance" from estimation).
fn is_out_of_gas(message: &str) -> bool {
    let squashed: String = message
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    squashed.contains("outofgas") || squashed.contains("gasrequiredexceeds")
}

/// Deploys a `TributeLedger` (the bytecode of `contracts/artifacts/TributeLedger.json`) from
/// `signer`'s account and returns its [`Ledger`] (the node's chain id and the new address).
pub async fn deploy(rpc_url: &str, signer: PrivateKeySigner) -> Result<Ledger, ChainError> {
    let provider = connect_provider(rpc_url, signer)?;
    let chain_id = timed(
        rpc_url,
        "eth_chainId",
        DEFAULT_TIMEOUT,
        provider.get_chain_id(),
    )
    .await?;
    let builder = TributeLedger::deploy_builder(provider.clone());
    let pending = timed(rpc_url, "deploy", DEFAULT_TIMEOUT, builder.send()).await?;
    let receipt = timed(
        rpc_url,
        "deployment receipt",
        DEFAULT_TIMEOUT,
        pending.with_timeout(Some(DEFAULT_TIMEOUT)).get_receipt(),
    )
    .await?;
    let contract = match (receipt.status(), receipt.contract_address) {
        (true, Some(a)) => a,
        _ => {
            return Err(ChainError::Reverted {
                what: "deploy".into(),
                reason: format!("transaction {}", receipt.transaction_hash),
            });
        }
    };
    Ok(Ledger { chain_id, contract })
}

impl LedgerClient {
    /// Connects to the ledger at `rpc_url`, sending from `signer`'s account; checks that the
    /// node serves `ledger.chain_id` ([`ChainError::WrongChain`]) and that there is code at
    /// `ledger.contract` ([`ChainError::UnknownContract`]).
    pub async fn connect(
        rpc_url: &str,
        signer: PrivateKeySigner,
        ledger: Ledger,
    ) -> Result<Self, ChainError> {
        let sender = signer.address();
        let provider = connect_provider(rpc_url, signer)?;
        let actual = timed(
            rpc_url,
            "eth_chainId",
            DEFAULT_TIMEOUT,
            provider.get_chain_id(),
        )
        .await?;
        if actual != ledger.chain_id {
            return Err(ChainError::WrongChain {
                expected: ledger.chain_id,
                actual,
            });
        }
        let code: Bytes = timed(
            rpc_url,
            "eth_getCode",
            DEFAULT_TIMEOUT,
            provider.get_code_at(ledger.contract).into_future(),
        )
        .await?;
        if code.is_empty() {
            return Err(ChainError::UnknownContract {
                address: ledger.contract,
                chain_id: ledger.chain_id,
            });
        }
        let contract = TributeLedger::new(ledger.contract, provider.clone());
        Ok(LedgerClient {
            provider,
            contract,
            ledger,
            sender,
            url: rpc_url.into(),
            timeout: DEFAULT_TIMEOUT,
            gas_limit: None,
        })
    }

    /// Caps the gas of every transaction (default: estimated by the node). A transaction
    /// that needs more fails with [`ChainError::OutOfGas`], found by simulation before it
    /// is sent.
    pub fn with_gas_limit(mut self, limit: Option<u64>) -> Self {
        self.gas_limit = limit;
        self
    }

    /// Sets the timeout of each request and of each wait for a transaction receipt (the
    /// HTTP client's own limit stays at [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The sending account.
    pub fn sender(&self) -> Address {
        self.sender
    }

    /// The node's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The contract binding, for raw calls (map their errors with
    /// [`ChainError::from_contract`]).
    pub fn contract(&self) -> &TributeLedgerInstance<DynProvider> {
        &self.contract
    }

    /// The provider.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    async fn view<D: CallDecoder>(
        &self,
        what: &str,
        call: CallBuilder<&DynProvider, D>,
    ) -> Result<D::CallOutput, ChainError> {
        match tokio::time::timeout(self.timeout, call.call().into_future()).await {
            Ok(r) => r.map_err(|e| ChainError::from_contract(&self.url, what, e)),
            Err(_) => Err(self.timeout_err(what)),
        }
    }

    fn timeout_err(&self, what: &str) -> ChainError {
        ChainError::Timeout {
            url: self.url.clone(),
            what: what.into(),
            after: self.timeout,
        }
    }

    fn contract_err(&self, what: &str, e: alloy::contract::Error) -> ChainError {
        let err = ChainError::from_contract(&self.url, what, e);
        match (self.gas_limit, &err) {
            (
                Some(limit),
                ChainError::Rpc { message, .. }
                | ChainError::Reverted {
                    reason: message, ..
                },
            ) if is_out_of_gas(message) => ChainError::OutOfGas {
                what: what.into(),
                limit,
            },
            _ => err,
        }
    }

    /// Simulates `call` with `eth_call` under the gas cap, if any: a revert becomes a typed
    /// error. An untyped revert under a cap is checked once more without it: if the call
    /// then succeeds, the cap was too small ([`ChainError::OutOfGas`]); this catches an
    /// inner call that ran out of gas (e.g. the `ecrecover` precompile, whose failure
    /// reverts without data) as well as the node's own "out of gas" messages.
    async fn simulate<D: CallDecoder + Clone>(
        &self,
        what: &str,
        call: &CallBuilder<&DynProvider, D>,
    ) -> Result<(), ChainError> {
        let Some(limit) = self.gas_limit else {
            return match tokio::time::timeout(self.timeout, call.call_raw().into_future()).await {
                Ok(r) => r
                    .map(drop)
                    .map_err(|e| ChainError::from_contract(&self.url, what, e)),
                Err(_) => Err(self.timeout_err(what)),
            };
        };
        let capped = call.clone().gas(limit);
        let err = match tokio::time::timeout(self.timeout, capped.call_raw().into_future()).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => self.contract_err(what, e),
            Err(_) => return Err(self.timeout_err(what)),
        };
        if matches!(err, ChainError::Reverted { .. })
            && let Ok(Ok(_)) =
                tokio::time::timeout(self.timeout, call.call_raw().into_future()).await
        {
            return Err(ChainError::OutOfGas {
                what: what.into(),
                limit,
            });
        }
        Err(err)
    }

    /// Simulates `call` with `eth_call` (a revert becomes a typed error and nothing is
    /// sent), then sends it; returns the transaction hash.
    async fn send_checked<D: CallDecoder + Clone>(
        &self,
        what: &str,
        call: CallBuilder<&DynProvider, D>,
    ) -> Result<B256, ChainError> {
        self.simulate(what, &call).await?;
        let call = match self.gas_limit {
            Some(limit) => call.gas(limit),
            None => call,
        };
        let pending = match tokio::time::timeout(self.timeout, call.send()).await {
            Ok(r) => r.map_err(|e| self.contract_err(what, e))?,
            Err(_) => return Err(self.timeout_err(what)),
        };
        Ok(*pending.tx_hash())
    }

    /// Waits (polling, up to the timeout) for the receipt of transaction `tx`; a mined
    /// revert is [`ChainError::Reverted`] (or [`ChainError::OutOfGas`] when it used the
    /// whole gas limit).
    pub async fn wait_for(&self, what: &str, tx: B256) -> Result<TransactionReceipt, ChainError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(20);
        let receipt = loop {
            let got = timed(
                &self.url,
                "eth_getTransactionReceipt",
                self.timeout,
                self.provider.get_transaction_receipt(tx),
            )
            .await?;
            if let Some(r) = got {
                break r;
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(self.timeout_err(&format!("{what} receipt")));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        };
        if !receipt.status() {
            if self.gas_limit == Some(receipt.gas_used) {
                return Err(ChainError::OutOfGas {
                    what: what.into(),
                    limit: receipt.gas_used,
                });
            }
            return Err(ChainError::Reverted {
                what: what.into(),
                reason: format!("transaction {} failed", receipt.transaction_hash),
            });
        }
        Ok(receipt)
    }

    /// Simulates, sends and waits for `call`.
    async fn transact<D: CallDecoder + Clone>(
        &self,
        what: &str,
        call: CallBuilder<&DynProvider, D>,
    ) -> Result<TransactionReceipt, ChainError> {
        let tx = self.send_checked(what, call).await?;
        self.wait_for(what, tx).await
    }

    /// Deposits `amount` wei for the sender (as a payer).
    pub async fn deposit(&self, amount: U256) -> Result<B256, ChainError> {
        let r = self
            .transact("deposit", self.contract.deposit().value(amount))
            .await?;
        Ok(r.transaction_hash)
    }

    /// A payer's deposit in wei.
    pub async fn deposits(&self, payer: Address) -> Result<U256, ChainError> {
        self.view("deposits", self.contract.deposits(payer)).await
    }

    /// A payee's withdrawable balance in wei.
    pub async fn balance(&self, payee: Address) -> Result<U256, ChainError> {
        self.view("balances", self.contract.balances(payee)).await
    }

    /// A payer's next batch nonce.
    pub async fn batch_nonce(&self, payer: Address) -> Result<u64, ChainError> {
        self.view("batchNonces", self.contract.batchNonces(payer))
            .await
    }

    /// Whether a root is settled: a `BatchSettled` event with this root exists
    /// (`eth_getLogs`).
    pub async fn is_settled(&self, root: B256) -> Result<bool, ChainError> {
        Ok(self.settled_log_tx(root).await?.is_some())
    }

    /// The root of the payer's latest settled batch (`lastRoot(payer)`; zero before its
    /// first batch). One storage read: a cheap check for the batch just settled, while
    /// [`LedgerClient::is_settled`] finds any root.
    pub async fn last_root(&self, payer: Address) -> Result<B256, ChainError> {
        self.view("lastRoot", self.contract.lastRoot(payer)).await
    }

    /// The contract's EIP-712 digest of a receipt (`hashReceipt`; equals
    /// [`UsageReceipt::digest`]).
    pub async fn hash_receipt(&self, receipt: &UsageReceipt) -> Result<B256, ChainError> {
        self.view(
            "hashReceipt",
            self.contract.hashReceipt(to_contract_receipt(receipt)),
        )
        .await
    }

    /// Whether `leaf` with `proof` leads to `root`, checked by the contract
    /// (`verifyReceipt`).
    pub async fn verify_inclusion(
        &self,
        leaf: B256,
        proof: &[B256],
        root: B256,
    ) -> Result<bool, ChainError> {
        self.view(
            "verifyReceipt",
            self.contract.verifyReceipt(leaf, proof.to_vec(), root),
        )
        .await
    }

    /// Withdraws the sender's whole balance as a payee; returns the amount.
    pub async fn withdraw(&self) -> Result<U256, ChainError> {
        let r = self.transact("withdraw", self.contract.withdraw()).await?;
        Ok(r.logs()
            .iter()
            .find_map(|l| l.log_decode::<TributeLedger::Withdrawn>().ok())
            .map(|l| l.inner.data.amount)
            .unwrap_or_default())
    }

    /// Settles a batch of receipts owed by `payer` with these payouts (see the module
    /// documentation for the checks). Idempotent: an already settled batch is returned with
    /// `already_settled: true` and nothing is sent.
    pub async fn settle(
        &self,
        payer: &PayerKey,
        receipts: &[SignedReceipt],
        payouts: &[(Address, U256)],
    ) -> Result<Settlement, ChainError> {
        let batch = self.prepare(payer.address(), receipts, payouts)?;
        if let Some(done) = self.settlement_of(batch.root).await? {
            return Ok(done);
        }
        let root = batch.root;
        let authorized = match self.authorize(payer, batch).await {
            Ok(a) => a,
            Err(ChainError::Replay) => return self.existing_settlement(root).await,
            Err(e) => return Err(e),
        };
        let tx = match self.send_batch(&authorized).await {
            Ok(tx) => tx,
            Err(ChainError::Replay) => return self.existing_settlement(root).await,
            Err(e) => return Err(e),
        };
        self.wait_settlement(&authorized, tx).await
    }

    /// Checks a batch off chain (no RPC): every receipt verifies on this ledger, is owed by
    /// `payer` and appears once; payouts go to non-zero addresses and sum exactly to the
    /// receipts' fees. Returns the batch with its root (receipt order does not matter).
    pub fn prepare(
        &self,
        payer: Address,
        receipts: &[SignedReceipt],
        payouts: &[(Address, U256)],
    ) -> Result<PreparedBatch, ChainError> {
        if receipts.is_empty() || payouts.is_empty() {
            return Err(ChainError::EmptyBatch);
        }
        if payouts.iter().any(|(a, _)| *a == Address::ZERO) {
            return Err(ChainError::ZeroAddress);
        }
        let mut seen = HashSet::with_capacity(receipts.len());
        let mut leaves = Vec::with_capacity(receipts.len());
        let mut fees = U256::ZERO;
        for (index, r) in receipts.iter().enumerate() {
            let digest = r
                .verify(&self.ledger)
                .map_err(|source| ChainError::InvalidReceipt { index, source })?;
            if r.receipt.payer != payer {
                return Err(ChainError::WrongPayer {
                    index,
                    payer: r.receipt.payer,
                    key: payer,
                });
            }
            if !seen.insert(digest) {
                return Err(ChainError::DuplicateReceipt(r.receipt.receiptId));
            }
            fees = fees
                .checked_add(r.receipt.fee)
                .ok_or(ChainError::Overflow)?;
            leaves.push(crate::receipt::receipt_leaf(digest));
        }
        let total = payouts
            .iter()
            .try_fold(U256::ZERO, |acc, (_, a)| acc.checked_add(*a))
            .ok_or(ChainError::Overflow)?;
        if total != fees {
            return Err(ChainError::PayoutMismatch {
                fees,
                payouts: total,
            });
        }
        let root = BatchTree::new(leaves).ok_or(ChainError::EmptyBatch)?.root();
        Ok(PreparedBatch {
            payer,
            root,
            total,
            payouts: payouts.to_vec(),
            receipts: receipts.len(),
        })
    }

    /// The settlement of `root` if it is settled (from its first `BatchSettled` event, with
    /// `already_settled: true`), `None` if it is not.
    pub async fn settlement_of(&self, root: B256) -> Result<Option<Settlement>, ChainError> {
        match self.settled_log_tx(root).await? {
            Some(tx) => self.settlement_in(root, tx).await.map(Some),
            None => Ok(None),
        }
    }

    /// Reads the payer's batch nonce, signs the [`SettleBatch`] with `payer` and simulates
    /// `settleBatch`, so that every contract check (deposit, nonce, signature, replay)
    /// fails here, typed, before anything is sent. An already settled root is
    /// [`ChainError::Replay`], also when the simulation says `InvalidNonce` because the nonce
    /// moved on since it was read and the root's `BatchSettled` event exists.
    pub async fn authorize(
        &self,
        payer: &PayerKey,
        batch: PreparedBatch,
    ) -> Result<AuthorizedBatch, ChainError> {
        let key = payer.address();
        if key != batch.payer {
            return Err(ChainError::WrongPayer {
                index: 0,
                payer: batch.payer,
                key,
            });
        }
        let batch_nonce = self.batch_nonce(key).await?;
        let (payees, amounts): (Vec<Address>, Vec<U256>) = batch.payouts.iter().copied().unzip();
        let message = SettleBatch {
            payer: key,
            root: batch.root,
            total: batch.total,
            payoutsHash: payouts_hash(&payees, &amounts),
            batchNonce: batch_nonce,
        };
        let signature = payer
            .sign_batch(&message, &self.ledger)
            .map_err(ChainError::Signing)?;
        let call = self.settle_call(&batch, batch_nonce, &signature);
        if let Err(e) = self.simulate("settleBatch", &call).await {
            return Err(self.settle_error(batch.root, e).await);
        }
        Ok(AuthorizedBatch {
            batch,
            batch_nonce,
            signature,
        })
    }

    fn settle_call(
        &self,
        batch: &PreparedBatch,
        batch_nonce: u64,
        signature: &Signature,
    ) -> CallBuilder<&DynProvider, std::marker::PhantomData<TributeLedger::settleBatchCall>> {
        let (payees, amounts): (Vec<Address>, Vec<U256>) = batch.payouts.iter().copied().unzip();
        self.contract.settleBatch(
            batch.payer,
            batch.root,
            payees,
            amounts,
            batch_nonce,
            Bytes::from(signature.as_bytes().to_vec()),
        )
    }

    /// Sends an authorised batch (simulated again first); returns the transaction hash
    /// without waiting for it to be mined. A root settled since it was authorised is
    /// [`ChainError::Replay`].
    pub async fn send_batch(&self, batch: &AuthorizedBatch) -> Result<B256, ChainError> {
        let call = self.settle_call(&batch.batch, batch.batch_nonce, &batch.signature);
        match self.send_checked("settleBatch", call).await {
            Ok(tx) => Ok(tx),
            Err(e) => Err(self.settle_error(batch.batch.root, e).await),
        }
    }

    /// What a failed `settleBatch` for `root` means to a settler: an `InvalidNonce` for a
    /// root that is settled (the nonce moved on because this very batch landed, sent by
    /// another settler or an earlier try) is [`ChainError::Replay`]; anything else is
    /// returned as is. Costs one `eth_getLogs`, on `InvalidNonce` only; if that lookup
    /// fails, the `InvalidNonce` is returned.
    async fn settle_error(&self, root: B256, err: ChainError) -> ChainError {
        match err {
            ChainError::InvalidNonce { .. } => match self.settled_log_tx(root).await {
                Ok(Some(_)) => ChainError::Replay,
                _ => err,
            },
            err => err,
        }
    }

    /// Waits for a sent batch's transaction and returns its settlement.
    pub async fn wait_settlement(
        &self,
        batch: &AuthorizedBatch,
        tx: B256,
    ) -> Result<Settlement, ChainError> {
        let receipt = self.wait_for("settleBatch", tx).await?;
        settlement_from_receipt(&receipt, batch.batch.root, false).ok_or_else(|| {
            ChainError::Reverted {
                what: "settleBatch".into(),
                reason: format!(
                    "transaction {} emitted no BatchSettled event",
                    receipt.transaction_hash
                ),
            }
        })
    }

    /// Submits an already signed batch as is (no off-chain checks): simulates, sends, waits.
    /// [`LedgerClient::settle`] is the checked path; this one exists for settlers that
    /// relay batches signed elsewhere, and for tests of the contract's own checks.
    pub async fn submit_batch(
        &self,
        payer: Address,
        root: B256,
        payouts: &[(Address, U256)],
        batch_nonce: u64,
        signature: &Signature,
    ) -> Result<Settlement, ChainError> {
        let total = payouts
            .iter()
            .fold(U256::ZERO, |acc, (_, a)| acc.saturating_add(*a));
        let batch = AuthorizedBatch {
            batch: PreparedBatch {
                payer,
                root,
                total,
                payouts: payouts.to_vec(),
                receipts: 0,
            },
            batch_nonce,
            signature: *signature,
        };
        let tx = self.send_batch(&batch).await?;
        self.wait_settlement(&batch, tx).await
    }

    /// The owner registered for a model id on the ledger (`None` when unregistered).
    pub async fn model_owner(&self, model_id: B256) -> Result<Option<Address>, ChainError> {
        let a = self
            .view("modelOwner", self.contract.modelOwner(model_id))
            .await?;
        Ok((a != Address::ZERO).then_some(a))
    }

    /// The owner registered for an adapter id on the ledger (`None` when unregistered).
    pub async fn adapter_owner(&self, adapter_id: B256) -> Result<Option<Address>, ChainError> {
        let a = self
            .view("adapterOwner", self.contract.adapterOwner(adapter_id))
            .await?;
        Ok((a != Address::ZERO).then_some(a))
    }

    /// Registers `model_id` to `owner` (first come, first served).
    pub async fn register_model(&self, model_id: B256, owner: Address) -> Result<B256, ChainError> {
        let r = self
            .transact(
                "registerModel",
                self.contract.registerModel(model_id, owner),
            )
            .await?;
        Ok(r.transaction_hash)
    }

    /// Registers `adapter_id` to `owner` (first come, first served).
    pub async fn register_adapter(
        &self,
        adapter_id: B256,
        owner: Address,
    ) -> Result<B256, ChainError> {
        let r = self
            .transact(
                "registerAdapter",
                self.contract.registerAdapter(adapter_id, owner),
            )
            .await?;
        Ok(r.transaction_hash)
    }

    /// The transaction of the first `BatchSettled` event of `root` on this ledger, if any
    /// (`eth_getLogs` by contract address, event signature and root topic, from block 0).
    async fn settled_log_tx(&self, root: B256) -> Result<Option<B256>, ChainError> {
        let filter = Filter::new()
            .address(self.ledger.contract)
            .event_signature(TributeLedger::BatchSettled::SIGNATURE_HASH)
            .topic2(root)
            .from_block(0);
        let logs = timed(
            &self.url,
            "eth_getLogs",
            self.timeout,
            self.provider.get_logs(&filter),
        )
        .await?;
        // Logs come in chain order; a pending log has no transaction hash yet.
        Ok(logs.iter().find_map(|l| l.transaction_hash))
    }

    /// The settlement of an already settled root, from its `BatchSettled` event.
    async fn existing_settlement(&self, root: B256) -> Result<Settlement, ChainError> {
        let tx = self
            .settled_log_tx(root)
            .await?
            .ok_or_else(|| self.event_not_found(root))?;
        self.settlement_in(root, tx).await
    }

    /// The settlement of `root` in transaction `tx` (its receipt's `BatchSettled` event).
    async fn settlement_in(&self, root: B256, tx: B256) -> Result<Settlement, ChainError> {
        let receipt = timed(
            &self.url,
            "eth_getTransactionReceipt",
            self.timeout,
            self.provider.get_transaction_receipt(tx),
        )
        .await?
        .ok_or_else(|| self.event_not_found(root))?;
        settlement_from_receipt(&receipt, root, true).ok_or_else(|| self.event_not_found(root))
    }

    fn event_not_found(&self, root: B256) -> ChainError {
        ChainError::Rpc {
            url: self.url.clone(),
            message: format!("root {root} is settled but its BatchSettled event was not found"),
        }
    }
}

fn settlement_from_receipt(
    receipt: &TransactionReceipt,
    root: B256,
    already_settled: bool,
) -> Option<Settlement> {
    let ev = receipt.logs().iter().find_map(|l| {
        l.log_decode::<TributeLedger::BatchSettled>()
            .ok()
            .filter(|e| e.inner.data.root == root)
    })?;
    let e = &ev.inner.data;
    Some(Settlement {
        root,
        payer: e.payer,
        total: e.total,
        batch_nonce: e.batchNonce,
        tx_hash: receipt.transaction_hash,
        block_number: receipt.block_number,
        gas_used: receipt.gas_used,
        payee_count: e.payeeCount.saturating_to(),
        already_settled,
    })
}

/// The contract binding's copy of a receipt.
fn to_contract_receipt(r: &UsageReceipt) -> TributeLedger::UsageReceipt {
    TributeLedger::UsageReceipt {
        version: r.version,
        receiptId: r.receiptId,
        payer: r.payer,
        servingNode: r.servingNode,
        modelId: r.modelId,
        adapters: r
            .adapters
            .iter()
            .map(|a| TributeLedger::AdapterUse {
                adapterId: a.adapterId,
                weightMicros: a.weightMicros,
            })
            .collect(),
        queryHash: r.queryHash,
        answerHash: r.answerHash,
        chunks: r
            .chunks
            .iter()
            .map(|c| TributeLedger::CitedChunk {
                contentHash: c.contentHash,
                contributor: c.contributor,
                weightBps: c.weightBps,
            })
            .collect(),
        fee: r.fee,
        nonce: r.nonce,
        timestamp: r.timestamp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_tree_is_order_independent_and_proves() {
        let leaves: Vec<B256> = (0u8..5).map(|i| B256::repeat_byte(i + 1)).collect();
        let mut rev = leaves.clone();
        rev.reverse();
        let a = BatchTree::new(leaves.clone()).expect("tree");
        let b = BatchTree::new(rev).expect("tree");
        assert_eq!(a.root(), b.root());
        for l in &leaves {
            let p = a.proof(*l).expect("proof");
            assert!(crate::receipt::verify_proof(*l, &p, a.root()));
        }
        assert!(a.proof(B256::repeat_byte(0xee)).is_none());
    }

    #[test]
    fn bad_url_is_an_rpc_error() {
        let e = connect_provider("not a url", PrivateKeySigner::random()).expect_err("bad url");
        assert!(matches!(e, ChainError::Rpc { .. }), "{e}");
    }
}
