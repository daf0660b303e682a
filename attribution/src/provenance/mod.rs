//! Provenance manifests of fine-tuned adapters: `provenance.json` beside a PEFT adapter
//! directory says which base model was tuned, how, and on which documents — by content
//! hash, contributor, datanet and training tokens — so that the adapter's share of every
//! fee can pay the data that trained it ([`crate::split`]).
//!
//! The manifest is **canonical JSON** (fields in declaration order, no whitespace, addresses
//! EIP-55, hashes 0x-hex, integers only: the learning rate is kept as the decimal text the
//! trainer was given, fractions are basis points). Its hash is `keccak256` of that JSON, as
//! for attribution records ([`crate::record`]) and every content hash receipts carry: one
//! hash function for everything the ledger compares, and the one the contract computes
//! natively. The trainer signs it with EIP-712 (see [`PROVENANCE_TYPE`]), like receipts.
//!
//! A trainer counts the tokens it trained on per document and calls
//! [`ProvenanceManifest::builder`]; [`ProvenanceManifest::sign`] signs the result,
//! [`SignedProvenance::write`] writes it beside the adapter, [`SignedProvenance::read`] and
//! [`SignedProvenance::verify`] check it (schema, shares, signature, adapter files).

mod files;

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, Signature, U256, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, eip712_domain, sol};
use serde::{Deserialize, Serialize};

use crate::receipt::PayerKey;
use crate::split::TrainingShare;

pub use files::{
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, PROVENANCE_FILE, VerifiedProvenance,
    verified_manifest,
};

/// The manifest schema written by this library.
pub const PROVENANCE_SCHEMA: u16 = 1;

/// The EIP-712 type the trainer signs; the domain is name "Tribute Provenance",
/// version "1" (no chain: a manifest holds on every chain the adapter is registered on).
pub const PROVENANCE_TYPE: &str = "AdapterProvenance(uint16 schema,address trainer,bytes32 manifestHash,bytes32 baseModelHash,bytes32 adapterConfigHash,bytes32 adapterWeightsHash,uint64 totalTokens)";

sol! {
    /// What the trainer signs: the manifest's hash and the fields a reader checks first.
    #[derive(Debug, PartialEq, Eq)]
    struct AdapterProvenance {
        uint16 schema;
        address trainer;
        bytes32 manifestHash;
        bytes32 baseModelHash;
        bytes32 adapterConfigHash;
        bytes32 adapterWeightsHash;
        uint64 totalTokens;
    }
}

/// Why a provenance manifest was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvenanceError {
    /// Reading or writing a file failed.
    #[error("provenance I/O on {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The JSON is malformed or a field does not parse.
    #[error("malformed provenance.json: {0}")]
    Json(String),
    /// The manifest has a schema this library does not read.
    #[error(
        "provenance schema {found} is unknown (this library reads schema {PROVENANCE_SCHEMA}): upgrade tribute"
    )]
    UnknownSchema {
        /// The schema in the file.
        found: u16,
    },
    /// The manifest lists no training documents.
    #[error("the provenance manifest lists no training documents: an adapter must name its data")]
    NoDocuments,
    /// The token counts or shares are inconsistent.
    #[error("the provenance shares do not add up: {0}")]
    SharesDoNotAddUp(String),
    /// A field is out of range (a learning rate that is not a positive number, say).
    #[error("invalid provenance manifest: {0}")]
    Invalid(String),
    /// An adapter file does not hash to what the manifest says.
    #[error(
        "{file} hashes to {actual}, but the manifest says {expected}: the adapter was changed after it was signed (or the manifest belongs to another adapter)"
    )]
    AdapterMismatch {
        /// The file name.
        file: String,
        /// The hash in the manifest.
        expected: B256,
        /// The hash of the file on disk.
        actual: B256,
    },
    /// The signature is unusable or does not recover to the manifest's trainer.
    #[error("bad provenance signature: {0}")]
    BadSignature(String),
}

