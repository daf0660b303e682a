//! Fine-tuned adapters on chain: registered with their provenance manifest hash, and
//! settled so that the contributors of their training data share their slice, by that
//! manifest only.

use alloy::primitives::{B256, U256};
use tribute_attribution::journal::{Journal, StateKind};
use tribute_attribution::provenance::{
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, AdapterHashes, ProvenanceManifest,
};
use tribute_attribution::settle::{
    Owners, SettleError, SettleOptions, batch_payouts, settle_journal,
};
use tribute_attribution::split::RewardConfig;

use super::*;

/// A manifest for a (fake) adapter trained on `tokens` of each of two contributors' data.
fn manifest(trainer: Address, contributors: [(Address, u64); 2]) -> ProvenanceManifest {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(ADAPTER_CONFIG_FILE), r#"{"r":4}"#).expect("config");
    std::fs::write(dir.path().join(ADAPTER_WEIGHTS_FILE), b"weights").expect("weights");
    let mut b = ProvenanceManifest::builder("SmolLM2-135M-Instruct", keccak256("base"), trainer)
        .adapter(AdapterHashes::of_dir(dir.path()).expect("hashes"));
    for (i, (who, tokens)) in contributors.into_iter().enumerate() {
        b = b.document_text(&format!("document {i}"), who, "facts", tokens);
    }
    b.build().expect("manifest")
}

#[test]
fn a_trained_adapter_pays_its_training_contributors_by_the_registered_manifest() {
    block_on(trained_adapter_impl());
}

async fn trained_adapter_impl() {
    let node = Node::start().await;
    let client = node.client(1).await;
    let key = node.payer_key(1);
    let adapter = keccak256("adapter");
    let (owner, alice, bob) = (node.address(6), node.address(8), node.address(9));
    let trained = manifest(node.address(0), [(alice, 300), (bob, 100)]);

    // Registration: the hash is recorded with the owner and cannot be redone or zero.
    client
        .register_model(keccak256("model"), node.address(5))
        .await
        .expect("register model");
    client
        .register_trained_adapter(adapter, owner, trained.hash())
        .await
        .expect("register trained adapter");
    assert_eq!(
        client.adapter_manifest(adapter).await.expect("read"),
        Some(trained.hash())
    );
    assert_eq!(
        client.adapter_owner(adapter).await.expect("read"),
        Some(owner)
    );
    let again = client
        .register_trained_adapter(adapter, owner, keccak256("other"))
        .await;
    assert!(
        matches!(again, Err(ChainError::AlreadyRegistered)),
        "{again:?}"
    );
    let zero = client
        .register_trained_adapter(keccak256("another"), owner, B256::ZERO)
        .await;
    assert!(matches!(zero, Err(ChainError::ZeroManifest)), "{zero:?}");
    assert_eq!(
        client
            .adapter_manifest(keccak256("another"))
            .await
            .expect("read"),
        None
    );

    client.deposit(U256::from(ETH)).await.expect("deposit");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut journal = Journal::open(dir.path()).expect("journal");
    let payees = [node.address(2), node.address(3), node.address(4)];
    let receipts = sign_all(&key, &node.ledger, 0, 10, U256::from(FEE), &payees);
    journal.append_batch(&receipts).expect("append");
    let mut options = SettleOptions::new(node.address(7));
    let all_pending = |j: &Journal| {
        j.receipts(None)
            .all(|(_, s)| s.kind() == StateKind::Pending)
    };

    // Without the manifest, or with another one, nothing is paid and nothing is lost.
    let err = settle_journal(&client, &mut journal, &key, &options)
        .await
        .expect_err("no manifest");
    assert!(
        matches!(err, SettleError::ManifestUnavailable { adapter: a, manifest_hash: h }
            if a == adapter && h == trained.hash()),
        "{err}"
    );
    assert!(all_pending(&journal));
    let other = manifest(node.address(0), [(alice, 100), (bob, 300)]);
    options.manifests.insert(adapter, other.clone());
    let err = settle_journal(&client, &mut journal, &key, &options)
        .await
        .expect_err("another manifest");
    assert!(
        matches!(err, SettleError::ManifestMismatch { registered, given, .. }
            if registered == trained.hash() && given == other.hash()),
        "{err}"
    );
    assert!(all_pending(&journal));
    assert_eq!(client.balance(alice).await.expect("balance"), U256::ZERO);

    // With the registered manifest: every payee paid what the split says, to the wei.
    options.manifests.insert(adapter, trained.clone());
    let report = settle_journal(&client, &mut journal, &key, &options)
        .await
        .expect("settle");
    assert_eq!(report.confirmed_receipts(), 10);
    let mut owners = Owners::new(node.address(7));
    owners.models.insert(keccak256("model"), node.address(5));
    owners.adapters.insert(adapter, owner);
    let untrained = batch_payouts(&receipts, &RewardConfig::default(), &owners).expect("payouts");
    owners.training.insert(adapter, trained.training_shares());
    let expected = batch_payouts(&receipts, &RewardConfig::default(), &owners).expect("payouts");
    for (who, amount) in &expected {
        assert_eq!(
            client.balance(*who).await.expect("balance"),
            *amount,
            "{who}"
        );
    }
    let paid = |list: &[(Address, U256)], who: Address| {
        list.iter()
            .find(|(a, _)| *a == who)
            .map_or(U256::ZERO, |(_, v)| *v)
    };
    // The adapter's slice is the same; its owner keeps half, the data earns the rest 3:1.
    let (a, b, o) = (
        paid(&expected, alice),
        paid(&expected, bob),
        paid(&expected, owner),
    );
    assert_eq!(a + b + o, paid(&untrained, owner));
    assert!(a > U256::ZERO && b > U256::ZERO);
    assert!(
        a.abs_diff(U256::from(3) * b) <= U256::from(30),
        "{a} vs 3 × {b}"
    );
    assert!(
        o.abs_diff(a + b) <= U256::from(10),
        "owner {o} vs data {}",
        a + b
    );
    for who in payees {
        assert_eq!(paid(&expected, who), paid(&untrained, who), "{who}");
    }
}
