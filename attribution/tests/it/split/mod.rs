//! Reward split: golden values, governance rules, typed errors, serde and a property test
//! of exact conservation.

use std::collections::BTreeMap;

use alloy_primitives::{Address, U256};
use tribute_attribution::split::{
    Governance, RewardConfig, Role, RoleAmounts, Split, SplitError, SplitPolicy, SplitRequest,
    parse_address,
};

const A: &str = "0x1111111111111111111111111111111111111111";
const B: &str = "0x2222222222222222222222222222222222222222";
const C: &str = "0x3333333333333333333333333333333333333333";
const D: &str = "0x4444444444444444444444444444444444444444";
const E: &str = "0x5555555555555555555555555555555555555555";
const OWNER: &str = "0x6666666666666666666666666666666666666666";
const TREASURY: &str = "0x7777777777777777777777777777777777777777";

fn a(s: &str) -> Address {
    parse_address(s).expect("test addresses are valid")
}

fn u(s: &str) -> U256 {
    s.parse().expect("test amounts are valid")
}

fn ether() -> U256 {
    U256::from(10_u64.pow(18))
}

fn split(request: &SplitRequest, governance: &Governance) -> Split {
    let split = SplitPolicy::default()
        .split(request, governance)
        .expect("the request is valid");
    assert_eq!(total(&split), request.fee, "conservation");
    split
}

fn total(split: &Split) -> U256 {
    split.payouts.iter().map(|p| p.amount).sum()
}

/// `(address, wei)` for every payout, to compare with a golden table.
fn table(split: &Split) -> Vec<(Address, U256)> {
    split
        .payouts
        .iter()
        .map(|p| (p.address, p.amount))
        .collect()
}

fn golden(rows: &[(&str, &str)]) -> Vec<(Address, U256)> {
    rows.iter().map(|&(s, v)| (a(s), u(v))).collect()
}

/// 1 ether, default policy (70/10/15/5 %), three contributors 50/30/20 %, one adapter.
fn one_ether() -> SplitRequest {
    SplitRequest::builder(ether())
        .contributor(A, 5_000)
        .contributor(B, 3_000)
        .contributor(C, 2_000)
        .adapter(D, 0.7)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .expect("the request is valid")
}

#[test]
fn golden_one_ether() {
    let split = split(&one_ether(), &Governance::default());
    assert_eq!(
        table(&split),
        golden(&[
            (A, "350000000000000000"),
            (B, "210000000000000000"),
            (C, "140000000000000000"),
            (D, "100000000000000000"),
            (OWNER, "150000000000000000"),
            (TREASURY, "50000000000000000"),
        ])
    );
    assert_eq!(
        split.totals,
        RoleAmounts {
            contributor: u("700000000000000000"),
            adapter_author: u("100000000000000000"),
            model_owner: u("150000000000000000"),
            treasury: u("50000000000000000"),
        }
    );
    assert_eq!(split.amount_of(&a(B)), u("210000000000000000"));
    assert_eq!(split.amount_of(&a(E)), U256::ZERO);
}

#[test]
fn golden_odd_fee_with_dust_and_largest_remainders() {
    // Pools: floor(7000.7) = 7000, floor(1000.1) = 1000, floor(1500.15) = 1500,
    // floor(500.05) = 500; 1 wei of dust to the treasury.
    // Contributors 3333/3333/3334 of 7000: 2333.1, 2333.1, 2333.8 → the leftover wei goes
    // to C. Adapters |1| and |-3| of 1000: 250 and 750.
    let request = SplitRequest::builder(U256::from(10_001_u64))
        .contributor(A, 3_333)
        .contributor(B, 3_333)
        .contributor(C, 3_334)
        .adapter(D, 1.0)
        .adapter(E, -3.0)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    let split = split(&request, &Governance::default());
    assert_eq!(
        table(&split),
        golden(&[
            (A, "2333"),
            (B, "2333"),
            (C, "2334"),
            (D, "250"),
            (E, "750"),
            (OWNER, "1500"),
            (TREASURY, "501"),
        ])
    );
}

