//! Exact reward splits of a fee in wei.
//!
//! A [`SplitPolicy`] divides a fee, in basis points, between four roles: the data
//! contributors whose sources were cited, the authors of the LoRA adapters merged into
//! the model, the model owner and a protocol treasury. [`Governance`] adds quality
//! control: a reputation multiplier per contributor and a blocklist; [`RewardConfig`] holds
//! both as one serde config. [`SplitPolicy::split`] (or [`RewardConfig::split`]) turns a
//! [`SplitRequest`] into a [`Split`]: one [`Payout`] per address, summed over every role
//! the address holds. `docs/REWARDS.md` has a worked example and config files.
//!
//! Everything is integer arithmetic on [`U256`], and the split is **exact**: the payouts
//! always sum to the fee, to the wei, for every fee from 1 to `U256::MAX`.
//!
//! # The rule
//!
//! 1. **Pools.** Each role's pool is `floor(fee × bps / 10_000)`. The at most 3 wei that
//!    flooring leaves over (the *dust*) go to the treasury.
//! 2. **Contributors.** Citation weights (basis points summing to 10,000) are summed per
//!    address, then multiplied by the contributor's reputation (basis points, 10,000 = ×1,
//!    at most [`MAX_REPUTATION_BPS`]; contributors without an entry get ×1). Blocked
//!    contributors get weight 0, so their share goes to the other contributors pro rata to
//!    those effective weights. A reputation only reweights contributors against each
//!    other: it never changes the size of the pool.
//! 3. **Adapters.** Each adapter's weight is the absolute value of its merge weight (a
//!    negatively merged adapter still shaped the answer), summed per author. Blocked
//!    authors get weight 0 and their share goes to the other authors pro rata.
//! 4. **Largest remainder.** Inside a pool, each address gets `floor(pool × w / Σw)`;
//!    the wei left over go one each to the largest remainders `pool × w mod Σw`, ties
//!    broken by the lower address. Every wei of the pool is handed out, and the result
//!    does not depend on the order of the inputs.
//! 5. **Nobody eligible.** If no contributor has a positive effective weight (none cited,
//!    all blocked, all at reputation 0), the contributor pool goes to the **treasury**:
//!    the operator gains nothing by answering without sources or by blocking
//!    contributors. If no adapter author has a positive weight (no adapters, all blocked,
//!    all merge weights 0), the adapter pool goes to the **model owner**, whose base model
//!    did that work.
//!
//! The model owner and the treasury may not be on the blocklist
//! ([`SplitError::BlockedRecipient`]), so a blocked address is never paid.
//!
//! # Example
//!
//! ```
//! use alloy_primitives::U256;
//! use tribute_attribution::split::{Governance, SplitPolicy, SplitRequest};
//!
//! let request = SplitRequest::builder(U256::from(1_000_000_000_000_000_000_u128)) // 1 ether
//!     .contributor("0x1111111111111111111111111111111111111111", 6_000)
//!     .contributor("0x2222222222222222222222222222222222222222", 4_000)
//!     .adapter("0x3333333333333333333333333333333333333333", 0.7)
//!     .model_owner("0x4444444444444444444444444444444444444444")
//!     .treasury("0x5555555555555555555555555555555555555555")
//!     .build()?;
//! let split = SplitPolicy::default().split(&request, &Governance::default())?;
//! assert_eq!(split.payouts.iter().map(|p| p.amount).sum::<U256>(), request.fee);
//! # Ok::<(), tribute_attribution::split::SplitError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

/// Basis points in a whole: policies and citation weights sum to this.
pub const TOTAL_BPS: u16 = 10_000;

/// The reputation multiplier of a contributor without an entry: ×1.
pub const NEUTRAL_REPUTATION_BPS: u16 = 10_000;

/// The largest reputation multiplier: ×2.
pub const MAX_REPUTATION_BPS: u16 = 20_000;

/// Result of the split module.
pub type Result<T, E = SplitError> = std::result::Result<T, E>;

