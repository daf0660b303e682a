//! The reward policy and its governance: the serde config types of `[rewards]`.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_TRAINING_CONTRIBUTORS_BPS, IntoAddress, MAX_REPUTATION_BPS, NEUTRAL_REPUTATION_BPS,
    Result, Split, SplitError, SplitRequest, TOTAL_BPS, parse_address,
};

/// How a fee is divided between the four roles, in basis points summing to 10,000.
///
/// The default gives 70 % to data contributors, 10 % to adapter authors, 15 % to the model
/// owner and 5 % to the treasury: the data that grounded an answer earns the most.
///
/// Deserialising checks the sum, so a bad config fails when it is loaded:
///
/// ```
/// use tribute_attribution::split::SplitPolicy;
///
/// let policy: SplitPolicy = serde_json::from_str(
///     r#"{"contributors_bps": 6000, "adapters_bps": 2000, "model_owner_bps": 1500, "treasury_bps": 500}"#,
/// )?;
/// assert_eq!(policy.adapters_bps, 2000);
/// assert!(serde_json::from_str::<SplitPolicy>(r#"{"contributors_bps": 9000}"#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "PolicyRepr")]
pub struct SplitPolicy {
    /// Share of the data contributors, split by citation weight × reputation.
    pub contributors_bps: u16,
    /// Share of the adapter authors, split by |merge weight|.
    pub adapters_bps: u16,
    /// Share of the model owner.
    pub model_owner_bps: u16,
    /// Share of the protocol treasury (which also receives rounding dust).
    pub treasury_bps: u16,
}

impl Default for SplitPolicy {
    fn default() -> Self {
        Self {
            contributors_bps: 7_000,
            adapters_bps: 1_000,
            model_owner_bps: 1_500,
            treasury_bps: 500,
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PolicyRepr {
    contributors_bps: u16,
    adapters_bps: u16,
    model_owner_bps: u16,
    treasury_bps: u16,
}

impl Default for PolicyRepr {
    fn default() -> Self {
        let d = SplitPolicy::default();
        Self {
            contributors_bps: d.contributors_bps,
            adapters_bps: d.adapters_bps,
            model_owner_bps: d.model_owner_bps,
            treasury_bps: d.treasury_bps,
        }
    }
}

impl TryFrom<PolicyRepr> for SplitPolicy {
    type Error = SplitError;

    fn try_from(r: PolicyRepr) -> Result<Self> {
        let policy = SplitPolicy {
            contributors_bps: r.contributors_bps,
            adapters_bps: r.adapters_bps,
            model_owner_bps: r.model_owner_bps,
            treasury_bps: r.treasury_bps,
        };
        policy.validate()?;
        Ok(policy)
    }
}

impl SplitPolicy {
    /// Checks that the four shares sum to exactly 10,000 basis points.
    ///
    /// # Errors
    ///
    /// [`SplitError::PolicyBps`] otherwise.
    pub fn validate(&self) -> Result<()> {
        let sum = u32::from(self.contributors_bps)
            + u32::from(self.adapters_bps)
            + u32::from(self.model_owner_bps)
            + u32::from(self.treasury_bps);
        if sum == TOTAL_BPS {
            Ok(())
        } else {
            Err(SplitError::PolicyBps { sum })
        }
    }
}

/// A policy and its governance together: the `[rewards]` part of a config file.
///
/// Both halves default, so `{}` is the default 70/10/15/5 % policy without governance. See
/// `docs/REWARDS.md` for a full example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// How the fee is divided between roles.
    pub policy: SplitPolicy,
    /// Reputations and blocklist.
    pub governance: Governance,
    /// The share, in basis points, of a trained adapter's slice of the adapter pool that
    /// goes to the contributors of its training data (by its provenance manifest); the
    /// rest goes to its author. Default [`DEFAULT_TRAINING_CONTRIBUTORS_BPS`]; left out of
    /// the JSON at the default, so records written before it existed hash as they did.
    #[serde(
        deserialize_with = "training_bps",
        skip_serializing_if = "is_default_training_bps"
    )]
    pub training_contributors_bps: u16,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            policy: SplitPolicy::default(),
            governance: Governance::default(),
            training_contributors_bps: DEFAULT_TRAINING_CONTRIBUTORS_BPS,
        }
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_default_training_bps(bps: &u16) -> bool {
    *bps == DEFAULT_TRAINING_CONTRIBUTORS_BPS
}

fn training_bps<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u16, D::Error> {
    let bps = u32::deserialize(d)?;
    u16::try_from(bps)
        .ok()
        .filter(|&b| u32::from(b) <= TOTAL_BPS)
        .ok_or_else(|| serde::de::Error::custom(SplitError::TrainingBps { bps }))
}