#[test]
fn golden_largest_possible_fee() {
    // Reference values computed with Python integers (floor division, exact fractions).
    let request = SplitRequest::builder(U256::MAX)
        .contributor(A, 3_333)
        .contributor(B, 3_333)
        .contributor(C, 3_334)
        .adapter(D, 2.5)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    let split = split(&request, &Governance::default());
    assert_eq!(
        table(&split),
        golden(&[
            (
                A,
                "27015452339958241554273346512376975781246420122340599996045848924886212276293"
            ),
            (
                B,
                "27015452339958241554273346512376975781246420122340599996045848924886212276293"
            ),
            (
                C,
                "27023557786204853687952996481327583934796149021267194835528610955766766195368"
            ),
            (
                D,
                "11579208923731619542357098500868790785326998466564056403945758400791312963993"
            ),
            (
                OWNER,
                "17368813385597429313535647751303186177990497699846084605918637601186969445990"
            ),
            (
                TREASURY,
                "5789604461865809771178549250434395392663499233282028201972879200395656481998"
            ),
        ])
    );
}

/// The ```json blocks of docs/REWARDS.md, in order.
fn doc_json_blocks() -> Vec<String> {
    let doc = include_str!("../../../../docs/REWARDS.md");
    doc.split("```json\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn worked_example_from_the_docs() {
    let blocks = doc_json_blocks();
    assert!(blocks.len() >= 2, "docs/REWARDS.md lost its JSON examples");
    let config: RewardConfig = serde_json::from_str(&blocks[0]).unwrap();
    let request: SplitRequest = serde_json::from_str(&blocks[1]).unwrap();
    assert_eq!(config.policy, SplitPolicy::default());
    let split = config.split(&request).unwrap();
    assert_eq!(
        table(&split),
        golden(&[
            (A, "442107"),
            (B, "257895"),
            (D, "75000"),
            (E, "25000"),
            (OWNER, "150000"),
            (TREASURY, "50001"),
        ])
    );
    assert_eq!(total(&split), U256::from(1_000_003_u64));

    // The builder in the docs' code sample gives the same request.
    let built = SplitRequest::builder(U256::from(1_000_003_u64))
        .contributor(A, 4_000)
        .contributor(B, 2_000)
        .contributor(B, 1_500)
        .contributor(C, 2_500)
        .adapter(D, 0.75)
        .adapter(E, -0.25)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    assert_eq!(built, request);

    let round_trip: RewardConfig =
        serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
    assert_eq!(round_trip, config);
    assert_eq!(
        serde_json::from_str::<RewardConfig>("{}").unwrap(),
        RewardConfig::default()
    );
}

#[test]
fn one_wei_goes_to_the_treasury_as_dust() {
    let request = SplitRequest::builder(U256::from(1_u8))
        .contributor(A, 10_000)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    let split = split(&request, &Governance::default());
    assert_eq!(table(&split), golden(&[(TREASURY, "1")]));
}

#[test]
fn repeated_contributors_are_summed_and_order_does_not_matter() {
    let build = |rows: &[(&str, u32)]| {
        rows.iter()
            .fold(SplitRequest::builder(ether()), |b, &(s, w)| {
                b.contributor(s, w)
            })
            .adapter(D, 1.0)
            .model_owner(OWNER)
            .treasury(TREASURY)
            .build()
            .unwrap()
    };
    let chunks = split(
        &build(&[(A, 2_500), (B, 5_000), (A, 2_500)]),
        &Governance::default(),
    );
    let merged = split(&build(&[(B, 5_000), (A, 5_000)]), &Governance::default());
    assert_eq!(chunks, merged);
    assert_eq!(chunks.amount_of(&a(A)), u("350000000000000000"));
    assert_eq!(
        chunks.payouts.iter().filter(|p| p.address == a(A)).count(),
        1
    );
}

#[test]
fn one_address_in_several_roles_gets_one_payout() {
    let request = SplitRequest::builder(ether())
        .contributor(OWNER, 5_000)
        .contributor(A, 5_000)
        .adapter(OWNER, 1.0)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    let split = split(&request, &Governance::default());
    let owner = split
        .payouts
        .iter()
        .find(|p| p.address == a(OWNER))
        .unwrap();
    assert_eq!(
        owner.by_role,
        RoleAmounts {
            contributor: u("350000000000000000"),
            adapter_author: u("100000000000000000"),
            model_owner: u("150000000000000000"),
            treasury: U256::ZERO,
        }
    );
    assert_eq!(owner.amount, u("600000000000000000"));
    assert_eq!(owner.by_role.get(Role::ModelOwner), u("150000000000000000"));
}

#[test]
fn a_blocked_contributor_gets_nothing_and_its_share_goes_to_the_others() {
    let mut governance = Governance::default();
    governance.block(C).unwrap();
    let split = split(&one_ether(), &governance);
    // 700000000000000000 wei between A and B, 5:3.
    assert_eq!(
        table(&split),
        golden(&[
            (A, "437500000000000000"),
            (B, "262500000000000000"),
            (D, "100000000000000000"),
            (OWNER, "150000000000000000"),
            (TREASURY, "50000000000000000"),
        ])
    );
}

#[test]
fn reputation_reweights_contributors_without_changing_the_pool() {
    let request = SplitRequest::builder(ether())
        .contributor(A, 5_000)
        .contributor(B, 5_000)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    let mut governance = Governance::default();
    governance.set_reputation(A, 20_000).unwrap();
    let split = split(&request, &governance);
    // 2:1 of 7e17 = 466666666666666666.67 and 233333333333333333.33: the leftover wei
    // goes to A (remainder 2/3 beats 1/3).
    assert_eq!(split.amount_of(&a(A)), u("466666666666666667"));
    assert_eq!(split.amount_of(&a(B)), u("233333333333333333"));
    assert_eq!(split.totals.contributor, u("700000000000000000"));

    // Raising everyone alike changes nothing.
    governance.set_reputation(B, 20_000).unwrap();
    let even = SplitPolicy::default().split(&request, &governance).unwrap();
    assert_eq!(even.amount_of(&a(A)), u("350000000000000000"));
    assert_eq!(even.amount_of(&a(B)), u("350000000000000000"));
}

#[test]
fn no_eligible_contributor_sends_the_contributor_pool_to_the_treasury() {
    let treasury_gets = u("750000000000000000"); // 70 % + 5 %
    // Everyone blocked.
    let mut blocked = Governance::default();
    for s in [A, B, C] {
        blocked.block(s).unwrap();
    }
    let all_blocked = split(&one_ether(), &blocked);
    assert_eq!(all_blocked.amount_of(&a(TREASURY)), treasury_gets);
    assert_eq!(all_blocked.totals.contributor, U256::ZERO);
    assert_eq!(all_blocked.totals.treasury, treasury_gets);
    for s in [A, B, C] {
        assert_eq!(all_blocked.amount_of(&a(s)), U256::ZERO);
    }
    // Everyone at reputation 0.
    let mut muted = Governance::default();
    for s in [A, B, C] {
        muted.set_reputation(s, 0).unwrap();
    }
    assert_eq!(
        split(&one_ether(), &muted).amount_of(&a(TREASURY)),
        treasury_gets
    );
    // No sources at all.
    let none = SplitRequest::builder(ether())
        .adapter(D, 1.0)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    assert_eq!(
        split(&none, &Governance::default()).amount_of(&a(TREASURY)),
        treasury_gets
    );
}

#[test]
fn no_eligible_adapter_sends_the_adapter_pool_to_the_model_owner() {
    let owner_gets = u("250000000000000000"); // 15 % + 10 %
    let no_adapters = SplitRequest::builder(ether())
        .contributor(A, 10_000)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    let split1 = split(&no_adapters, &Governance::default());
    assert_eq!(split1.amount_of(&a(OWNER)), owner_gets);
    assert_eq!(split1.totals.adapter_author, U256::ZERO);
    assert_eq!(split1.totals.model_owner, owner_gets);

    let zero_weights = SplitRequest::builder(ether())
        .contributor(A, 10_000)
        .adapter(D, 0.0)
        .adapter(E, -0.0)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    assert_eq!(
        split(&zero_weights, &Governance::default()).amount_of(&a(OWNER)),
        owner_gets
    );

    // A blocked author's share goes to the other authors; all blocked → model owner.
    let two = SplitRequest::builder(ether())
        .contributor(A, 10_000)
        .adapter(D, 0.5)
        .adapter(E, 0.5)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    let mut governance = Governance::default();
    governance.block(D).unwrap();
    let one_blocked = split(&two, &governance);
    assert_eq!(one_blocked.amount_of(&a(D)), U256::ZERO);
    assert_eq!(one_blocked.amount_of(&a(E)), u("100000000000000000"));
    governance.block(E).unwrap();
    assert_eq!(split(&two, &governance).amount_of(&a(OWNER)), owner_gets);
}

#[test]
fn every_bad_input_has_a_typed_error() {
    let governance = Governance::default();
    let policy = SplitPolicy::default();

    let zero = SplitRequest::builder(U256::ZERO)
        .contributor(A, 10_000)
        .model_owner(OWNER)
        .treasury(TREASURY)
        .build()
        .unwrap();
    assert_eq!(policy.split(&zero, &governance), Err(SplitError::ZeroFee));

    let lopsided = SplitPolicy {
        treasury_bps: 400,
        ..SplitPolicy::default()
    };
    assert_eq!(
        lopsided.validate(),
        Err(SplitError::PolicyBps { sum: 9_900 })
    );
    assert_eq!(
        lopsided.split(&one_ether(), &governance),
        Err(SplitError::PolicyBps { sum: 9_900 })
    );
    let overfull = SplitPolicy {
        contributors_bps: u16::MAX,
        ..SplitPolicy::default()
    };
    assert_eq!(
        overfull.validate(),
        Err(SplitError::PolicyBps {
            sum: 65_535 + 3_000
        })
    );

    for (weights, sum) in [
        (vec![5_000, 4_999], 9_999_u64),
        (vec![10_000, 1], 10_001),
        (vec![0], 0),
        (vec![u32::MAX, u32::MAX], 2 * u64::from(u32::MAX)),
    ] {
        let request = weights
            .iter()
            .fold(SplitRequest::builder(ether()), |b, &w| b.contributor(A, w))
            .model_owner(OWNER)
            .treasury(TREASURY)
            .build()
            .unwrap();
        assert_eq!(
            policy.split(&request, &governance),
            Err(SplitError::WeightsDoNotSum { sum })
        );
    }

    let bad = "0x12345";
    assert_eq!(
        SplitRequest::builder(ether())
            .contributor(A, 5_000)
            .contributor(bad, 5_000)
            .contributor("also bad", 0)
            .model_owner(OWNER)
            .treasury(TREASURY)
            .build(),
        Err(SplitError::BadAddress { input: bad.into() }),
        "the first bad address is reported"
    );
    assert!(matches!(
        Governance::default().block("0xnothex"),
        Err(SplitError::BadAddress { .. })
    ));

    for weight in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let request = SplitRequest::builder(ether())
            .contributor(A, 10_000)
            .adapter(D, 1.0)
            .adapter(E, weight)
            .model_owner(OWNER)
            .treasury(TREASURY)
            .build()
            .unwrap();
        match policy.split(&request, &governance) {
            Err(SplitError::AdapterWeight {
                index: 1,
                weight: w,
            }) => {
                assert!(w.is_nan() == weight.is_nan() && (w.is_nan() || w == weight));
            }
            other => panic!("{weight}: {other:?}"),
        }
    }

    assert_eq!(
        Governance::default().set_reputation(A, 20_001).map(|_| ()),
        Err(SplitError::Reputation {
            address: a(A),
            bps: 20_001
        })
    );
    let mut too_high = Governance::default();
    too_high.reputation.insert(a(B), 30_000);
    assert_eq!(
        policy.split(&one_ether(), &too_high),
        Err(SplitError::Reputation {
            address: a(B),
            bps: 30_000
        })
    );

    for (role, who) in [(Role::ModelOwner, OWNER), (Role::Treasury, TREASURY)] {
        let mut blocked = Governance::default();
        blocked.block(who).unwrap();
        assert_eq!(
            policy.split(&one_ether(), &blocked),
            Err(SplitError::BlockedRecipient {
                role,
                address: a(who)
            })
        );
    }

    assert_eq!(
        SplitRequest::builder(ether()).treasury(TREASURY).build(),
        Err(SplitError::MissingRecipient {
            role: Role::ModelOwner
        })
    );
    assert_eq!(
        SplitRequest::builder(ether()).model_owner(OWNER).build(),
        Err(SplitError::MissingRecipient {
            role: Role::Treasury
        })
    );
}

#[test]
fn errors_say_what_to_do() {
    assert_eq!(
        SplitError::PolicyBps { sum: 9_900 }.to_string(),
        "the split policy's basis points sum to 9900, not 10000: adjust contributors_bps, \
         adapters_bps, model_owner_bps and treasury_bps so they add up to 10000"
    );
    let e = SplitError::BlockedRecipient {
        role: Role::Treasury,
        address: a(TREASURY),
    };
    assert!(e.to_string().contains("the treasury 0x7777"), "{e}");
}

mod conservation;
mod json;
mod training;
