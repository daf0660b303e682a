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
//! The contract records the block of every settlement in `settledAt(payer, root)`
//! ([`LedgerClient::settled_at`], [`LedgerClient::is_settled`]) and refuses a settled root
//! with `Replay()`, whatever nonce it is signed for: no batch pays twice, even when a settler
//! lost track of it. [`LedgerClient::settlement_of`] reads that slot and then fetches the
//! root's `BatchSettled` event from that one block. A simulation that fails with
//! `InvalidNonce` for a root that turns out to be settled (another settler got there first)
//! is reported as [`ChainError::Replay`] too, so a settler only has one case to handle.
//!
//! Every RPC request has a timeout ([`LedgerClient::with_timeout`], default 30 s; the HTTP
//! client also has a 5 s connect timeout), so an unreachable node is a prompt
//! [`ChainError::Rpc`] naming the URL, never a hang.

mod client;
mod contract;
mod error;
mod registry;
mod settlement;

use std::time::Duration;

use alloy::primitives::Address;
use alloy::providers::DynProvider;

use crate::receipt::Ledger;

pub use contract::TributeLedger;
pub use contract::TributeLedger::TributeLedgerInstance;
pub use error::ChainError;
pub use registry::deploy;
pub use settlement::{AuthorizedBatch, BatchTree, EVENT_SLACK_BLOCKS, PreparedBatch, Settlement};

/// The default timeout of one RPC request or of a wait for a transaction receipt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
