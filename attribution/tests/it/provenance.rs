//! Provenance manifests: a versioned golden vector (fixed manifest → fixed hash, digest and
//! signature), round trips through `provenance.json`, and every tampering caught with its
//! typed error.

use std::path::Path;

use alloy_primitives::{Address, B256, address, keccak256};
use tribute_attribution::Error;
use tribute_attribution::provenance::{
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, AdapterHashes, PROVENANCE_FILE, PROVENANCE_SCHEMA,
    ProvenanceError, ProvenanceManifest, SignedProvenance, TrainingConfig,
};
use tribute_attribution::receipt::PayerKey;
use tribute_attribution::split::TrainingShare;

use super::{ADDR0, KEY0};

const ALICE: Address = address!("1111111111111111111111111111111111111111");
const BOB: Address = address!("2222222222222222222222222222222222222222");

/// A tiny PEFT-shaped adapter directory (the bytes only need to be fixed).
fn adapter_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(ADAPTER_CONFIG_FILE),
        r#"{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj","v_proj"]}"#,
    )
    .expect("config");
    std::fs::write(
        dir.path().join(ADAPTER_WEIGHTS_FILE),
        b"not really safetensors",
    )
    .expect("weights");
    dir
}

/// The golden manifest, schema 1: two contributors, three documents.
fn manifest(dir: &Path) -> ProvenanceManifest {
    ProvenanceManifest::builder(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        keccak256("model files"),
        ADDR0,
    )
    .adapter(AdapterHashes::of_dir(dir).expect("hashes"))
    .training(TrainingConfig {
        steps: 120,
        epochs: 3,
        seed: 7,
        ..TrainingConfig::default()
    })
    .document_text("Zephyr is a flight controller.", ALICE, "facts", 300)
    .document_text("Zephyr was first flown in 2031.", ALICE, "facts", 100)
    .document_text(
        "The Aurel bridge spans the Lumen river.",
        BOB,
        "geography",
        600,
    )
    .build()
    .expect("a valid manifest")
}

fn key() -> PayerKey {
    PayerKey::from_hex(KEY0).expect("key")
}

fn signed(dir: &Path) -> SignedProvenance {
    manifest(dir).sign(&key()).expect("signs")
}

#[test]
fn golden_vector_schema_1() {
    let dir = adapter_dir();
    let m = manifest(dir.path());
    assert_eq!(m.schema, PROVENANCE_SCHEMA);
    assert_eq!(
        PROVENANCE_SCHEMA, 1,
        "a new schema needs a new golden vector"
    );
    assert_eq!(m.total_tokens, 1_000);
    let shares: Vec<(Address, u64, u16)> = m
        .contributors
        .iter()
        .map(|c| (c.address, c.tokens, c.share_bps))
        .collect();
    assert_eq!(shares, [(ALICE, 400, 4_000), (BOB, 600, 6_000)]);
    let json = m.to_json();
    assert!(json.starts_with(r#"{"schema":1,"trainer":"0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266","baseModel":{"id":"HuggingFaceTB/SmolLM2-135M-Instruct","#), "{json}");
    assert!(!json.contains(' '), "no whitespace: {json}");
    assert_eq!(
        m.hash().to_string(),
        "0xeec3b6721498c0d20e996563b232c0096244886553df0056c31003f8db06454a",
        "the manifest's canonical JSON changed: {json}"
    );
    assert_eq!(
        m.digest().to_string(),
        "0x1e1283afcf0f491369e4bc87c8e2936b68b9bd01f998a12a1a8ec4dc6a21f4fc"
    );
    let s = m.sign(&key()).expect("signs");
    assert_eq!(
        alloy_primitives::hex::encode(s.signature.as_bytes()),
        "eacb008773ba112883c1229ada3c369e6a8a0207e0b2e2b609f6f4a9b5ceee7f6949ba5a1acb4899fa7e1220d437c31f03a6d6ad1fe8c9e7d185d352c14f93bf1c"
    );
}

#[test]
fn write_read_verify_round_trip() {
    let dir = adapter_dir();
    let s = signed(dir.path());
    s.write(dir.path()).expect("write");
    let back = SignedProvenance::read(dir.path()).expect("read");
    assert_eq!(back, s);
    assert_eq!(back.to_json(), s.to_json(), "a fixed point");
    let verified = back.verify(dir.path()).expect("verifies");
    assert_eq!(verified.trainer, ADDR0);
    assert_eq!(verified.manifest_hash, s.manifest.hash());
    // Whitespace does not change the manifest or its hash.
    let pretty = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&s.to_json()).expect("json"),
    )
    .expect("pretty");
    let reread = SignedProvenance::from_json(&pretty).expect("pretty parses");
    assert_eq!(reread.verify(dir.path()).expect("verifies"), verified);
    // The split reads the manifest's per-contributor tokens.
    assert_eq!(
        s.manifest.training_shares(),
        [
            TrainingShare {
                contributor: ALICE,
                tokens: 400
            },
            TrainingShare {
                contributor: BOB,
                tokens: 600
            }
        ]
    );
}