/// `Result` of this module.
pub type Result<T, E = ProvenanceError> = std::result::Result<T, E>;

/// The base model that was fine-tuned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseModel {
    /// Its name (e.g. `HuggingFaceTB/SmolLM2-135M-Instruct`).
    pub id: String,
    /// keccak-256 of the model directory's manifest (as attribution records name models).
    pub hash: B256,
}

/// The adapter's files by keccak-256 of their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdapterHashes {
    /// `adapter_config.json`.
    pub config: B256,
    /// `adapter_model.safetensors`.
    pub weights: B256,
}

/// How the adapter was trained. Integers and text only (nothing hashed is a float).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingConfig {
    /// LoRA rank `r`.
    pub rank: u32,
    /// LoRA alpha.
    pub alpha: u32,
    /// LoRA dropout in basis points (500 = 0.05).
    pub dropout_bps: u16,
    /// The modules adapted (`q_proj`, `v_proj`…).
    pub target_modules: Vec<String>,
    /// The peak learning rate as decimal text, exactly as given (`"2e-4"`).
    pub learning_rate: String,
    /// The learning-rate schedule (`linear`, `cosine`, `constant`…).
    pub lr_schedule: String,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// Epochs asked for.
    pub epochs: u32,
    /// Optimiser steps actually run.
    pub steps: u64,
    /// Examples per step.
    pub batch_size: u32,
    /// The random seed.
    pub seed: u64,
    /// Longest example in tokens (longer ones are truncated, and counted truncated).
    pub max_length: u32,
    /// Share of the examples held out for evaluation, in basis points.
    pub eval_split_bps: u16,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            rank: 8,
            alpha: 16,
            dropout_bps: 500,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
            learning_rate: "2e-4".into(),
            lr_schedule: "linear".into(),
            warmup_steps: 0,
            epochs: 1,
            steps: 0,
            batch_size: 8,
            seed: 0,
            max_length: 512,
            eval_split_bps: 1_000,
        }
    }
}

/// One training document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingDocument {
    /// keccak-256 of the document's text (as receipts name cited chunks).
    pub content_hash: B256,
    /// Who contributed it.
    #[serde(with = "tribute_common::address::eip55")]
    pub contributor: Address,
    /// The datanet it came from.
    pub datanet: String,
    /// Tokens of it the adapter was trained on (after truncation, over all epochs'
    /// distinct examples: each example counted once).
    pub tokens: u64,
}

/// A contributor's total over its documents: what the reward split pays by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContributorTokens {
    /// The contributor.
    #[serde(with = "tribute_common::address::eip55")]
    pub address: Address,
    /// Its documents' tokens.
    pub tokens: u64,
    /// Its share of the training tokens in basis points, by largest remainder (the shares
    /// sum to 10,000; for display: the split pays by exact token counts).
    pub share_bps: u16,
}

/// The signed content of `provenance.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvenanceManifest {
    /// [`PROVENANCE_SCHEMA`].
    pub schema: u16,
    /// Who trained the adapter and signed this manifest.
    #[serde(with = "tribute_common::address::eip55")]
    pub trainer: Address,
    /// The base model.
    pub base_model: BaseModel,
    /// The adapter's files.
    pub adapter: AdapterHashes,
    /// How it was trained.
    pub training: TrainingConfig,
    /// Σ documents' tokens.
    pub total_tokens: u64,
    /// Per contributor, by ascending address.
    pub contributors: Vec<ContributorTokens>,
    /// The documents, by content hash.
    pub documents: Vec<TrainingDocument>,
}

