//! The property test: every split conserves the fee exactly, for random fees, policies,
//! contributors, adapters and governance.

use alloy_primitives::{Address, U256, U512};
use proptest::prelude::*;
use tribute_attribution::split::{Governance, SplitPolicy};

use super::*;

/// A pool of addresses so that random inputs repeat contributors and share roles.
fn pool_address(i: u8) -> Address {
    Address::repeat_byte(i + 1)
}

fn fee() -> impl Strategy<Value = U256> {
    prop_oneof![
        (1_u64..20_000).prop_map(U256::from),
        any::<[u64; 4]>().prop_map(U256::from_limbs),
        (0_u64..10_000).prop_map(|k| U256::MAX - U256::from(k)),
        (1_usize..256).prop_map(|bit| U256::from(1_u8) << bit),
    ]
    .prop_filter("positive", |f| !f.is_zero())
}

fn policy() -> impl Strategy<Value = SplitPolicy> {
    prop_oneof![
        Just(SplitPolicy::default()),
        proptest::collection::vec(0_u16..=10_000, 3).prop_map(|mut cuts| {
            cuts.sort_unstable();
            SplitPolicy {
                contributors_bps: cuts[0],
                adapters_bps: cuts[1] - cuts[0],
                model_owner_bps: cuts[2] - cuts[1],
                treasury_bps: 10_000 - cuts[2],
            }
        }),
    ]
}

/// Random raw weights scaled to basis points summing to exactly 10,000.
fn contributors() -> impl Strategy<Value = Vec<(Address, u32)>> {
    proptest::collection::vec((0_u8..8, 0_u32..1_000), 0..10).prop_map(|raw| {
        let total: u32 = raw.iter().map(|r| r.1).sum();
        if total == 0 {
            return raw
                .first()
                .map_or(Vec::new(), |&(i, _)| vec![(pool_address(i), 10_000)]);
        }
        let mut out: Vec<(Address, u32)> = raw
            .iter()
            .map(|&(i, w)| (pool_address(i), w * 10_000 / total))
            .collect();
        let given: u32 = out.iter().map(|r| r.1).sum();
        out[0].1 += 10_000 - given;
        out
    })
}

fn adapters() -> impl Strategy<Value = Vec<(Address, f64)>> {
    let weight = prop_oneof![
        -10.0_f64..10.0,
        Just(0.0),
        Just(1.0),
        Just(-1e-300),
        Just(1e300)
    ];
    proptest::collection::vec((0_u8..8, weight), 0..5)
        .prop_map(|v| v.into_iter().map(|(i, w)| (pool_address(i), w)).collect())
}

fn governance() -> impl Strategy<Value = Governance> {
    (
        proptest::collection::btree_map(0_u8..8, 0_u16..=20_000, 0..6),
        proptest::collection::btree_set(0_u8..8, 0..4),
    )
        .prop_map(|(reputation, blocklist)| Governance {
            reputation: reputation
                .into_iter()
                .map(|(i, r)| (pool_address(i), r))
                .collect(),
            blocklist: blocklist.into_iter().map(pool_address).collect(),
        })
}

fn floor_bps(fee: U256, bps: u16) -> U256 {
    let exact = U512::from(fee) * U512::from(bps) / U512::from(10_000_u16);
    U256::from(exact)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn splits_conserve_the_fee_exactly(
        fee in fee(),
        policy in policy(),
        contributors in contributors(),
        adapters in adapters(),
        governance in governance(),
        owner in 0_u8..10,
        treasury in 0_u8..10,
    ) {
        let owner = pool_address(owner);
        let treasury = pool_address(treasury);
        let mut governance = governance;
        governance.blocklist.remove(&owner);
        governance.blocklist.remove(&treasury);
        let mut builder = SplitRequest::builder(fee).model_owner(owner).treasury(treasury);
        for &(c, w) in &contributors {
            builder = builder.contributor(c, w);
        }
        for &(author, w) in &adapters {
            builder = builder.adapter(author, w);
        }
        let request = builder.build().unwrap();
        let split = policy.split(&request, &governance).unwrap();

        // Exact conservation, per payout and per role.
        prop_assert_eq!(total(&split), fee);
        prop_assert_eq!(split.totals.sum(), fee);
        prop_assert_eq!(split.fee, fee);
        let mut by_role = RoleAmounts::default();
        for p in &split.payouts {
            prop_assert_eq!(p.amount, p.by_role.sum());
            prop_assert!(!p.amount.is_zero());
            prop_assert!(!governance.is_blocked(&p.address));
            by_role.contributor += p.by_role.contributor;
            by_role.adapter_author += p.by_role.adapter_author;
            by_role.model_owner += p.by_role.model_owner;
            by_role.treasury += p.by_role.treasury;
        }
        prop_assert_eq!(by_role, split.totals);
        prop_assert!(split.payouts.windows(2).all(|w| w[0].address < w[1].address));

        // Each role gets at least its pool, and the treasury at most 3 wei more than its own
        // plus an unclaimed contributor pool.
        let pools = [
            floor_bps(fee, policy.contributors_bps),
            floor_bps(fee, policy.adapters_bps),
            floor_bps(fee, policy.model_owner_bps),
            floor_bps(fee, policy.treasury_bps),
        ];
        let dust = fee - pools.iter().copied().sum::<U256>();
        prop_assert!(dust <= U256::from(3_u8));
        let contributors_paid = !split.totals.contributor.is_zero();
        if contributors_paid {
            prop_assert_eq!(split.totals.contributor, pools[0]);
        }
        let adapters_paid = !split.totals.adapter_author.is_zero();
        if adapters_paid {
            prop_assert_eq!(split.totals.adapter_author, pools[1]);
        }
        let unclaimed_c = if contributors_paid { U256::ZERO } else { pools[0] };
        let unclaimed_a = if adapters_paid { U256::ZERO } else { pools[1] };
        prop_assert_eq!(split.totals.treasury, pools[3] + dust + unclaimed_c);
        prop_assert_eq!(split.totals.model_owner, pools[2] + unclaimed_a);

        // Every contributor's share is within 1 wei of its exact pro-rata share.
        let mut weights: BTreeMap<Address, u64> = BTreeMap::new();
        for &(c, w) in &contributors {
            if !governance.is_blocked(&c) {
                *weights.entry(c).or_default() += u64::from(w);
            }
        }
        for (c, w) in &mut weights {
            *w *= u64::from(governance.reputation_of(c));
        }
        let sum_w: u64 = weights.values().sum();
        if sum_w > 0 {
            let pool = U512::from(pools[0]);
            for (c, w) in &weights {
                let got = split
                    .payouts
                    .iter()
                    .find(|p| p.address == *c)
                    .map_or(U256::ZERO, |p| p.by_role.contributor);
                let exact_num = pool * U512::from(*w); // share·Σw should be within Σw of this
                let got_num = U512::from(got) * U512::from(sum_w);
                let diff = if got_num > exact_num { got_num - exact_num } else { exact_num - got_num };
                prop_assert!(diff < U512::from(sum_w), "{c}: {got}");
            }
        }

        // Deterministic, and independent of the order of the inputs.
        prop_assert_eq!(&policy.split(&request, &governance).unwrap(), &split);
        let mut reversed = request.clone();
        reversed.contributors.reverse();
        reversed.adapters.reverse();
        prop_assert_eq!(&policy.split(&reversed, &governance).unwrap(), &split);
    }
}
