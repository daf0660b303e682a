//! Why an on-chain operation failed: the contract's custom errors, reverts, timeouts and
//! gas.

use std::time::Duration;

use alloy::primitives::{Address, B256, U256};

use super::TributeLedger;
use crate::receipt::ReceiptError;

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
    /// The batch root is already settled: `Replay()` (`settledAt(payer, root)` is set), or an
    /// `InvalidNonce` simulation for a root the ledger holds settled. Look the settlement up
    /// with [`LedgerClient::settlement_of`].
    #[error("replay: the batch root is already settled")]
    Replay,
    /// The ledger holds the batch settled in `block`, but the node has no `BatchSettled`
    /// event for it there, so there is no transaction to confirm it with. A real chain
    /// always has the event; a node that lost blocks but kept their state (an anvil
    /// restarted from a torn state dump), or one that prunes old logs, does not. The batch is
    /// paid: it must never be settled again.
    #[error(
        "batch {root}: the ledger says it was settled in block {block}, but the node has no BatchSettled event for it"
    )]
    SettledWithoutEvent {
        /// The batch root.
        root: B256,
        /// The block `settledAt(payer, root)` names.
        block: u64,
    },
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
    /// `ZeroManifest()`: a trained adapter was registered with a zero manifest hash.
    #[error("a trained adapter needs its provenance manifest hash, not zero")]
    ZeroManifest,
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
            E::ZeroManifest(_) => ChainError::ZeroManifest,
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

/// Whether a node's error message says the gas ran out ("out of gas" from geth,
/// "OutOfGas" from anvil/revm, "gas required exceeds allowance" from estimation).
pub(super) fn is_out_of_gas(message: &str) -> bool {
    let squashed: String = message
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    squashed.contains("outofgas") || squashed.contains("gasrequiredexceeds")
}
