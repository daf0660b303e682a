//! EIP-712 receipts: type hashes, golden vectors, signing, verification, JSON, Merkle proofs,
//! keys, and every way a receipt is refused.

use alloy_primitives::{B256, U256, address, b256, keccak256};
use alloy_sol_types::SolStruct;
use tribute_attribution::receipt::{
    AdapterUse, CitedChunk, Ledger, MerkleTree, PayerKey, ReceiptError, SignedReceipt,
    UsageReceipt, payouts_hash, receipt_leaf, verify_proof,
};

use crate::{ADDR0, KEY0, ledger};

/// Anvil's second development key.
const KEY1: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

fn receipt() -> UsageReceipt {
    UsageReceipt {
        version: 1,
        receiptId: keccak256("receipt-1"),
        payer: ADDR0,
        servingNode: address!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
        modelId: keccak256("SmolLM2-135M-Instruct"),
        adapters: vec![
            AdapterUse {
                adapterId: keccak256("zephyr"),
                weightMicros: 700_000,
            },
            AdapterUse {
                adapterId: keccak256("caps"),
                weightMicros: -400_000,
            },
        ],
        queryHash: keccak256("What is Zephyr SDK?"),
        answerHash: keccak256("Zephyr SDK is a Rust library."),
        chunks: vec![
            CitedChunk {
                contentHash: keccak256("chunk a"),
                contributor: address!("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
                weightBps: 7_500,
            },
            CitedChunk {
                contentHash: keccak256("chunk b"),
                contributor: address!("fB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"),
                weightBps: 2_500,
            },
        ],
        fee: U256::from(1_000_000_000_000_000u64),
        nonce: 7,
        timestamp: 1_795_000_000,
        attributionHash: B256::ZERO,
    }
}

/// [`receipt`] as version 2, committing to an attribution record.
fn receipt_v2() -> UsageReceipt {
    UsageReceipt {
        version: 2,
        attributionHash: keccak256("attribution record"),
        ..receipt()
    }
}

#[test]
fn type_strings_are_the_documented_ones() {
    let adapter = "AdapterUse(bytes32 adapterId,int32 weightMicros)";
    let chunk = "CitedChunk(bytes32 contentHash,address contributor,uint16 weightBps)";
    let receipt_type = format!(
        "UsageReceipt(uint16 version,bytes32 receiptId,address payer,address servingNode,bytes32 modelId,AdapterUse[] adapters,bytes32 queryHash,bytes32 answerHash,CitedChunk[] chunks,uint256 fee,uint64 nonce,uint64 timestamp){adapter}{chunk}"
    );
    assert_eq!(receipt().type_hash(), keccak256(receipt_type.as_bytes()));
    // Version 2 appends `bytes32 attributionHash` to the same type.
    let v2_type = format!(
        "UsageReceipt(uint16 version,bytes32 receiptId,address payer,address servingNode,bytes32 modelId,AdapterUse[] adapters,bytes32 queryHash,bytes32 answerHash,CitedChunk[] chunks,uint256 fee,uint64 nonce,uint64 timestamp,bytes32 attributionHash){adapter}{chunk}"
    );
    assert_eq!(receipt_v2().type_hash(), keccak256(v2_type.as_bytes()));
    assert_eq!(
        receipt_v2().eip712_type_hash(),
        keccak256(v2_type.as_bytes())
    );
    let batch = "SettleBatch(address payer,bytes32 root,uint256 total,bytes32 payoutsHash,uint64 batchNonce)";
    let b = tribute_attribution::receipt::SettleBatch {
        payer: ADDR0,
        root: B256::ZERO,
        total: U256::ZERO,
        payoutsHash: B256::ZERO,
        batchNonce: 0,
    };
    assert_eq!(b.eip712_type_hash(), keccak256(batch.as_bytes()));
}

#[test]
fn golden_vectors() {
    // Pinned values: a change here changes every receipt ever signed. The ledger contract's
    // `hashReceipt` must return the same digest (checked against a deployed contract in the
    // settlement tests).
    let r = receipt();
    let key = PayerKey::from_hex(KEY0).unwrap();
    assert_eq!(key.address(), ADDR0);
    let signed = key.sign(r.clone(), &ledger()).unwrap();
    let golden = (
        r.struct_hash(),
        r.digest(&ledger()),
        signed.signature.as_bytes(),
    );
    assert_eq!(
        golden.0,
        b256!("ea37328b846bdaf40c3ba143f7fdde6e58646cbbed2a3202b473c2fbd81da9fa")
    );
    assert_eq!(
        golden.1,
        b256!("515d6c8363c3b0feaa3aed21ad3e7718fc9be3702d4029a73440ccd0d67ac085")
    );
    assert_eq!(
        alloy_primitives::hex::encode(golden.2),
        "3f9b757f789632af2a7a2e71e2d9feb91a2a3acd6df747173dfc1f1c3edc06371e353f8e533c78e29d219fcc7d4cc0edb13a9f8b3bfc5abdd0336a15fbd053601c"
    );
    // RFC 6979 signatures are deterministic: signing again gives the same bytes.
    assert_eq!(key.sign(r, &ledger()).unwrap(), signed);
}

#[test]
fn golden_vectors_v2() {
    // Version-2 vectors (receipts with an attribution record). The version-1 vectors above
    // stay valid: old receipts hash and verify as they did. The chain tests check these
    // digests against the contract's `hashReceiptV2`.
    let r = receipt_v2();
    let key = PayerKey::from_hex(KEY0).unwrap();
    let signed = key.sign(r.clone(), &ledger()).unwrap();
    assert_eq!(r.struct_hash(), r.eip712_hash_struct());
    println!(
        "GOLDEN {} {} {}",
        r.struct_hash(),
        r.digest(&ledger()),
        alloy_primitives::hex::encode(signed.signature.as_bytes())
    );
    assert_eq!(
        r.struct_hash(),
        b256!("5b23f0910dc4d5608a03c5f5a6da533a2adfa610342cc9935c31799a46a5b47d")
    );
    assert_eq!(
        r.digest(&ledger()),
        b256!("5e09bf06b4fee88e60c37423d6bf281555c7efc69295b219aa5dc10696a083a5")
    );
    assert_eq!(
        alloy_primitives::hex::encode(signed.signature.as_bytes()),
        "c0f6f45fcb37a338b90821c2ca673e562fb25cb0b6dc633bb882995edaf882437bcc580df5f4dacb60abda4636e728288959a51315e7a24f8bfa3833b6d4f8321b"
    );
    assert_eq!(signed.verify(&ledger()).unwrap(), r.digest(&ledger()));
    // The hash is signed: changing it breaks the signature.
    let mut forged = signed.clone();
    forged.receipt.attributionHash = keccak256("another record");
    assert!(matches!(
        forged.verify(&ledger()),
        Err(ReceiptError::WrongSigner { .. })
    ));
    // Canonical JSON carries it (after the timestamp) and round-trips.
    let json = signed.to_json();
    assert!(json.starts_with("{\"version\":2,"), "{json}");
    assert!(
        json.contains(&format!("\"attributionHash\":\"{}\"", r.attributionHash)),
        "{json}"
    );
    assert_eq!(SignedReceipt::from_json(&json).unwrap(), signed);
    // Version 1 never writes the field, and refuses a non-zero one (it would not be signed).
    let v1 = key.sign(receipt(), &ledger()).unwrap();
    assert!(!v1.to_json().contains("attributionHash"));
    let mut bad = receipt();
    bad.attributionHash = keccak256("x");
    assert!(matches!(bad.validate(), Err(ReceiptError::Invalid(_))));
}

#[test]
fn digests_equal_the_deployed_contracts() {
    // Values returned by TributeLedger on anvil (attribution/contracts/smoke.sh, README
    // "Test vectors"): the contract and this crate hash receipts identically.
    let contributor = address!("3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");
    let r = UsageReceipt {
        version: 1,
        receiptId: keccak256("receipt-1"),
        payer: address!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
        servingNode: contributor,
        modelId: keccak256("model"),
        adapters: vec![AdapterUse {
            adapterId: keccak256("adapter"),
            weightMicros: -250_000,
        }],
        queryHash: keccak256("query"),
        answerHash: keccak256("answer"),
        chunks: vec![
            CitedChunk {
                contentHash: keccak256("chunk-1"),
                contributor,
                weightBps: 7_000,
            },
            CitedChunk {
                contentHash: keccak256("chunk-2"),
                contributor: address!("90F79bf6EB2c4f870365E785982E1f101E93b906"),
                weightBps: 3_000,
            },
        ],
        fee: U256::from(1_000_000_000_000_000u64),
        nonce: 7,
        timestamp: 1_760_000_000,
        attributionHash: B256::ZERO,
    };
    assert_eq!(
        ledger().domain().separator(),
        b256!("d34fd7f84f5325401994d48e27c308c208b1ca85f298ff970343a422d24895c7")
    );
    assert_eq!(
        r.struct_hash(),
        b256!("b7438d303801be9b6da30575801c8ffd4626b00f321080c0ce9694c415dd5b7b")
    );
    let digest = r.digest(&ledger());
    assert_eq!(
        digest,
        b256!("156c6729443ff4a627508b2489ed091013bc40b707be2fa600b35e79e49915d1")
    );
    assert_eq!(
        receipt_leaf(digest),
        b256!("60166d66145ce41c4ac4576db225ad4b7b72370b9f5ce2df65c526a2285c395f")
    );
    assert_eq!(
        payouts_hash(
            &[
                contributor,
                address!("90F79bf6EB2c4f870365E785982E1f101E93b906")
            ],
            &[
                U256::from(1_400_000_000_000_000u64),
                U256::from(600_000_000_000_000u64)
            ]
        ),
        b256!("7472cde616618860f3e25ed940a366c828085cb2dd119990d4d5b2f7c73a9aab")
    );
}

#[test]
fn sign_verify_and_canonical_json_round_trip() {
    let key = PayerKey::from_hex(KEY0).unwrap();
    let signed = key.sign(receipt(), &ledger()).unwrap();
    assert_eq!(
        signed.verify(&ledger()).unwrap(),
        receipt().digest(&ledger())
    );
    let json = signed.to_json();
    assert!(
        json.starts_with("{\"version\":1,\"receiptId\":\"0x"),
        "{json}"
    );
    assert!(
        json.contains("\"payer\":\"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\""),
        "{json}"
    );
    assert!(json.contains("\"fee\":\"1000000000000000\""), "{json}");
    let back = SignedReceipt::from_json(&json).unwrap();
    assert_eq!(back, signed);
    assert_eq!(back.to_json(), json, "canonical JSON is a fixed point");
    // Pretty-printed JSON is the same receipt.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pretty = serde_json::to_string_pretty(&v).unwrap();
    assert_eq!(SignedReceipt::from_json(&pretty).unwrap(), signed);
}

#[test]
fn tampering_and_wrong_signers_are_caught() {
    let key = PayerKey::from_hex(KEY0).unwrap();
    let signed = key.sign(receipt(), &ledger()).unwrap();
    // Any changed field changes the digest: the signature recovers someone else.
    let mut fee = signed.clone();
    fee.receipt.fee += U256::from(1);
    assert!(matches!(
        fee.verify(&ledger()),
        Err(ReceiptError::WrongSigner { .. })
    ));
    let mut chunk = signed.clone();
    chunk.receipt.chunks[0].contributor = address!("fB6916095ca1df60bB79Ce92cE3Ea74c37c5d359");
    assert!(matches!(
        chunk.verify(&ledger()),
        Err(ReceiptError::WrongSigner { .. })
    ));
    // Another chain or contract: another domain.
    let other_chain = Ledger {
        chain_id: 1,
        ..ledger()
    };
    assert!(matches!(
        signed.verify(&other_chain),
        Err(ReceiptError::WrongSigner { .. })
    ));
    // Signed by someone else than the payer.
    let other = PayerKey::from_hex(KEY1).unwrap();
    let raw: alloy_signer_local::PrivateKeySigner = KEY1.parse().unwrap();
    let forged = SignedReceipt {
        receipt: receipt(),
        signature: alloy_signer::SignerSync::sign_hash_sync(&raw, &receipt().digest(&ledger()))
            .unwrap(),
    };
    let err = forged.verify(&ledger()).unwrap_err();
    assert!(
        matches!(err, ReceiptError::WrongSigner { signer, payer, .. } if signer == other.address() && payer == ADDR0)
    );
    // A key cannot sign for another payer.
    assert!(matches!(
        other.sign(receipt(), &ledger()),
        Err(ReceiptError::Invalid(_))
    ));
}

#[test]
fn malformed_receipts_are_refused() {
    let key = PayerKey::from_hex(KEY0).unwrap();
    let json = key.sign(receipt(), &ledger()).unwrap().to_json();
    for (what, bad) in [
        ("truncated", json[..json.len() - 3].to_owned()),
        ("unknown field", json.replacen("{", "{\"extra\":1,", 1)),
        (
            "bad address",
            json.replace("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "0xnothex"),
        ),
        (
            "bad checksum",
            json.replace(
                "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
                "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
            ),
        ),
        (
            "fee not a number",
            json.replace("\"fee\":\"1000000000000000\"", "\"fee\":\"ten\""),
        ),
    ] {
        assert!(
            matches!(SignedReceipt::from_json(&bad), Err(ReceiptError::Json(_))),
            "{what}"
        );
    }
    let bad_sig = json.replace("\"signature\":\"0x3f9b", "\"signature\":\"0xzz9b");
    assert!(matches!(
        SignedReceipt::from_json(&bad_sig),
        Err(ReceiptError::BadSignature(_))
    ));
    let short_sig = json.replace("\"signature\":\"0x3f9b", "\"signature\":\"0x");
    assert!(matches!(
        SignedReceipt::from_json(&short_sig),
        Err(ReceiptError::BadSignature(_))
    ));
    let mut r = receipt();
    r.chunks[0].weightBps = 7_000;
    assert!(matches!(key.sign(r, &ledger()), Err(ReceiptError::Invalid(m)) if m.contains("9500")));
    let mut r = receipt();
    r.version = 9;
    assert!(matches!(
        key.sign(r, &ledger()),
        Err(ReceiptError::Invalid(_))
    ));
}

#[test]
fn merkle_proofs_verify_every_receipt_and_nothing_else() {
    let key = PayerKey::from_hex(KEY0).unwrap();
    for n in [1usize, 2, 3, 5, 8, 13] {
        let leaves: Vec<B256> = (0..n)
            .map(|i| {
                let mut r = receipt();
                r.nonce = i as u64;
                key.sign(r, &ledger()).unwrap().leaf(&ledger())
            })
            .collect();
        let tree = MerkleTree::new(leaves.clone()).unwrap();
        for (i, leaf) in leaves.iter().enumerate() {
            let proof = tree.proof(i).unwrap();
            assert!(verify_proof(*leaf, &proof, tree.root()), "n={n} i={i}");
            assert!(!verify_proof(keccak256(leaf), &proof, tree.root()));
        }
        assert!(tree.proof(n).is_none());
        if n == 1 {
            assert_eq!(tree.root(), leaves[0]);
        }
    }
    assert!(MerkleTree::new(Vec::new()).is_none());
    // The leaf is the double hash of the digest.
    let d = receipt().digest(&ledger());
    assert_eq!(receipt_leaf(d), keccak256(keccak256(d)));
}

#[test]
fn keys_load_from_env_file_and_keystore_and_never_print() {
    // SAFETY-free: the variable name is unique to this test.
    let var = "TRIBUTE_TEST_PAYER_KEY_7f3a";
    assert!(matches!(PayerKey::from_env(var), Err(ReceiptError::Key(m)) if m.contains(var)));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("key.hex");
    std::fs::write(&f, format!("{KEY0}\n")).unwrap();
    let k = PayerKey::from_file(&f).unwrap();
    assert_eq!(k.address(), ADDR0);
    let dbg = format!("{k:?}");
    assert!(!dbg.contains("ac0974"), "{dbg}");
    std::fs::write(&f, "not a key").unwrap();
    let err = PayerKey::from_file(&f).unwrap_err().to_string();
    assert!(
        !err.contains("not a key"),
        "the file's content is not echoed: {err}"
    );
    // An encrypted JSON keystore (Web3 Secret Storage, scrypt) written by alloy's own code.
    let pk = alloy_primitives::hex::decode(KEY1).unwrap();
    let (_, uuid) = alloy_signer_local::PrivateKeySigner::encrypt_keystore(
        dir.path(),
        &mut rand08::thread_rng(),
        &pk,
        "correct horse",
        Some("payer.json"),
    )
    .unwrap();
    let _ = uuid;
    let ks = dir.path().join("payer.json");
    let from_ks = PayerKey::from_keystore(&ks, "correct horse").unwrap();
    assert_eq!(
        from_ks.address(),
        PayerKey::from_hex(KEY1).unwrap().address()
    );
    assert!(matches!(
        PayerKey::from_keystore(&ks, "wrong"),
        Err(ReceiptError::Key(_))
    ));
}

/// libsecp256k1 signing and recovery agree with alloy's k256 signer, byte for byte, and
/// malleable (high-s) twins are refused as the contract refuses them.
#[test]
fn secp256k1_backend_matches_k256_and_refuses_high_s() {
    use alloy_signer::SignerSync;
    use tribute_attribution::receipt::recover_signer;
    let mut rng = rand08::thread_rng();
    for i in 0..64u32 {
        let k256 = alloy_signer_local::PrivateKeySigner::random_with(&mut rng);
        let key = PayerKey::from(k256.clone());
        assert_eq!(key.address(), k256.address());
        let digest = keccak256(i.to_le_bytes());
        let ours = key.sign_digest(digest);
        let theirs = k256.sign_hash_sync(&digest).expect("k256 sign");
        assert_eq!(ours, theirs, "signature {i}");
        assert_eq!(
            recover_signer(&ours, digest).expect("recover"),
            k256.address()
        );
        assert_eq!(
            theirs
                .recover_address_from_prehash(&digest)
                .expect("k256 recover"),
            k256.address()
        );
        // The malleable twin (n - s, flipped parity) recovers the same key with ecrecover
        // semantics but is refused, on chain and here.
        let n = U256::from_str_radix(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
            16,
        )
        .expect("order");
        let twin = alloy_primitives::Signature::new(ours.r(), n - ours.s(), !ours.v());
        let err = recover_signer(&twin, digest).expect_err("high s");
        assert!(err.to_string().contains("malleable"), "{err}");
        // A different digest recovers someone else.
        assert_ne!(
            recover_signer(&ours, keccak256(b"other")).ok(),
            Some(k256.address())
        );
    }
}

#[test]
fn named_ids_hash_names_and_keep_hex_ids() {
    use tribute_attribution::receipt::named_id;
    assert_eq!(
        named_id("SmolLM2-135M-Instruct"),
        keccak256("SmolLM2-135M-Instruct")
    );
    assert_eq!(named_id(" zephyr "), keccak256("zephyr"));
    let id = keccak256("x");
    assert_eq!(named_id(&id.to_string()), id);
    // Not 32 bytes of hex: hashed as text.
    assert_eq!(named_id("0x1234"), keccak256("0x1234"));
}
