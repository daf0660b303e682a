//! Deploying a ledger, and its registry of model and adapter owners.

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;

use super::client::{chain_id_of, connect_provider, timed};
use super::{ChainError, DEFAULT_TIMEOUT, LedgerClient, TributeLedger};
use crate::receipt::Ledger;

/// Deploys a `TributeLedger` (the bytecode of `contracts/artifacts/TributeLedger.json`) from
/// `signer`'s account and returns its [`Ledger`] (the node's chain id and the new address).
pub async fn deploy(rpc_url: &str, signer: PrivateKeySigner) -> Result<Ledger, ChainError> {
    let provider = connect_provider(rpc_url, signer)?;
    let chain_id = chain_id_of(rpc_url, &provider).await?;
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

    /// The provenance manifest hash registered with a fine-tuned adapter id (`None` when the
    /// adapter is unregistered or was registered without one).
    pub async fn adapter_manifest(&self, adapter_id: B256) -> Result<Option<B256>, ChainError> {
        let h = self
            .view("adapterManifest", self.contract.adapterManifest(adapter_id))
            .await?;
        Ok((!h.is_zero()).then_some(h))
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

    /// Registers the fine-tuned `adapter_id` to `owner` with `manifest_hash`, the keccak-256
    /// of its provenance manifest ([`crate::provenance::ProvenanceManifest::hash`]): settlers
    /// then pay the adapter's training contributors by that manifest. First come, first
    /// served; the hash is fixed for good.
    pub async fn register_trained_adapter(
        &self,
        adapter_id: B256,
        owner: Address,
        manifest_hash: B256,
    ) -> Result<B256, ChainError> {
        let r = self
            .transact(
                "registerTrainedAdapter",
                self.contract
                    .registerTrainedAdapter(adapter_id, owner, manifest_hash),
            )
            .await?;
        Ok(r.transaction_hash)
    }
}
