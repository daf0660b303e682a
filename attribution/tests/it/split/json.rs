//! The policy, governance, request and split types read and write the JSON documented in
//! docs/REWARDS.md.

use super::*;

#[test]
fn policy_serde() {
    let policy: SplitPolicy = serde_json::from_str(
        r#"{"contributors_bps": 6000, "adapters_bps": 2000, "model_owner_bps": 1500, "treasury_bps": 500}"#,
    )
    .unwrap();
    assert_eq!(
        policy,
        SplitPolicy {
            contributors_bps: 6_000,
            adapters_bps: 2_000,
            model_owner_bps: 1_500,
            treasury_bps: 500
        }
    );
    let json = serde_json::to_string(&policy).unwrap();
    assert_eq!(serde_json::from_str::<SplitPolicy>(&json).unwrap(), policy);
    // Missing fields take the defaults; the default is 70/10/15/5 %.
    assert_eq!(
        serde_json::from_str::<SplitPolicy>("{}").unwrap(),
        SplitPolicy::default()
    );
    assert_eq!(
        serde_json::to_value(SplitPolicy::default()).unwrap(),
        serde_json::json!({"contributors_bps": 7000, "adapters_bps": 1000,
                           "model_owner_bps": 1500, "treasury_bps": 500})
    );
    // A partial override that breaks the sum, a typo and an overflow are refused at load.
    let err = serde_json::from_str::<SplitPolicy>(r#"{"contributors_bps": 8000}"#).unwrap_err();
    assert!(err.to_string().contains("sum to 11000"), "{err}");
    assert!(serde_json::from_str::<SplitPolicy>(r#"{"contributor_bps": 7000}"#).is_err());
    assert!(serde_json::from_str::<SplitPolicy>(r#"{"treasury_bps": 70000}"#).is_err());
}

#[test]
fn governance_serde() {
    // The JSON form of the TOML config in docs/REWARDS.md.
    let json = r#"{
        "reputation": {
            "0xd8dA6BF26964aF9D7eEd9e03E53415D37aA96045": 15000,
            "0x2222222222222222222222222222222222222222": 5000
        },
        "blocklist": ["0x3333333333333333333333333333333333333333"]
    }"#;
    let governance: Governance = serde_json::from_str(json).unwrap();
    let vitalik = a("0xd8dA6BF26964aF9D7eEd9e03E53415D37aA96045");
    assert_eq!(governance.reputation_of(&vitalik), 15_000);
    assert_eq!(governance.reputation_of(&a(B)), 5_000);
    assert_eq!(governance.reputation_of(&a(A)), 10_000);
    assert!(governance.is_blocked(&a(C)));

    // Written back with EIP-55 checksums, and read back the same.
    let written = serde_json::to_value(&governance).unwrap();
    assert_eq!(
        written,
        serde_json::json!({
            "reputation": {
                "0x2222222222222222222222222222222222222222": 5000,
                "0xd8dA6BF26964aF9D7eEd9e03E53415D37aA96045": 15000
            },
            "blocklist": ["0x3333333333333333333333333333333333333333"]
        })
    );
    assert_eq!(
        serde_json::from_value::<Governance>(written).unwrap(),
        governance
    );
    assert_eq!(
        serde_json::from_str::<Governance>("{}").unwrap(),
        Governance::default()
    );

    for (bad, says) in [
        (
            r#"{"blocklist": ["0x123"]}"#,
            "`0x123` is not an Ethereum address",
        ),
        (
            // Mixed case with a broken checksum: a typo.
            r#"{"blocklist": ["0xd8dA6BF26964aF9D7eEd9e03E53415D37aA96046"]}"#,
            "not an Ethereum address",
        ),
        (
            r#"{"reputation": {"0x1111111111111111111111111111111111111111": 70000}}"#,
            "is 70000 bps",
        ),
        (
            r#"{"reputation": {"0xd8da6bf26964af9d7eed9e03e53415d37aa96045": 1,
                               "0xd8dA6BF26964aF9D7eEd9e03E53415D37aA96045": 2}}"#,
            "more than one reputation entry",
        ),
        (r#"{"blocked": []}"#, "unknown field"),
    ] {
        let err = serde_json::from_str::<Governance>(bad).unwrap_err();
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
}

#[test]
fn request_and_split_serde() {
    let json = r#"{
        "fee": "1000000000000000000",
        "contributors": [
            {"contributor": "0x1111111111111111111111111111111111111111", "weight_bps": 5000},
            {"contributor": "0x2222222222222222222222222222222222222222", "weight_bps": 3000},
            {"contributor": "0x3333333333333333333333333333333333333333", "weight_bps": 2000}
        ],
        "adapters": [{"author": "0x4444444444444444444444444444444444444444", "merge_weight": 0.7}],
        "model_owner": "0x6666666666666666666666666666666666666666",
        "treasury": "0x7777777777777777777777777777777777777777"
    }"#;
    let request: SplitRequest = serde_json::from_str(json).unwrap();
    assert_eq!(request, one_ether());
    let back: SplitRequest =
        serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
    assert_eq!(back, request);

    // Fees as hex strings and as plain integers.
    for fee in [r#""0xde0b6b3a7640000""#, "1000000000000000000"] {
        let j = json.replace(r#""1000000000000000000""#, fee);
        assert_eq!(
            serde_json::from_str::<SplitRequest>(&j).unwrap().fee,
            ether()
        );
    }
    for fee in [r#""-1""#, r#""1e18""#, "-1", "1.5"] {
        let j = json.replace(r#""1000000000000000000""#, fee);
        assert!(serde_json::from_str::<SplitRequest>(&j).is_err(), "{fee}");
    }
    let j = json.replace("0x2222222222222222222222222222222222222222", "0x22");
    let err = serde_json::from_str::<SplitRequest>(&j).unwrap_err();
    assert!(
        err.to_string()
            .contains("`0x22` is not an Ethereum address"),
        "{err}"
    );

    let split = split(&request, &Governance::default());
    let value = serde_json::to_value(&split).unwrap();
    assert_eq!(value["fee"], "1000000000000000000");
    assert_eq!(
        value["payouts"][0],
        serde_json::json!({
            "address": "0x1111111111111111111111111111111111111111",
            "amount": "350000000000000000",
            "by_role": {"contributor": "350000000000000000", "adapter_author": "0",
                        "model_owner": "0", "treasury": "0"}
        })
    );
    assert_eq!(serde_json::from_value::<Split>(value).unwrap(), split);
}
