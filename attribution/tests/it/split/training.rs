//! Adapters with a provenance manifest: their slice of the adapter pool is split between
//! the author and the contributors of the training data. The worked example of
//! docs/REWARDS.md, governance rules, and property tests of exact conservation.

use alloy_primitives::{Address, U256, U512};
use proptest::prelude::*;
use tribute_attribution::split::{
    AdapterShare, DEFAULT_TRAINING_CONTRIBUTORS_BPS, Governance, RewardConfig, SplitError,
    SplitPolicy, SplitRequest, TrainingShare,
};

use super::*;

fn share(contributor: &str, tokens: u64) -> TrainingShare {
    TrainingShare {
        contributor: a(contributor),
        tokens,
    }
}

#[test]
fn worked_example_of_adapter_contributors_from_the_docs() {
    let blocks = doc_json_blocks();
    assert!(
        blocks.len() >= 4,
        "docs/REWARDS.md lost its adapter-contributors example"
    );
    let config: RewardConfig = serde_json::from_str(&blocks[2]).unwrap();
    let request: SplitRequest = serde_json::from_str(&blocks[3]).unwrap();
    assert_eq!(config.training_contributors_bps, 6_000);
    let split = config.split(&request).unwrap();
    assert_eq!(
        table(&split),
        golden(&[
            (A, "714211"),
            (B, "15789"),
            (D, "20000"),
            (E, "50000"),
            (OWNER, "150000"),
            (TREASURY, "50000"),
        ])
    );
    assert_eq!(total(&split), request.fee);
    let a_payout = split.payouts.iter().find(|p| p.address == a(A)).unwrap();
    assert_eq!(a_payout.by_role.contributor, u("700000"));
    assert_eq!(a_payout.by_role.adapter_author, u("14211"));

    // The builder gives the same request.
    let built = SplitRequest::builder(U256::from(1_000_000_u64))
        .contributor(A, 10_000)
        .trained_adapter(D, 1.0, [share(A, 300), share(B, 500), share(C, 200)])
        .adapter(E, -1.0)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    assert_eq!(built, request);
    let round_trip: RewardConfig =
        serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
    assert_eq!(round_trip, config);
}

