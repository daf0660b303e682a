//! The split itself: pools, per-address weights and largest-remainder apportionment.

use std::collections::BTreeMap;

use alloy_primitives::{Address, U256};

use super::{
    DEFAULT_TRAINING_CONTRIBUTORS_BPS, Governance, Payout, Result, Role, RoleAmounts, Split,
    SplitError, SplitPolicy, SplitRequest, TOTAL_BPS,
};

impl SplitPolicy {
    /// Splits `request.fee` by this policy under `governance` (see the [module
    /// docs](crate::split) for the rule). The payouts sum to the fee exactly. Trained
    /// adapters give [`DEFAULT_TRAINING_CONTRIBUTORS_BPS`] of their slice to their training
    /// contributors ([`split_with_training`](Self::split_with_training) sets another share).
    ///
    /// # Errors
    ///
    /// [`SplitError::PolicyBps`], [`SplitError::ZeroFee`], [`SplitError::WeightsDoNotSum`],
    /// [`SplitError::AdapterWeight`], [`SplitError::Reputation`],
    /// [`SplitError::TrainingTokens`] and [`SplitError::BlockedRecipient`] for the inputs
    /// they describe.
    pub fn split(&self, request: &SplitRequest, governance: &Governance) -> Result<Split> {
        self.split_with_training(request, governance, DEFAULT_TRAINING_CONTRIBUTORS_BPS)
    }

