//! Connecting to a ledger, and the RPC plumbing every operation goes through: views,
//! simulation, sending and waiting, each with a timeout.

use std::time::Duration;

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::reqwest;

use super::contract::{to_contract_receipt, to_contract_receipt_v2};
use super::error::is_out_of_gas;
use super::{
    CONNECT_TIMEOUT, ChainError, DEFAULT_TIMEOUT, LedgerClient, TributeLedger,
    TributeLedgerInstance,
};
use crate::receipt::{Ledger, UsageReceipt};

pub(super) fn connect_provider(
    rpc_url: &str,
    signer: PrivateKeySigner,
) -> Result<DynProvider, ChainError> {
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

/// The chain id the node at `rpc_url` serves.
pub(super) async fn chain_id_of(rpc_url: &str, provider: &DynProvider) -> Result<u64, ChainError> {
    timed(
        rpc_url,
        "eth_chainId",
        DEFAULT_TIMEOUT,
        provider.get_chain_id(),
    )
    .await
}

pub(super) async fn timed<T, E: std::fmt::Display>(
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
        let actual = chain_id_of(rpc_url, &provider).await?;
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

    pub(super) async fn view<D: CallDecoder>(
        &self,
        what: &str,
        call: CallBuilder<&DynProvider, D>,
    ) -> Result<D::CallOutput, ChainError> {
        match tokio::time::timeout(self.timeout, call.call().into_future()).await {
            Ok(r) => r.map_err(|e| ChainError::from_contract(&self.url, what, e)),
            Err(_) => Err(self.timeout_err(what)),
        }
    }

    pub(super) fn timeout_err(&self, what: &str) -> ChainError {
        ChainError::Timeout {
            url: self.url.clone(),
            what: what.into(),
            after: self.timeout,
        }
    }

    pub(super) fn contract_err(&self, what: &str, e: alloy::contract::Error) -> ChainError {
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
    pub(super) async fn simulate<D: CallDecoder + Clone>(
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
    pub(super) async fn send_checked<D: CallDecoder + Clone>(
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
    pub(super) async fn transact<D: CallDecoder + Clone>(
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

    /// Whether `payer`'s batch `root` is settled (one storage read).
    pub async fn is_settled(&self, payer: Address, root: B256) -> Result<bool, ChainError> {
        Ok(self.settled_at(payer, root).await?.is_some())
    }

    /// The block in which `payer`'s batch `root` was settled (`settledAt(payer, root)`),
    /// `None` if it is not settled.
    pub async fn settled_at(&self, payer: Address, root: B256) -> Result<Option<u64>, ChainError> {
        let block: U256 = self
            .view("settledAt", self.contract.settledAt(payer, root))
            .await?;
        // A block number past u64 is no real chain's; read it as the farthest block.
        Ok((!block.is_zero()).then(|| block.saturating_to()))
    }

    /// The contract's EIP-712 digest of a receipt (`hashReceipt` for version 1,
    /// `hashReceiptV2` from version 2; equals [`UsageReceipt::digest`]).
    pub async fn hash_receipt(&self, receipt: &UsageReceipt) -> Result<B256, ChainError> {
        if receipt.version == 1 {
            self.view(
                "hashReceipt",
                self.contract.hashReceipt(to_contract_receipt(receipt)),
            )
            .await
        } else {
            self.view(
                "hashReceiptV2",
                self.contract.hashReceiptV2(to_contract_receipt_v2(receipt)),
            )
            .await
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_url_is_an_rpc_error() {
        let e = connect_provider("not a url", PrivateKeySigner::random()).expect_err("bad url");
        assert!(matches!(e, ChainError::Rpc { .. }), "{e}");
    }
}