impl RewardConfig {
    /// [`SplitPolicy::split_with_training`] with this config's policy, governance and
    /// training contributors' share.
    ///
    /// # Errors
    ///
    /// As [`SplitPolicy::split_with_training`].
    pub fn split(&self, request: &SplitRequest) -> Result<Split> {
        self.policy
            .split_with_training(request, &self.governance, self.training_contributors_bps)
    }
}

/// Quality governance over contributors and adapter authors.
///
/// In JSON (or TOML) addresses are strings, checked by [`parse_address`]; reputations are
/// multipliers in basis points (10,000 = ×1, from 0 to [`MAX_REPUTATION_BPS`]):
///
/// ```
/// use tribute_attribution::split::Governance;
///
/// let governance: Governance = serde_json::from_str(r#"{
///     "reputation": { "0x1111111111111111111111111111111111111111": 15000 },
///     "blocklist": ["0x2222222222222222222222222222222222222222"]
/// }"#)?;
/// assert_eq!(governance.blocklist.len(), 1);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "GovernanceRepr", into = "GovernanceRepr")]
pub struct Governance {
    /// Reputation multiplier per contributor, in basis points; absent means
    /// [`NEUTRAL_REPUTATION_BPS`].
    pub reputation: BTreeMap<Address, u16>,
    /// Contributors and adapter authors who are paid nothing; their share goes to their
    /// peers.
    pub blocklist: BTreeSet<Address>,
}

impl Governance {
    /// Sets the reputation multiplier of `address`, in basis points.
    ///
    /// # Errors
    ///
    /// [`SplitError::BadAddress`] or [`SplitError::Reputation`] above
    /// [`MAX_REPUTATION_BPS`].
    pub fn set_reputation(&mut self, address: impl IntoAddress, bps: u16) -> Result<&mut Self> {
        let address = address.into_address()?;
        if bps > MAX_REPUTATION_BPS {
            return Err(SplitError::Reputation {
                address,
                bps: u32::from(bps),
            });
        }
        self.reputation.insert(address, bps);
        Ok(self)
    }

    /// Adds `address` to the blocklist.
    ///
    /// # Errors
    ///
    /// [`SplitError::BadAddress`].
    pub fn block(&mut self, address: impl IntoAddress) -> Result<&mut Self> {
        self.blocklist.insert(address.into_address()?);
        Ok(self)
    }

    /// The reputation multiplier of `address` in basis points.
    pub fn reputation_of(&self, address: &Address) -> u16 {
        self.reputation
            .get(address)
            .copied()
            .unwrap_or(NEUTRAL_REPUTATION_BPS)
    }

    /// Whether `address` is blocked.
    pub fn is_blocked(&self, address: &Address) -> bool {
        self.blocklist.contains(address)
    }

    /// Checks every reputation against [`MAX_REPUTATION_BPS`].
    ///
    /// # Errors
    ///
    /// [`SplitError::Reputation`] for the first one above it.
    pub fn validate(&self) -> Result<()> {
        match self
            .reputation
            .iter()
            .find(|&(_, &bps)| bps > MAX_REPUTATION_BPS)
        {
            Some((&address, &bps)) => Err(SplitError::Reputation {
                address,
                bps: u32::from(bps),
            }),
            None => Ok(()),
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GovernanceRepr {
    reputation: BTreeMap<String, u32>,
    blocklist: BTreeSet<String>,
}

impl TryFrom<GovernanceRepr> for Governance {
    type Error = SplitError;

    fn try_from(r: GovernanceRepr) -> Result<Self> {
        let mut governance = Governance::default();
        for (input, bps) in r.reputation {
            let address = parse_address(&input)?;
            let bps = u16::try_from(bps)
                .ok()
                .filter(|&b| b <= MAX_REPUTATION_BPS)
                .ok_or(SplitError::Reputation { address, bps })?;
            if governance.reputation.insert(address, bps).is_some() {
                return Err(SplitError::DuplicateReputation { address });
            }
        }
        for input in r.blocklist {
            governance.blocklist.insert(parse_address(&input)?);
        }
        Ok(governance)
    }
}

impl From<Governance> for GovernanceRepr {
    fn from(g: Governance) -> Self {
        Self {
            reputation: g
                .reputation
                .into_iter()
                .map(|(a, bps)| (a.to_checksum(None), u32::from(bps)))
                .collect(),
            blocklist: g.blocklist.iter().map(|a| a.to_checksum(None)).collect(),
        }
    }
}