/// What went wrong while configuring or computing a split.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// The fee is zero.
    #[error("the fee is zero: there is nothing to split; charge a fee of at least 1 wei")]
    ZeroFee,
    /// The policy's four shares do not add up to 10,000 basis points.
    #[error(
        "the split policy's basis points sum to {sum}, not 10000: adjust contributors_bps, \
         adapters_bps, model_owner_bps and treasury_bps so they add up to 10000"
    )]
    PolicyBps {
        /// The sum found.
        sum: u32,
    },
    /// The contributors' citation weights do not add up to 10,000 basis points.
    #[error(
        "contributor citation weights sum to {sum} bps, not 10000: pass weights normalised \
         to 10000 basis points (or no contributors at all)"
    )]
    WeightsDoNotSum {
        /// The sum found.
        sum: u64,
    },
    /// A string is not an Ethereum address.
    #[error(
        "`{input}` is not an Ethereum address: expected 0x followed by 40 hex digits, \
         all lowercase, all uppercase or with a valid EIP-55 checksum"
    )]
    BadAddress {
        /// The string given.
        input: String,
    },
    /// An adapter's merge weight is NaN or infinite.
    #[error("adapter #{index} has merge weight {weight}: merge weights must be finite numbers")]
    AdapterWeight {
        /// Position of the adapter in the request.
        index: usize,
        /// The weight given.
        weight: f64,
    },
    /// A reputation multiplier is above [`MAX_REPUTATION_BPS`].
    #[error(
        "the reputation of {address} is {bps} bps: it must be between 0 and 20000 \
         (10000 is neutral)"
    )]
    Reputation {
        /// The contributor.
        address: Address,
        /// The multiplier given, in basis points.
        bps: u32,
    },
    /// The same address has two reputation entries (e.g. one lowercase, one checksummed).
    #[error("{address} has more than one reputation entry: keep one")]
    DuplicateReputation {
        /// The contributor.
        address: Address,
    },
    /// The model owner or the treasury is on the blocklist.
    #[error(
        "the {role} {address} is on the blocklist: a blocked address is never paid, so \
         unblock it or name another {role}"
    )]
    BlockedRecipient {
        /// [`Role::ModelOwner`] or [`Role::Treasury`].
        role: Role,
        /// The blocked address.
        address: Address,
    },
    /// A [`SplitRequestBuilder`] was built without a model owner or a treasury.
    #[error("the split request has no {role}: call .{role}(address) on the builder")]
    MissingRecipient {
        /// [`Role::ModelOwner`] or [`Role::Treasury`].
        role: Role,
    },
}

/// Parses an Ethereum address: `0x` and 40 hex digits, all lowercase, all uppercase, or
/// mixed-case with a valid [EIP-55](https://eips.ethereum.org/EIPS/eip-55) checksum (a
/// mixed-case address with a wrong checksum is most likely a typo, so it is refused).
///
/// # Errors
///
/// [`SplitError::BadAddress`] when `input` is anything else.
pub fn parse_address(input: &str) -> Result<Address> {
    let bad = || SplitError::BadAddress {
        input: input.to_owned(),
    };
    let digits = input.strip_prefix("0x").ok_or_else(bad)?;
    if digits.len() != 40 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper {
        Address::parse_checksummed(input, None).map_err(|_| bad())
    } else {
        input.parse().map_err(|_| bad())
    }
}

/// Something that names an address: an [`Address`], or a string parsed with
/// [`parse_address`].
pub trait IntoAddress {
    /// The address, or [`SplitError::BadAddress`].
    fn into_address(self) -> Result<Address>;
}

impl IntoAddress for Address {
    fn into_address(self) -> Result<Address> {
        Ok(self)
    }
}

impl IntoAddress for &Address {
    fn into_address(self) -> Result<Address> {
        Ok(*self)
    }
}

impl IntoAddress for &str {
    fn into_address(self) -> Result<Address> {
        parse_address(self)
    }
}

impl IntoAddress for String {
    fn into_address(self) -> Result<Address> {
        parse_address(&self)
    }
}

impl IntoAddress for &String {
    fn into_address(self) -> Result<Address> {
        parse_address(self)
    }
}