#[test]
fn the_default_share_is_left_out_of_the_json() {
    let json = serde_json::to_string(&RewardConfig::default()).unwrap();
    assert!(!json.contains("training"), "{json}");
    assert_eq!(
        RewardConfig::default().training_contributors_bps,
        DEFAULT_TRAINING_CONTRIBUTORS_BPS
    );
    assert!(
        serde_json::from_str::<RewardConfig>(r#"{"training_contributors_bps": 10001}"#).is_err()
    );
    let all: RewardConfig =
        serde_json::from_str(r#"{"training_contributors_bps": 10000}"#).unwrap();
    assert_eq!(all.training_contributors_bps, 10_000);
    assert_eq!(
        SplitPolicy::default().split_with_training(
            &super::one_ether(),
            &Governance::default(),
            10_001
        ),
        Err(SplitError::TrainingBps { bps: 10_001 })
    );
}

fn trained(author: &str, training: &[(&str, u64)]) -> SplitRequest {
    SplitRequest::builder(U256::from(1_000_u64))
        .trained_adapter(author, 1.0, training.iter().map(|&(c, t)| share(c, t)))
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .expect("the request is valid")
}

#[test]
fn blocked_author_or_contributors_pass_their_share_to_the_others_in_the_slot() {
    // Adapter pool 100 wei (10 % of 1,000), half to the data.
    let request = trained(D, &[(A, 1), (B, 3)]);
    let plain = split(&request, &Governance::default());
    assert_eq!(
        table(&plain),
        golden(&[
            (A, "13"),
            (B, "37"),
            (D, "50"),
            (OWNER, "150"),
            (TREASURY, "750")
        ])
    );
    // A blocked author: the contributors share the whole slice.
    let mut governance = Governance::default();
    governance.block(D).unwrap();
    assert_eq!(
        table(&split(&request, &governance)),
        golden(&[(A, "25"), (B, "75"), (OWNER, "150"), (TREASURY, "750")])
    );
    // A blocked contributor: the other contributor takes the data's half.
    let mut governance = Governance::default();
    governance.block(B).unwrap();
    assert_eq!(
        table(&split(&request, &governance)),
        golden(&[(A, "50"), (D, "50"), (OWNER, "150"), (TREASURY, "750")])
    );
    // All contributors blocked: the author takes the slice.
    governance.block(A).unwrap();
    assert_eq!(
        table(&split(&request, &governance)),
        golden(&[(D, "100"), (OWNER, "150"), (TREASURY, "750")])
    );
    // Nobody in the slot can be paid: the adapter pool goes to the model owner, as when
    // no adapter author can be paid.
    governance.block(D).unwrap();
    assert_eq!(
        table(&split(&request, &governance)),
        golden(&[(OWNER, "250"), (TREASURY, "750")])
    );
}

#[test]
fn an_unpayable_trained_slot_goes_to_the_other_adapters() {
    let request = SplitRequest::builder(U256::from(1_000_u64))
        .trained_adapter(D, 1.0, [share(A, 10)])
        .adapter(E, 1.0)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    let mut governance = Governance::default();
    governance.block(D).unwrap().block(A).unwrap();
    assert_eq!(
        table(&split(&request, &governance)),
        golden(&[(E, "100"), (OWNER, "150"), (TREASURY, "750")])
    );
}

#[test]
fn reputation_reweights_training_contributors_only() {
    let request = trained(D, &[(A, 1), (B, 1)]);
    let mut governance = Governance::default();
    governance.set_reputation(A, 20_000).unwrap();
    // The data's half (50) splits 2 : 1; the author's half stays 50.
    assert_eq!(
        table(&split(&request, &governance)),
        golden(&[
            (A, "33"),
            (B, "17"),
            (D, "50"),
            (OWNER, "150"),
            (TREASURY, "750")
        ])
    );
}

#[test]
fn overflowing_training_tokens_are_refused() {
    let request = trained(D, &[(A, u64::MAX), (B, 1)]);
    assert_eq!(
        SplitPolicy::default().split(&request, &Governance::default()),
        Err(SplitError::TrainingTokens { index: 0 })
    );
    // Huge but fitting counts are fine.
    let request = trained(D, &[(A, u64::MAX - 1), (B, 1)]);
    split(&request, &Governance::default());
}

fn pool_address(i: u8) -> Address {
    Address::repeat_byte(i + 1)
}

fn fee() -> impl Strategy<Value = U256> {
    prop_oneof![
        (1_u64..20_000).prop_map(U256::from),
        any::<[u64; 4]>().prop_map(U256::from_limbs),
        (0_u64..10_000).prop_map(|k| U256::MAX - U256::from(k)),
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

fn tokens() -> impl Strategy<Value = u64> {
    prop_oneof![0_u64..1_000, (0_u64..1 << 40), Just(u64::MAX / 8)]
}

fn training() -> impl Strategy<Value = Vec<TrainingShare>> {
    proptest::collection::vec((0_u8..10, tokens()), 0..6).prop_map(|rows| {
        rows.into_iter()
            .map(|(c, tokens)| TrainingShare {
                contributor: pool_address(c),
                tokens,
            })
            .collect()
    })
}

fn adapters() -> impl Strategy<Value = Vec<AdapterShare>> {
    let weight = prop_oneof![Just(0.0), -2.0_f64..2.0, Just(1.0)];
    proptest::collection::vec((0_u8..10, weight, training()), 0..5).prop_map(|rows| {
        rows.into_iter()
            .map(|(author, merge_weight, training)| AdapterShare {
                author: pool_address(author),
                merge_weight,
                training,
            })
            .collect()
    })
}

fn governance() -> impl Strategy<Value = Governance> {
    (
        proptest::collection::btree_map(0_u8..10, 0_u16..=20_000, 0..5),
        proptest::collection::btree_set(0_u8..10, 0..4),
    )
        .prop_map(|(reputation, blocked)| Governance {
            reputation: reputation
                .into_iter()
                .map(|(i, bps)| (pool_address(i), bps))
                .collect(),
            blocklist: blocked.into_iter().map(pool_address).collect(),
        })
}

fn floor_bps(fee: U256, bps: u16) -> U256 {
    let (q, r) = (fee / U256::from(10_000_u16), fee % U256::from(10_000_u16));
    q * U256::from(bps) + r * U256::from(bps) / U256::from(10_000_u16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn trained_adapter_splits_conserve_every_wei(
        fee in fee(),
        policy in policy(),
        adapters in adapters(),
        governance in governance(),
        training_bps in prop_oneof![Just(0_u16), Just(10_000_u16), 0_u16..=10_000],
        owner in 0_u8..10,
        treasury in 0_u8..10,
    ) {
        let owner = pool_address(owner);
        let treasury = pool_address(treasury);
        let mut governance = governance;
        governance.blocklist.remove(&owner);
        governance.blocklist.remove(&treasury);
        let request = SplitRequest {
            fee,
            contributors: vec![],
            adapters,
            model_owner: owner,
            treasury,
        };
        let config = RewardConfig { policy, governance: governance.clone(), training_contributors_bps: training_bps };
        let split = config.split(&request).unwrap();

        prop_assert_eq!(total(&split), fee);
        prop_assert_eq!(split.totals.sum(), fee);
        for p in &split.payouts {
            prop_assert_eq!(p.amount, p.by_role.sum());
            prop_assert!(!p.amount.is_zero());
            prop_assert!(!governance.is_blocked(&p.address), "blocked {} paid", p.address);
        }
        // The adapter pool is paid whole to adapter payees, or whole to the model owner.
        let adapter_pool = floor_bps(fee, policy.adapters_bps);
        let paid = split.totals.adapter_author;
        prop_assert!(paid == adapter_pool || paid.is_zero());

        // Deterministic and independent of the order of adapters and training rows.
        let mut reversed = request.clone();
        reversed.adapters.reverse();
        for a in &mut reversed.adapters {
            a.training.reverse();
        }
        prop_assert_eq!(&config.split(&reversed).unwrap(), &split);

        // Without manifests, every training share gives today's split.
        let mut untrained = request.clone();
        for a in &mut untrained.adapters {
            a.training.clear();
        }
        prop_assert_eq!(
            config.split(&untrained).unwrap(),
            policy.split(&untrained, &governance).unwrap()
        );
    }

    #[test]
    fn one_trained_adapter_pays_its_contributors_pro_rata(
        fee in fee(),
        training in training(),
        governance in governance(),
        training_bps in 0_u16..=10_000,
    ) {
        // Author, owner and treasury outside the contributors' addresses.
        let author = Address::repeat_byte(0xa0);
        let request = SplitRequest::builder(fee)
            .trained_adapter(author, 0.5, training.clone())
            .model_owner(Address::repeat_byte(0xb0))
            .treasury(Address::repeat_byte(0xc0))
            .build()
            .unwrap();
        let config = RewardConfig { governance: governance.clone(), training_contributors_bps: training_bps, ..RewardConfig::default() };
        let split = config.split(&request).unwrap();
        prop_assert_eq!(total(&split), fee);

        let mut effective: BTreeMap<Address, u128> = BTreeMap::new();
        for t in &training {
            if !governance.is_blocked(&t.contributor) {
                *effective.entry(t.contributor).or_default() +=
                    u128::from(t.tokens) * u128::from(governance.reputation_of(&t.contributor));
            }
        }
        effective.retain(|_, w| *w > 0);
        let sum: u128 = effective.values().sum();
        let pool = floor_bps(fee, SplitPolicy::default().adapters_bps);
        let data_bps = if sum == 0 { 0 } else { u128::from(training_bps) };
        // Each contributor within 1 wei of pool × bps/10,000 × w/Σw; the author the rest.
        let mut to_contributors = U256::ZERO;
        for (c, w) in &effective {
            let got = split.payouts.iter().find(|p| p.address == *c)
                .map_or(U256::ZERO, |p| p.by_role.adapter_author);
            to_contributors += got;
            let exact = U512::from(pool) * U512::from(data_bps) * U512::from(*w);
            let denom = U512::from(10_000_u16) * U512::from(sum);
            let got_num = U512::from(got) * denom;
            let diff = if got_num > exact { got_num - exact } else { exact - got_num };
            prop_assert!(diff < denom, "{}: {}", c, got);
        }
        for t in &training {
            if governance.is_blocked(&t.contributor) {
                prop_assert_eq!(split.amount_of(&t.contributor), U256::ZERO);
            }
        }
        let author_got = split.amount_of(&author);
        prop_assert_eq!(author_got + to_contributors, pool);
    }
}