impl ProvenanceManifest {
    /// Starts a manifest for an adapter of `base_model_id` (its directory manifest hashes
    /// to `base_model_hash`) trained by `trainer`.
    pub fn builder(
        base_model_id: impl Into<String>,
        base_model_hash: B256,
        trainer: Address,
    ) -> ProvenanceBuilder {
        ProvenanceBuilder {
            base_model: BaseModel {
                id: base_model_id.into(),
                hash: base_model_hash,
            },
            trainer,
            adapter: None,
            training: TrainingConfig::default(),
            documents: Vec::new(),
        }
    }

    /// The canonical JSON: fields in declaration order, no whitespace.
    pub fn to_json(&self) -> String {
        // Strings, integers and hashes always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// keccak-256 of [`to_json`](Self::to_json): what is registered with the adapter.
    pub fn hash(&self) -> B256 {
        keccak256(self.to_json().as_bytes())
    }

    /// The EIP-712 domain of provenance signatures.
    pub fn domain() -> Eip712Domain {
        eip712_domain! { name: "Tribute Provenance", version: "1", }
    }

    /// The EIP-712 digest the trainer signs.
    pub fn digest(&self) -> B256 {
        AdapterProvenance {
            schema: self.schema,
            trainer: self.trainer,
            manifestHash: self.hash(),
            baseModelHash: self.base_model.hash,
            adapterConfigHash: self.adapter.config,
            adapterWeightsHash: self.adapter.weights,
            totalTokens: self.total_tokens,
        }
        .eip712_signing_hash(&Self::domain())
    }

    /// Per contributor: its training tokens, for [`crate::split::SplitRequestBuilder::trained_adapter`].
    pub fn training_shares(&self) -> Vec<TrainingShare> {
        self.contributors
            .iter()
            .map(|c| TrainingShare {
                contributor: c.address,
                tokens: c.tokens,
            })
            .collect()
    }

    /// Checks the schema, the documents and that every total and share is what the
    /// documents give.
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::UnknownSchema`], [`ProvenanceError::NoDocuments`],
    /// [`ProvenanceError::SharesDoNotAddUp`], [`ProvenanceError::Invalid`].
    pub fn validate(&self) -> Result<()> {
        if self.schema != PROVENANCE_SCHEMA {
            return Err(ProvenanceError::UnknownSchema { found: self.schema });
        }
        if self.documents.is_empty() {
            return Err(ProvenanceError::NoDocuments);
        }
        validate_training(&self.training)?;
        if self.trainer == Address::ZERO {
            return Err(ProvenanceError::Invalid(
                "the trainer is the zero address".into(),
            ));
        }
        if let Some(d) = self
            .documents
            .iter()
            .find(|d| d.contributor == Address::ZERO)
        {
            return Err(ProvenanceError::Invalid(format!(
                "document {} has the zero address as contributor",
                d.content_hash
            )));
        }
        if !self
            .documents
            .windows(2)
            .all(|w| w[0].content_hash < w[1].content_hash)
        {
            return Err(ProvenanceError::Invalid(
                "documents must be sorted by content hash, each listed once".into(),
            ));
        }
        let (total, contributors) = contributor_totals(&self.documents)?;
        if total != self.total_tokens {
            return Err(ProvenanceError::SharesDoNotAddUp(format!(
                "the documents hold {total} tokens, the manifest says totalTokens {}",
                self.total_tokens
            )));
        }
        if contributors != self.contributors {
            return Err(ProvenanceError::SharesDoNotAddUp(
                "the per-contributor tokens or shares differ from what the documents give".into(),
            ));
        }
        Ok(())
    }

    /// Signs the manifest with the trainer's key.
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate), and [`ProvenanceError::BadSignature`] when the key
    /// is not the manifest's trainer.
    pub fn sign(self, key: &PayerKey) -> Result<SignedProvenance> {
        self.validate()?;
        if key.address() != self.trainer {
            return Err(ProvenanceError::BadSignature(format!(
                "the manifest's trainer is {}, the key is {}",
                self.trainer,
                key.address()
            )));
        }
        let signature = key.sign_digest(self.digest());
        Ok(SignedProvenance {
            manifest: self,
            signature,
        })
    }
}

fn validate_training(t: &TrainingConfig) -> Result<()> {
    let lr = t.learning_rate.trim().parse::<f64>().ok();
    if !lr.is_some_and(|lr| lr.is_finite() && lr > 0.0) {
        return Err(ProvenanceError::Invalid(format!(
            "learning rate {:?} is not a positive number",
            t.learning_rate
        )));
    }
    if t.rank == 0 || t.target_modules.is_empty() {
        return Err(ProvenanceError::Invalid(
            "a LoRA adapter needs a rank of at least 1 and at least one target module".into(),
        ));
    }
    if u32::from(t.dropout_bps) > tribute_common::TOTAL_BPS
        || u32::from(t.eval_split_bps) >= tribute_common::TOTAL_BPS
    {
        return Err(ProvenanceError::Invalid(
            "dropout must be at most 10000 bps and the eval split below 10000 bps".into(),
        ));
    }
    Ok(())
}

/// Σ tokens and the per-contributor totals with their basis-point shares (largest
/// remainder, ties to the lower address).
fn contributor_totals(documents: &[TrainingDocument]) -> Result<(u64, Vec<ContributorTokens>)> {
    let mut by_address: BTreeMap<Address, u64> = BTreeMap::new();
    let mut total: u64 = 0;
    let overflow = || ProvenanceError::SharesDoNotAddUp("the token counts overflow 64 bits".into());
    for d in documents {
        total = total.checked_add(d.tokens).ok_or_else(overflow)?;
        let t = by_address.entry(d.contributor).or_default();
        *t = t.checked_add(d.tokens).ok_or_else(overflow)?;
    }
    if total == 0 {
        return Err(ProvenanceError::SharesDoNotAddUp(
            "the documents hold 0 training tokens".into(),
        ));
    }
    let bps = U256::from(tribute_common::TOTAL_BPS);
    let total_u = U256::from(total);
    let mut rows: Vec<(Address, u64, U256, U256)> = by_address
        .into_iter()
        .map(|(a, t)| {
            let num = U256::from(t) * bps;
            (a, t, num / total_u, num % total_u)
        })
        .collect();
    let handed: U256 = rows.iter().map(|r| r.2).sum();
    let leftover = usize::try_from(bps - handed).unwrap_or(usize::MAX);
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| rows[b].3.cmp(&rows[a].3).then(a.cmp(&b)));
    for &i in order.iter().take(leftover) {
        rows[i].2 += U256::from(1_u8);
    }
    let contributors = rows
        .into_iter()
        .map(|(address, tokens, share, _)| ContributorTokens {
            address,
            tokens,
            // At most 10,000.
            share_bps: u16::try_from(share).unwrap_or(u16::MAX),
        })
        .collect();
    Ok((total, contributors))
}

/// Builds a [`ProvenanceManifest`] from what a trainer knows: the adapter's files, the
/// training config and the tokens trained per document.
#[derive(Debug, Clone)]
#[must_use = "call .build()"]
pub struct ProvenanceBuilder {
    base_model: BaseModel,
    trainer: Address,
    adapter: Option<AdapterHashes>,
    training: TrainingConfig,
    documents: Vec<TrainingDocument>,
}

impl ProvenanceBuilder {
    /// The adapter's file hashes (see [`AdapterHashes::of_dir`] to read them from disk).
    pub fn adapter(mut self, hashes: AdapterHashes) -> Self {
        self.adapter = Some(hashes);
        self
    }

    /// The training config.
    pub fn training(mut self, training: TrainingConfig) -> Self {
        self.training = training;
        self
    }

    /// A document, by the keccak-256 of its text, and the tokens trained on it. A document
    /// given twice (same content hash) is counted once per call, summed.
    pub fn document(
        mut self,
        content_hash: B256,
        contributor: Address,
        datanet: impl Into<String>,
        tokens: u64,
    ) -> Self {
        self.documents.push(TrainingDocument {
            content_hash,
            contributor,
            datanet: datanet.into(),
            tokens,
        });
        self
    }

    /// A document by its text (hashed with keccak-256).
    pub fn document_text(
        self,
        text: &str,
        contributor: Address,
        datanet: impl Into<String>,
        tokens: u64,
    ) -> Self {
        self.document(keccak256(text.as_bytes()), contributor, datanet, tokens)
    }

    /// The manifest: documents sorted by content hash (repeats merged; they must agree on
    /// contributor and datanet), totals and shares computed.
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::Invalid`] without adapter hashes or for a document named twice
    /// with different contributors, and what [`ProvenanceManifest::validate`] refuses.
    pub fn build(self) -> Result<ProvenanceManifest> {
        let adapter = self.adapter.ok_or_else(|| {
            ProvenanceError::Invalid("no adapter file hashes: call .adapter(…)".into())
        })?;
        let mut merged: BTreeMap<B256, TrainingDocument> = BTreeMap::new();
        for d in self.documents {
            match merged.get_mut(&d.content_hash) {
                Some(m) if m.contributor != d.contributor || m.datanet != d.datanet => {
                    return Err(ProvenanceError::Invalid(format!(
                        "document {} is listed with two contributors or datanets",
                        d.content_hash
                    )));
                }
                Some(m) => {
                    m.tokens = m.tokens.checked_add(d.tokens).ok_or_else(|| {
                        ProvenanceError::SharesDoNotAddUp(
                            "the token counts overflow 64 bits".into(),
                        )
                    })?;
                }
                None => {
                    merged.insert(d.content_hash, d);
                }
            }
        }
        let documents: Vec<TrainingDocument> = merged.into_values().collect();
        if documents.is_empty() {
            return Err(ProvenanceError::NoDocuments);
        }
        let (total_tokens, contributors) = contributor_totals(&documents)?;
        let manifest = ProvenanceManifest {
            schema: PROVENANCE_SCHEMA,
            trainer: self.trainer,
            base_model: self.base_model,
            adapter,
            training: self.training,
            total_tokens,
            contributors,
            documents,
        };
        manifest.validate()?;
        Ok(manifest)
    }
}