/// A role paid by a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// A data contributor whose source was cited.
    Contributor,
    /// The author of an adapter merged into the model.
    AdapterAuthor,
    /// The owner of the base model.
    ModelOwner,
    /// The protocol treasury.
    Treasury,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Contributor => "contributor",
            Role::AdapterAuthor => "adapter_author",
            Role::ModelOwner => "model_owner",
            Role::Treasury => "treasury",
        })
    }
}

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
        if sum == u32::from(TOTAL_BPS) {
            Ok(())
        } else {
            Err(SplitError::PolicyBps { sum })
        }
    }

    /// Splits `request.fee` by this policy under `governance` (see the [module
    /// docs](self) for the rule). The payouts sum to the fee exactly.
    ///
    /// # Errors
    ///
    /// [`SplitError::PolicyBps`], [`SplitError::ZeroFee`], [`SplitError::WeightsDoNotSum`],
    /// [`SplitError::AdapterWeight`], [`SplitError::Reputation`] and
    /// [`SplitError::BlockedRecipient`] for the inputs they describe.
    pub fn split(&self, request: &SplitRequest, governance: &Governance) -> Result<Split> {
        self.validate()?;
        governance.validate()?;
        let fee = request.fee;
        if fee.is_zero() {
            return Err(SplitError::ZeroFee);
        }
        for (role, address) in [
            (Role::ModelOwner, request.model_owner),
            (Role::Treasury, request.treasury),
        ] {
            if governance.is_blocked(&address) {
                return Err(SplitError::BlockedRecipient { role, address });
            }
        }
        let sum: u64 = request
            .contributors
            .iter()
            .map(|c| u64::from(c.weight_bps))
            .sum();
        if !request.contributors.is_empty() && sum != u64::from(TOTAL_BPS) {
            return Err(SplitError::WeightsDoNotSum { sum });
        }
        if let Some((index, a)) = request
            .adapters
            .iter()
            .enumerate()
            .find(|(_, a)| !a.merge_weight.is_finite())
        {
            return Err(SplitError::AdapterWeight {
                index,
                weight: a.merge_weight,
            });
        }

        let contributor_pool = pool(fee, self.contributors_bps);
        let adapter_pool = pool(fee, self.adapters_bps);
        let owner_pool = pool(fee, self.model_owner_bps);
        let treasury_pool = pool(fee, self.treasury_bps);
        // Each floor loses less than 1 wei, so the dust is at most 3 wei.
        let dust = fee - contributor_pool - adapter_pool - owner_pool - treasury_pool;

        let mut ledger = Ledger::default();

        let mut weights: BTreeMap<Address, u128> = BTreeMap::new();
        for c in &request.contributors {
            if !governance.is_blocked(&c.contributor) {
                *weights.entry(c.contributor).or_default() += u128::from(c.weight_bps);
            }
        }
        for (address, w) in &mut weights {
            *w *= u128::from(governance.reputation_of(address));
        }
        match largest_remainder(contributor_pool, &weights) {
            Some(shares) => {
                for (address, amount) in shares {
                    ledger.credit(address, Role::Contributor, amount);
                }
            }
            None => ledger.credit(request.treasury, Role::Treasury, contributor_pool),
        }

        match largest_remainder(adapter_pool, &adapter_weights(request, governance)) {
            Some(shares) => {
                for (address, amount) in shares {
                    ledger.credit(address, Role::AdapterAuthor, amount);
                }
            }
            None => ledger.credit(request.model_owner, Role::ModelOwner, adapter_pool),
        }

        ledger.credit(request.model_owner, Role::ModelOwner, owner_pool);
        ledger.credit(request.treasury, Role::Treasury, treasury_pool + dust);
        Ok(ledger.finish(fee))
    }
}

/// `floor(fee × bps / 10_000)` without overflow for any `U256` fee.
fn pool(fee: U256, bps: u16) -> U256 {
    let total = U256::from(TOTAL_BPS);
    let bps = U256::from(bps);
    // fee = q·10_000 + r, so fee·bps/10_000 = q·bps + r·bps/10_000 with q·bps integral.
    fee / total * bps + fee % total * bps / total
}

