//! What to split: the request and its builder.

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use super::{IntoAddress, Result, Role, SplitError};

/// One cited source's share of the contributor pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contribution {
    /// Who contributed the source.
    #[serde(with = "tribute_common::address::eip55")]
    pub contributor: Address,
    /// Citation weight in basis points; the weights of a request sum to 10,000. The same
    /// contributor may appear several times (several chunks): weights are summed.
    pub weight_bps: u32,
}

/// One adapter merged into the model that produced the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterShare {
    /// Who authored the adapter.
    #[serde(with = "tribute_common::address::eip55")]
    pub author: Address,
    /// The adapter's merge weight; its absolute value is what counts. Must be finite.
    pub merge_weight: f64,
    /// The contributors of the data it was trained on and their training tokens, from its
    /// provenance manifest ([`crate::provenance`]); empty when it has none, and then the
    /// author takes the adapter's whole share, as before manifests existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub training: Vec<TrainingShare>,
}

/// A contributor of an adapter's training data and the tokens of its documents the
/// adapter was trained on ([`crate::provenance::ProvenanceManifest::training_shares`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingShare {
    /// The contributor.
    #[serde(with = "tribute_common::address::eip55")]
    pub contributor: Address,
    /// Its training tokens. The same contributor may appear several times: tokens are
    /// summed; an adapter's tokens must sum to at most `u64::MAX`.
    pub tokens: u64,
}

/// What to split: a fee and who made the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// The fee in wei (a decimal or `0x` hex string in JSON).
    #[serde(with = "tribute_common::wei::serde")]
    pub fee: U256,
    /// Cited sources; empty means the contributor pool goes to the treasury.
    #[serde(default)]
    pub contributors: Vec<Contribution>,
    /// Merged adapters; empty means the adapter pool goes to the model owner.
    #[serde(default)]
    pub adapters: Vec<AdapterShare>,
    /// The base model's owner.
    #[serde(with = "tribute_common::address::eip55")]
    pub model_owner: Address,
    /// The protocol treasury.
    #[serde(with = "tribute_common::address::eip55")]
    pub treasury: Address,
}

impl SplitRequest {
    /// Starts a request for `fee` wei.
    pub fn builder(fee: U256) -> SplitRequestBuilder {
        SplitRequestBuilder {
            fee,
            contributors: Vec::new(),
            adapters: Vec::new(),
            model_owner: None,
            treasury: None,
            error: None,
        }
    }
}

/// Builds a [`SplitRequest`] from addresses or address strings; the first bad address is
/// reported by [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use = "call .build()"]
pub struct SplitRequestBuilder {
    fee: U256,
    contributors: Vec<Contribution>,
    adapters: Vec<AdapterShare>,
    model_owner: Option<Address>,
    treasury: Option<Address>,
    error: Option<SplitError>,
}

impl SplitRequestBuilder {
    fn address(&mut self, address: impl IntoAddress) -> Option<Address> {
        match address.into_address() {
            Ok(a) => Some(a),
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    /// Adds a cited source of `contributor` with a citation weight in basis points.
    pub fn contributor(mut self, contributor: impl IntoAddress, weight_bps: u32) -> Self {
        if let Some(contributor) = self.address(contributor) {
            self.contributors.push(Contribution {
                contributor,
                weight_bps,
            });
        }
        self
    }

    /// Adds an adapter by `author` merged with `merge_weight`.
    pub fn adapter(mut self, author: impl IntoAddress, merge_weight: f64) -> Self {
        if let Some(author) = self.address(author) {
            self.adapters.push(AdapterShare {
                author,
                merge_weight,
                training: Vec::new(),
            });
        }
        self
    }

    /// Adds an adapter by `author` merged with `merge_weight` and trained on the data of
    /// `training` (from its provenance manifest): its share is split between the author
    /// and those contributors by [`RewardConfig::training_contributors_bps`](super::RewardConfig::training_contributors_bps).
    pub fn trained_adapter(
        mut self,
        author: impl IntoAddress,
        merge_weight: f64,
        training: impl IntoIterator<Item = TrainingShare>,
    ) -> Self {
        if let Some(author) = self.address(author) {
            self.adapters.push(AdapterShare {
                author,
                merge_weight,
                training: training.into_iter().collect(),
            });
        }
        self
    }

    /// Sets the model owner.
    pub fn model_owner(mut self, owner: impl IntoAddress) -> Self {
        self.model_owner = self.address(owner);
        self
    }

    /// Sets the treasury.
    pub fn treasury(mut self, treasury: impl IntoAddress) -> Self {
        self.treasury = self.address(treasury);
        self
    }

    /// The request.
    ///
    /// # Errors
    ///
    /// [`SplitError::BadAddress`] for the first address that did not parse,
    /// [`SplitError::MissingRecipient`] without a model owner or a treasury. The amounts
    /// are checked by [`SplitPolicy::split`].
    pub fn build(self) -> Result<SplitRequest> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(SplitRequest {
            fee: self.fee,
            contributors: self.contributors,
            adapters: self.adapters,
            model_owner: self.model_owner.ok_or(SplitError::MissingRecipient {
                role: Role::ModelOwner,
            })?,
            treasury: self.treasury.ok_or(SplitError::MissingRecipient {
                role: Role::Treasury,
            })?,
        })
    }
}
