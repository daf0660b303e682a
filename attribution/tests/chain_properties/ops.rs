//! The operations a case is made of, and their proptest strategies.

use super::*;

/// One receipt of a batch: who is cited with which raw weight (normalised to 10,000 bps),
/// which adapters were merged, which model answered (`None`: retrieval only), its fee.
#[derive(Debug, Clone)]
pub(crate) struct ReceiptSpec {
    pub(crate) fee: u128,
    pub(crate) version_1: bool,
    pub(crate) model: Option<usize>,
    pub(crate) adapters: Vec<(usize, i32)>,
    pub(crate) contributors: Vec<(usize, u16)>,
}

/// How a forged settlement is signed.
#[derive(Debug, Clone)]
pub(crate) enum Forgery {
    /// The `SettleBatch` by another anvil account.
    OtherAccount(usize),
    /// By a random key.
    RandomKey([u8; 32]),
    /// By the payer, for another chain id.
    ChainId(u64),
    /// By the payer, for another contract.
    Contract([u8; 20]),
    /// The receipts (not the batch) signed by the payer for another chain id.
    ReceiptChainId(u64),
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Deposit {
        payer: usize,
        wei: u128,
    },
    WithdrawDeposit {
        payer: usize,
        wei: u128,
    },
    Settle {
        payer: usize,
        receipts: Vec<ReceiptSpec>,
    },
    Replay {
        pick: Index,
    },
    Forged {
        payer: usize,
        forgery: Forgery,
    },
    /// A payee withdraws: `who`, or (`earner`) one of the accounts with a balance, if any.
    Withdraw {
        who: usize,
        earner: Option<Index>,
    },
    Register {
        adapter: bool,
        id: usize,
        owner: Option<usize>,
        sender: usize,
    },
    /// `from` transfers an id; `by_owner`: the owner of a registered id, if any, does.
    Transfer {
        adapter: bool,
        id: Index,
        by_owner: bool,
        from: usize,
        to: usize,
    },
}

/// One case: a split policy and the operations.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) policy: SplitPolicy,
    pub(crate) ops: Vec<Op>,
}

pub(crate) fn payer() -> impl Strategy<Value = usize> {
    prop::sample::select(PAYERS.to_vec())
}

pub(crate) fn fee() -> impl Strategy<Value = u128> {
    // Tiny fees exercise the rounding dust, large ones the deposit checks.
    prop_oneof![
        3 => 1_u128..=1_000,
        3 => 1_u128..=1_000_000_000_000,
        1 => 1_u128..=2_000_000_000_000_000,
    ]
}

pub(crate) fn receipt_spec() -> impl Strategy<Value = ReceiptSpec> {
    (
        fee(),
        any::<bool>(),
        prop::option::weighted(0.75, 0..IDS),
        vec((0..IDS, -1_000_000_i32..=1_000_000), 0..=2),
        vec((PEOPLE, 1_u16..=100), 0..=3),
    )
        .prop_map(
            |(fee, version_1, model, adapters, contributors)| ReceiptSpec {
                fee,
                version_1,
                model,
                adapters,
                contributors,
            },
        )
}

pub(crate) fn forgery() -> impl Strategy<Value = Forgery> {
    prop_oneof![
        (0..ACCOUNTS).prop_map(Forgery::OtherAccount),
        any::<[u8; 32]>().prop_map(Forgery::RandomKey),
        any::<u64>().prop_map(Forgery::ChainId),
        any::<[u8; 20]>().prop_map(Forgery::Contract),
        any::<u64>().prop_map(Forgery::ReceiptChainId),
    ]
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (payer(), 1_u128..=5_000_000_000_000_000)
            .prop_map(|(payer, wei)| Op::Deposit { payer, wei }),
        1 => (payer(), 1_u128..=3_000_000_000_000_000)
            .prop_map(|(payer, wei)| Op::WithdrawDeposit { payer, wei }),
        4 => (payer(), vec(receipt_spec(), 1..=4))
            .prop_map(|(payer, receipts)| Op::Settle { payer, receipts }),
        2 => any::<Index>().prop_map(|pick| Op::Replay { pick }),
        2 => (payer(), forgery()).prop_map(|(payer, forgery)| Op::Forged { payer, forgery }),
        2 => (3..ACCOUNTS, prop::option::weighted(0.7, any::<Index>()))
            .prop_map(|(who, earner)| Op::Withdraw { who, earner }),
        3 => (any::<bool>(), 0..IDS, prop::option::weighted(0.9, PEOPLE), 0..ACCOUNTS).prop_map(
            |(adapter, id, owner, sender)| Op::Register { adapter, id, owner, sender }
        ),
        2 => (any::<bool>(), any::<Index>(), prop::bool::weighted(0.75), PEOPLE, PEOPLE).prop_map(
            |(adapter, id, by_owner, from, to)| Op::Transfer { adapter, id, by_owner, from, to }
        ),
    ]
}

pub(crate) fn policy() -> impl Strategy<Value = SplitPolicy> {
    prop_oneof![
        Just(SplitPolicy::default()),
        vec(0_u16..=10_000, 3).prop_map(|mut cuts| {
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

/// Both payers deposit first (so that most settlements can go through), then 2 to 10 random
/// operations.
pub(crate) fn case() -> impl Strategy<Value = Case> {
    let funding = 1_u128..=5_000_000_000_000_000;
    (
        policy(),
        funding.clone(),
        funding,
        vec(op(), 2..=MAX_OPS - 2),
    )
        .prop_map(|(policy, first, second, rest)| {
            let mut ops = vec![
                Op::Deposit {
                    payer: PAYERS[0],
                    wei: first,
                },
                Op::Deposit {
                    payer: PAYERS[1],
                    wei: second,
                },
            ];
            ops.extend(rest);
            Case { policy, ops }
        })
}
