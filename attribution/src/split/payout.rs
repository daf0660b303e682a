//! The result of a split: who receives what, by role.

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use super::Role;

/// Wei per role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleAmounts {
    /// Paid as a data contributor.
    #[serde(with = "tribute_common::wei::serde")]
    pub contributor: U256,
    /// Paid from the adapter pool: as an adapter's author or as a contributor of an
    /// adapter's training data.
    #[serde(with = "tribute_common::wei::serde")]
    pub adapter_author: U256,
    /// Paid as the model owner (including an unclaimed adapter pool).
    #[serde(with = "tribute_common::wei::serde")]
    pub model_owner: U256,
    /// Paid as the treasury (including dust and an unclaimed contributor pool).
    #[serde(with = "tribute_common::wei::serde")]
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

    pub(super) fn get_mut(&mut self, role: Role) -> &mut U256 {
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
    #[serde(with = "tribute_common::address::eip55")]
    pub address: Address,
    /// Wei in total, over every role.
    #[serde(with = "tribute_common::wei::serde")]
    pub amount: U256,
    /// The same wei by role.
    pub by_role: RoleAmounts,
}

/// The result of a split: payouts that sum to the fee exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// The fee split, in wei.
    #[serde(with = "tribute_common::wei::serde")]
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