/// Eligible adapter authors and their integer weights.
///
/// `|merge weight|` is scaled against the largest eligible one so that the largest maps
/// to 2^53 and the others to `trunc(|w| / max × 2^53)`: a correctly rounded IEEE-754
/// division and an exact power-of-two product, hence the same integers on every platform.
/// The weights are then summed per author.
fn adapter_weights(request: &SplitRequest, governance: &Governance) -> BTreeMap<Address, u128> {
    const SCALE: f64 = 9_007_199_254_740_992.0; // 2^53
    let eligible = || {
        request
            .adapters
            .iter()
            .filter(|a| !governance.is_blocked(&a.author))
    };
    let max = eligible()
        .map(|a| a.merge_weight.abs())
        .fold(0.0_f64, f64::max);
    let mut weights: BTreeMap<Address, u128> = BTreeMap::new();
    if max > 0.0 {
        for a in eligible() {
            // In [0, 2^53]: the cast is exact after trunc.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let w = (a.merge_weight.abs() / max * SCALE).trunc() as u64;
            *weights.entry(a.author).or_default() += u128::from(w);
        }
    }
    weights
}

/// Hamilton's largest-remainder apportionment of `pool` by `weights`: `None` when the
/// weights sum to 0, otherwise shares (positive ones only) that sum to `pool` exactly.
///
/// Callers keep `Σweights < 2^128` (contributors: < 2^28; adapters: < 2^53 × count), so
/// the products `r × w` below (with `r < Σw`) fit in 256 bits.
fn largest_remainder(
    pool: U256,
    weights: &BTreeMap<Address, u128>,
) -> Option<Vec<(Address, U256)>> {
    let total: u128 = weights.values().sum();
    if total == 0 {
        return None;
    }
    let total = U256::from(total);
    // pool = q·Σw + r, so pool·w/Σw = q·w + r·w/Σw.
    let q = pool / total;
    let r = pool % total;
    let mut shares: Vec<(Address, U256, U256)> = weights
        .iter()
        .filter(|&(_, &w)| w > 0)
        .map(|(&address, &w)| {
            let w = U256::from(w);
            let part = r * w;
            (address, q * w + part / total, part % total)
        })
        .collect();
    let handed_out: U256 = shares.iter().map(|(_, share, _)| *share).sum();
    // Σ remainders / Σw == pool − handed_out, and every remainder is < Σw, so the leftover
    // is smaller than the number of positive remainders (and than `shares.len()`).
    let leftover = usize::try_from(pool - handed_out).unwrap_or(usize::MAX);
    // Largest remainder first; equal remainders go to the lower address (the map order).
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| shares[b].2.cmp(&shares[a].2).then(a.cmp(&b)));
    for &i in order.iter().take(leftover) {
        shares[i].1 += U256::from(1_u8);
    }
    Some(
        shares
            .into_iter()
            .filter(|(_, share, _)| !share.is_zero())
            .map(|(address, share, _)| (address, share))
            .collect(),
    )
}

#[derive(Default)]
struct Ledger {
    by_address: BTreeMap<Address, RoleAmounts>,
    totals: RoleAmounts,
}

impl Ledger {
    fn credit(&mut self, address: Address, role: Role, amount: U256) {
        if amount.is_zero() {
            return;
        }
        *self.by_address.entry(address).or_default().get_mut(role) += amount;
        *self.totals.get_mut(role) += amount;
    }

    fn finish(self, fee: U256) -> Split {
        let payouts = self
            .by_address
            .into_iter()
            .map(|(address, by_role)| Payout {
                address,
                amount: by_role.sum(),
                by_role,
            })
            .collect();
        Split {
            fee,
            payouts,
            totals: self.totals,
        }
    }
}

/// A policy and its governance together: the `[rewards]` part of a config file.
///
/// Both halves default, so `{}` is the default 70/10/15/5 % policy without governance. See
/// `docs/REWARDS.md` for a full example.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// How the fee is divided between roles.
    pub policy: SplitPolicy,
    /// Reputations and blocklist.
    pub governance: Governance,
}