    /// [`split`](Self::split), with `training_contributors_bps` of each trained adapter's
    /// slice of the adapter pool going to the contributors of its training data.
    ///
    /// # Errors
    ///
    /// As [`split`](Self::split), and [`SplitError::TrainingBps`] above 10,000.
    pub fn split_with_training(
        &self,
        request: &SplitRequest,
        governance: &Governance,
        training_contributors_bps: u16,
    ) -> Result<Split> {
        self.validate()?;
        governance.validate()?;
        if u32::from(training_contributors_bps) > TOTAL_BPS {
            return Err(SplitError::TrainingBps {
                bps: u32::from(training_contributors_bps),
            });
        }
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
        if let Some(index) = request.adapters.iter().position(|a| {
            a.training
                .iter()
                .try_fold(0_u64, |sum, t| sum.checked_add(t.tokens))
                .is_none()
        }) {
            return Err(SplitError::TrainingTokens { index });
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

        let slots = adapter_slots(request, governance, training_contributors_bps);
        let slot_weights: BTreeMap<&SlotKey, u128> =
            slots.iter().map(|(key, slot)| (key, slot.weight)).collect();
        match apportion(adapter_pool, &slot_weights) {
            Some(shares) => {
                for (key, amount) in shares {
                    let payees = slots.get(key).map(|s| &s.payees);
                    // A slot with a positive weight has payees whose weights sum to > 0.
                    let paid = payees.and_then(|p| largest_remainder(amount, p));
                    for (address, part) in paid.unwrap_or_else(|| vec![(key.0, amount)]) {
                        ledger.credit(address, Role::AdapterAuthor, part);
                    }
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

/// A slot of the adapter pool: an author with its untrained adapters (`None`), or an
/// author with one training-data set (its contributors' summed tokens, by address). Keys
/// sort by author first, so without trained adapters the slots are today's authors.
type SlotKey = (Address, Option<Vec<(Address, u64)>>);

/// A slot's integer weight and who shares its slice (for a trained slot).
struct Slot {
    weight: u128,
    payees: BTreeMap<Address, u128>,
}

/// Eligible adapter slots and their integer weights.
///
/// `|merge weight|` is scaled against the largest eligible one so that the largest maps
/// to 2^53 and the others to `trunc(|w| / max × 2^53)`: a correctly rounded IEEE-754
/// division and an exact power-of-two product, hence the same integers on every platform.
/// The weights are then summed per slot (per author for untrained adapters).
fn adapter_slots(
    request: &SplitRequest,
    governance: &Governance,
    training_bps: u16,
) -> BTreeMap<SlotKey, Slot> {
    const SCALE: f64 = 9_007_199_254_740_992.0; // 2^53
    let mut candidates: Vec<(SlotKey, BTreeMap<Address, u128>, f64)> = Vec::new();
    for a in &request.adapters {
        if a.training.is_empty() {
            if !governance.is_blocked(&a.author) {
                candidates.push(((a.author, None), BTreeMap::new(), a.merge_weight.abs()));
            }
            continue;
        }
        let mut tokens: BTreeMap<Address, u64> = BTreeMap::new();
        for t in &a.training {
            // Checked by the caller: an adapter's tokens sum to at most u64::MAX.
            let sum = tokens.entry(t.contributor).or_default();
            *sum = sum.saturating_add(t.tokens);
        }
        let payees = trained_payees(a.author, &tokens, governance, training_bps);
        if !payees.is_empty() {
            let key = (a.author, Some(tokens.into_iter().collect()));
            candidates.push((key, payees, a.merge_weight.abs()));
        }
    }
    let max = candidates.iter().map(|c| c.2).fold(0.0_f64, f64::max);
    let mut slots: BTreeMap<SlotKey, Slot> = BTreeMap::new();
    if max > 0.0 {
        for (key, payees, abs) in candidates {
            // In [0, 2^53]: the cast is exact after trunc.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let w = (abs / max * SCALE).trunc() as u64;
            slots
                .entry(key)
                .or_insert(Slot { weight: 0, payees })
                .weight += u128::from(w);
        }
    }
    slots
}

/// Who shares a trained adapter's slice, with integer weights: the contributors by
/// `tokens × reputation` (blocked ones 0) scaled to `training_bps`, the author to the rest.
/// A blocked author's part goes to the contributors, an unpaid contributors' part to the
/// author; empty when nobody can be paid.
///
/// Weights stay below 2^94 (tokens < 2^64, reputation ≤ 20,000 < 2^15, bps ≤ 10,000 <
/// 2^14), so [`largest_remainder`]'s products fit in 256 bits.
fn trained_payees(
    author: Address,
    tokens: &BTreeMap<Address, u64>,
    governance: &Governance,
    training_bps: u16,
) -> BTreeMap<Address, u128> {
    let effective: BTreeMap<Address, u128> = tokens
        .iter()
        .filter(|(c, _)| !governance.is_blocked(c))
        .map(|(c, &t)| (*c, u128::from(t) * u128::from(governance.reputation_of(c))))
        .filter(|&(_, w)| w > 0)
        .collect();
    let sum: u128 = effective.values().sum();
    let author_paid = !governance.is_blocked(&author);
    match (author_paid, sum > 0) {
        (true, true) => {
            let mut payees: BTreeMap<Address, u128> = effective
                .into_iter()
                .map(|(c, w)| (c, w * u128::from(training_bps)))
                .collect();
            let rest = u128::from(TOTAL_BPS) - u128::from(training_bps);
            *payees.entry(author).or_default() += rest * sum;
            payees
        }
        (true, false) => [(author, 1)].into(),
        (false, true) => effective,
        (false, false) => BTreeMap::new(),
    }
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
    apportion(pool, weights)
}

/// [`largest_remainder`] over any ordered keys (adapter slots); ties go to the lower key.
fn apportion<K: Ord + Clone>(pool: U256, weights: &BTreeMap<K, u128>) -> Option<Vec<(K, U256)>> {
    let total: u128 = weights.values().sum();
    if total == 0 {
        return None;
    }
    let total = U256::from(total);
    // pool = q·Σw + r, so pool·w/Σw = q·w + r·w/Σw.
    let q = pool / total;
    let r = pool % total;
    let mut shares: Vec<(K, U256, U256)> = weights
        .iter()
        .filter(|&(_, &w)| w > 0)
        .map(|(key, &w)| {
            let w = U256::from(w);
            let part = r * w;
            (key.clone(), q * w + part / total, part % total)
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
        let w = adapter_slots(&request, &Governance::default(), 5_000);
        assert_eq!(w[&(addr(1), None)].weight, 3 << 51); // (0.5 + 0.25)·2^53
        assert_eq!(w[&(addr(2), None)].weight, 1 << 53);
        assert_eq!(w[&(addr(3), None)].weight, 0);
    }
}