#[test]
fn the_vendored_adapter_verifies() {
    let vendored =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/adapters/smollm2-135m-zephyr-lora");
    let dir = tempfile::tempdir().expect("tempdir");
    for file in [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE] {
        std::fs::copy(vendored.join(file), dir.path().join(file))
            .unwrap_or_else(|e| panic!("{} is missing: {e}", vendored.join(file).display()));
    }
    let s = signed(dir.path());
    s.write(dir.path()).expect("write");
    assert!(dir.path().join(PROVENANCE_FILE).is_file());
    SignedProvenance::read(dir.path())
        .expect("read")
        .verify(dir.path())
        .expect("verifies");
}

/// Rewrites the manifest part of the file's JSON and parses it again.
fn edit(s: &SignedProvenance, change: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&s.to_json()).expect("json");
    change(&mut v["manifest"]);
    v.to_string()
}

#[test]
fn changed_adapter_files_are_a_hash_mismatch() {
    let dir = adapter_dir();
    let s = signed(dir.path());
    std::fs::write(dir.path().join(ADAPTER_WEIGHTS_FILE), b"retrained").expect("tamper");
    let err = s.verify(dir.path()).expect_err("weights changed");
    assert!(
        matches!(&err, ProvenanceError::AdapterMismatch { file, .. } if file == ADAPTER_WEIGHTS_FILE),
        "{err}"
    );
    // A missing file is an I/O error naming it.
    std::fs::remove_file(dir.path().join(ADAPTER_CONFIG_FILE)).expect("remove");
    assert!(matches!(
        s.verify(dir.path()),
        Err(ProvenanceError::Io { .. })
    ));
    // The crate's error wraps it.
    let wrapped: Error = err.into();
    assert!(matches!(
        wrapped,
        Error::Provenance(ProvenanceError::AdapterMismatch { .. })
    ));
}

#[test]
fn a_changed_manifest_or_signature_is_a_bad_signature() {
    let dir = adapter_dir();
    let s = signed(dir.path());
    // A document moved to another datanet: the shares still add up, the hash changed.
    let moved = edit(&s, |m| m["documents"][0]["datanet"] = "elsewhere".into());
    let parsed = SignedProvenance::from_json(&moved).expect("well formed");
    assert!(matches!(
        parsed.verify(dir.path()),
        Err(ProvenanceError::BadSignature(_))
    ));
    // Signed by someone else than the manifest's trainer.
    let other = PayerKey::random();
    let mut forged = s.clone();
    forged.signature = other.sign_digest(s.manifest.digest());
    assert!(matches!(
        forged.verify_signature(),
        Err(ProvenanceError::BadSignature(_))
    ));
    assert!(matches!(
        manifest(dir.path()).sign(&other),
        Err(ProvenanceError::BadSignature(_))
    ));
    // Unusable signature bytes.
    let json = s.to_json();
    let sig_at = json.find("\"signature\":\"0x").expect("signature") + 15;
    let short = format!("{}00\"}}", &json[..sig_at]);
    assert!(matches!(
        SignedProvenance::from_json(&short),
        Err(ProvenanceError::BadSignature(_))
    ));
}

