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
//!    An adapter with a provenance manifest ([`AdapterShare::training`]) is a slot of its
//!    own: its slice of the pool is split again, `training_contributors_bps` of it
//!    ([`RewardConfig`], default [`DEFAULT_TRAINING_CONTRIBUTORS_BPS`]) to its training
//!    contributors pro rata to tokens × reputation, the rest to its author; blocked ones
//!    get 0 and their share goes to their peers (a blocked author's to the contributors);
//!    if nobody in the slot can be paid, the slot's share goes to the other adapters.
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

mod compute;
mod payout;
mod policy;
mod request;

use std::fmt;

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

pub use payout::{Payout, RoleAmounts, Split};
pub use policy::{Governance, RewardConfig, SplitPolicy};
pub use request::{AdapterShare, Contribution, SplitRequest, SplitRequestBuilder, TrainingShare};

/// Basis points in a whole: policies and citation weights sum to this.
pub use tribute_common::TOTAL_BPS;

/// The reputation multiplier of a contributor without an entry: ×1.
pub const NEUTRAL_REPUTATION_BPS: u16 = 10_000;

/// The largest reputation multiplier: ×2.
pub const MAX_REPUTATION_BPS: u16 = 20_000;

/// The default share of a trained adapter's slice of the adapter pool that goes to the
/// contributors of its training data (the rest goes to its author): half.
pub const DEFAULT_TRAINING_CONTRIBUTORS_BPS: u16 = 5_000;

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
    /// The training contributors' share of a trained adapter is above 10,000 bps.
    #[error(
        "training_contributors_bps is {bps}: it must be between 0 and 10000 (the share of a \
         trained adapter's slice that goes to its training data's contributors)"
    )]
    TrainingBps {
        /// The share given.
        bps: u32,
    },
    /// An adapter's training tokens add up to more than `u64::MAX`.
    #[error("adapter #{index}'s training tokens overflow 64 bits: check its provenance manifest")]
    TrainingTokens {
        /// Position of the adapter in the request.
        index: usize,
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
    tribute_common::parse_address(input).map_err(|e| SplitError::BadAddress { input: e.input })
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
    /// Paid from the adapter pool: the author of an adapter merged into the model, or a
    /// contributor of the data a merged adapter was trained on (by its provenance manifest).
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

#[cfg(test)]
mod tests {
    use super::*;

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