impl RewardConfig {
    /// [`SplitPolicy::split`] with this config's policy and governance.
    ///
    /// # Errors
    ///
    /// As [`SplitPolicy::split`].
    pub fn split(&self, request: &SplitRequest) -> Result<Split> {
        self.policy.split(request, &self.governance)
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

/// One cited source's share of the contributor pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contribution {
    /// Who contributed the source.
    #[serde(with = "eip55")]
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
    #[serde(with = "eip55")]
    pub author: Address,
    /// The adapter's merge weight; its absolute value is what counts. Must be finite.
    pub merge_weight: f64,
}

/// What to split: a fee and who made the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// The fee in wei (a decimal or `0x` hex string in JSON).
    #[serde(with = "wei")]
    pub fee: U256,
    /// Cited sources; empty means the contributor pool goes to the treasury.
    #[serde(default)]
    pub contributors: Vec<Contribution>,
    /// Merged adapters; empty means the adapter pool goes to the model owner.
    #[serde(default)]
    pub adapters: Vec<AdapterShare>,
    /// The base model's owner.
    #[serde(with = "eip55")]
    pub model_owner: Address,
    /// The protocol treasury.
    #[serde(with = "eip55")]
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

/// Wei per role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleAmounts {
    /// Paid as a data contributor.
    #[serde(with = "wei")]
    pub contributor: U256,
    /// Paid as an adapter author.
    #[serde(with = "wei")]
    pub adapter_author: U256,
    /// Paid as the model owner (including an unclaimed adapter pool).
    #[serde(with = "wei")]
    pub model_owner: U256,
    /// Paid as the treasury (including dust and an unclaimed contributor pool).
    #[serde(with = "wei")]
    pub treasury: U256,
}

impl RoleAmounts {
    /// The amount paid as `role`.
    pub fn get(&self, role: Role) -> U256 {
        match role {
            Role::Contributor => self.contributor,
            Role::AdapterAuthor => self.adapter_author,
            Role::ModelOwner => self.model_owner,
            Role::Treasury => self.treasury,
        }
    }

    fn get_mut(&mut self, role: Role) -> &mut U256 {
        match role {
            Role::Contributor => &mut self.contributor,
            Role::AdapterAuthor => &mut self.adapter_author,
            Role::ModelOwner => &mut self.model_owner,
            Role::Treasury => &mut self.treasury,
        }
    }

    /// The sum over the four roles.
    pub fn sum(&self) -> U256 {
        self.contributor + self.adapter_author + self.model_owner + self.treasury
    }
}

/// What one address receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payout {
    /// The recipient.
    #[serde(with = "eip55")]
    pub address: Address,
    /// Wei in total, over every role.
    #[serde(with = "wei")]
    pub amount: U256,
    /// The same wei by role.
    pub by_role: RoleAmounts,
}

/// The result of a split: payouts that sum to the fee exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// The fee split, in wei.
    #[serde(with = "wei")]
    pub fee: U256,
    /// One entry per paid address, by ascending address; amounts are positive.
    pub payouts: Vec<Payout>,
    /// Wei by role, after redistribution (an unclaimed contributor pool counts as
    /// treasury, an unclaimed adapter pool as model owner).
    pub totals: RoleAmounts,
}

impl Split {
    /// What `address` receives (zero if it is not paid).
    pub fn amount_of(&self, address: &Address) -> U256 {
        self.payouts
            .binary_search_by(|p| p.address.cmp(address))
            .map_or(U256::ZERO, |i| self.payouts[i].amount)
    }
}

/// Serde for an [`Address`] as an EIP-55 string, parsed with [`parse_address`].
mod eip55 {
    use alloy_primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_checksum(None))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_address(&s).map_err(D::Error::custom)
    }
}