/// A manifest with the trainer's EIP-712 signature: the content of `provenance.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedProvenance {
    /// The manifest.
    pub manifest: ProvenanceManifest,
    /// The trainer's signature of [`ProvenanceManifest::digest`] (r ‖ s ‖ v).
    pub signature: Signature,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_type_string_is_the_signed_one() {
        assert_eq!(AdapterProvenance::eip712_encode_type(), PROVENANCE_TYPE);
    }

    #[test]
    fn shares_are_largest_remainder_basis_points() {
        let doc = |byte: u8, contributor: u8, tokens: u64| TrainingDocument {
            content_hash: B256::repeat_byte(byte),
            contributor: Address::repeat_byte(contributor),
            datanet: "facts".into(),
            tokens,
        };
        // 1 : 1 : 1 → 3333.3 each; the leftover basis point goes to the lowest address.
        let (total, rows) =
            contributor_totals(&[doc(1, 3, 5), doc(2, 1, 5), doc(3, 2, 5)]).expect("totals");
        assert_eq!(total, 15);
        let bps: Vec<(u8, u16)> = rows.iter().map(|r| (r.address.0[0], r.share_bps)).collect();
        assert_eq!(bps, [(1, 3_334), (2, 3_333), (3, 3_333)]);
        assert!(matches!(
            contributor_totals(&[doc(1, 1, u64::MAX), doc(2, 2, 1)]),
            Err(ProvenanceError::SharesDoNotAddUp(_))
        ));
        assert!(matches!(
            contributor_totals(&[doc(1, 1, 0)]),
            Err(ProvenanceError::SharesDoNotAddUp(_))
        ));
    }
}