#[test]
fn unknown_schemas_empty_documents_and_bad_shares_are_refused() {
    let dir = adapter_dir();
    let s = signed(dir.path());
    let future = edit(&s, |m| m["schema"] = 2.into());
    assert!(matches!(
        SignedProvenance::from_json(&future),
        Err(ProvenanceError::UnknownSchema { found: 2 })
    ));
    let empty = edit(&s, |m| m["documents"] = serde_json::json!([]));
    assert!(matches!(
        SignedProvenance::from_json(&empty),
        Err(ProvenanceError::NoDocuments)
    ));
    let no_docs = ProvenanceManifest::builder("m", B256::ZERO, ADDR0)
        .adapter(AdapterHashes::of_dir(dir.path()).expect("hashes"))
        .build();
    assert!(matches!(no_docs, Err(ProvenanceError::NoDocuments)));

    let total = edit(&s, |m| m["totalTokens"] = 999.into());
    assert!(matches!(
        SignedProvenance::from_json(&total),
        Err(ProvenanceError::SharesDoNotAddUp(_))
    ));
    let tokens = edit(&s, |m| m["documents"][0]["tokens"] = 1.into());
    assert!(matches!(
        SignedProvenance::from_json(&tokens),
        Err(ProvenanceError::SharesDoNotAddUp(_))
    ));
    let bps = edit(&s, |m| {
        m["contributors"][0]["shareBps"] = 4_001.into();
        m["contributors"][1]["shareBps"] = 5_999.into();
    });
    assert!(matches!(
        SignedProvenance::from_json(&bps),
        Err(ProvenanceError::SharesDoNotAddUp(_))
    ));
    let float_lr = edit(&s, |m| m["training"]["learningRate"] = 0.0002.into());
    assert!(matches!(
        SignedProvenance::from_json(&float_lr),
        Err(ProvenanceError::Json(_))
    ));
    let unknown = edit(&s, |m| m["extra"] = 1.into());
    assert!(matches!(
        SignedProvenance::from_json(&unknown),
        Err(ProvenanceError::Json(_))
    ));
    let bad_lr = ProvenanceManifest::builder("m", B256::ZERO, ADDR0)
        .adapter(AdapterHashes::of_dir(dir.path()).expect("hashes"))
        .training(TrainingConfig {
            learning_rate: "fast".into(),
            ..TrainingConfig::default()
        })
        .document_text("x", ALICE, "d", 1)
        .build();
    assert!(matches!(bad_lr, Err(ProvenanceError::Invalid(_))));
}

#[test]
fn builder_merges_repeated_documents_and_refuses_conflicts() {
    let dir = adapter_dir();
    let hashes = AdapterHashes::of_dir(dir.path()).expect("hashes");
    let m = ProvenanceManifest::builder("m", B256::ZERO, ADDR0)
        .adapter(hashes)
        .document_text("same", ALICE, "d", 5)
        .document_text("same", ALICE, "d", 7)
        .build()
        .expect("merged");
    assert_eq!(m.documents.len(), 1);
    assert_eq!(m.documents[0].tokens, 12);
    let conflict = ProvenanceManifest::builder("m", B256::ZERO, ADDR0)
        .adapter(hashes)
        .document_text("same", ALICE, "d", 5)
        .document_text("same", BOB, "d", 7)
        .build();
    assert!(matches!(conflict, Err(ProvenanceError::Invalid(_))));
}