/// Serde for wei: written as a decimal string, read from a decimal or `0x` hex string or
/// a non-negative integer.
mod wei {
    use alloy_primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Int(u64),
        Str(String),
    }

    pub(super) fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Int(v) => Ok(U256::from(v)),
            Repr::Str(s) => s.parse().map_err(|_| {
                D::Error::custom(format!(
                    "`{s}` is not an amount in wei: expected a decimal or 0x hex integer below 2^256"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(byte: u8) -> Address {
        Address::repeat_byte(byte)
    }

    #[test]
    fn pool_floors_without_overflow() {
        assert_eq!(pool(U256::from(10_001_u64), 7_000), U256::from(7_000_u64));
        assert_eq!(pool(U256::MAX, 10_000), U256::MAX);
        assert_eq!(pool(U256::MAX, 0), U256::ZERO);
        // (2^256 − 1)·5000/10000 = 2^255 − 1 (floor of …​.5).
        assert_eq!(pool(U256::MAX, 5_000), U256::MAX >> 1);
    }

    #[test]
    fn largest_remainder_hands_out_every_wei_and_breaks_ties_by_address() {
        let weights: BTreeMap<Address, u128> = [(addr(2), 1), (addr(1), 1), (addr(3), 1)].into();
        let shares = largest_remainder(U256::from(5_u8), &weights).unwrap();
        // 5/3 = 1 r 2: the two lowest addresses get the two leftover wei.
        assert_eq!(
            shares,
            vec![
                (addr(1), U256::from(2_u8)),
                (addr(2), U256::from(2_u8)),
                (addr(3), U256::from(1_u8)),
            ]
        );
        assert!(largest_remainder(U256::from(5_u8), &BTreeMap::new()).is_none());
        let zero: BTreeMap<Address, u128> = [(addr(1), 0)].into();
        assert!(largest_remainder(U256::from(5_u8), &zero).is_none());
    }

    #[test]
    fn largest_remainder_prefers_the_larger_remainder() {
        // 10 wei by 1:2:3 → exact 1.67, 3.33, 5 → floors 1, 3, 5 and the leftover wei goes
        // to the first (remainder 4/6) rather than the second (2/6).
        let weights: BTreeMap<Address, u128> = [(addr(1), 1), (addr(2), 2), (addr(3), 3)].into();
        let shares = largest_remainder(U256::from(10_u8), &weights).unwrap();
        let amounts: Vec<U256> = shares.iter().map(|s| s.1).collect();
        assert_eq!(
            amounts,
            [U256::from(2_u8), U256::from(3_u8), U256::from(5_u8)]
        );
    }

    #[test]
    fn adapter_weights_are_scaled_to_integers() {
        let request = SplitRequest::builder(U256::from(1_u8))
            .adapter(addr(1), -0.5)
            .adapter(addr(2), 1.0)
            .adapter(addr(1), 0.25)
            .adapter(addr(3), 0.0)
            .model_owner(addr(9))
            .treasury(addr(10))
            .build()
            .unwrap();
        let w = adapter_weights(&request, &Governance::default());
        assert_eq!(w[&addr(1)], 3 << 51); // (0.5 + 0.25)·2^53
        assert_eq!(w[&addr(2)], 1 << 53);
        assert_eq!(w[&addr(3)], 0);
    }

    #[test]
    fn parse_address_accepts_lower_upper_and_checksummed() {
        let checksummed = "0xd8dA6BF26964aF9D7eEd9e03E53415D37aA96045";
        let a = parse_address(checksummed).unwrap();
        assert_eq!(parse_address(&checksummed.to_lowercase()).unwrap(), a);
        assert_eq!(
            parse_address("0xD8DA6BF26964AF9D7EED9E03E53415D37AA96045").unwrap(),
            a
        );
        for bad in [
            "0xd8dA6BF26964aF9D7eEd9e03E53415D37aA96046", // checksum broken
            "0xd8DA6BF26964aF9D7eEd9e03E53415D37aA96045", // one letter flipped
            "d8da6bf26964af9d7eed9e03e53415d37aa96045",   // no 0x
            "0xd8da6bf26964af9d7eed9e03e53415d37aa9604",  // 39 digits
            "0xg8da6bf26964af9d7eed9e03e53415d37aa96045", // not hex
            "",
        ] {
            assert_eq!(
                parse_address(bad),
                Err(SplitError::BadAddress { input: bad.into() }),
                "{bad}"
            );
        }
    }
}
