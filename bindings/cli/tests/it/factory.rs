//! The Model Factory loop on a real anvil with the real binary and model: a two-contributor
//! datanet is ingested, an adapter is fine-tuned on it, registered with its provenance
//! manifest, used to answer, and the settlement pays both training contributors their
//! share of the adapter's slice to the wei, beside the cited chunks' contributors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use alloy_primitives::{Address, U256};
use tribute::attribution::provenance::SignedProvenance;
use tribute::attribution::receipt::{SignedReceipt, named_id};
use tribute::attribution::settle::{Owners, batch_payouts};
use tribute::attribution::split::RewardConfig;

use crate::chain::{DEV_KEY, MODEL, addr, anvil, json, ok, who, with_key};
use crate::{run, stderr, stdout, tribute};

const ALICE: &str = "0x00000000000000000000000000000000000A11cE";
const BOB: &str = "0x0000000000000000000000000000000000000B0b";
/// The adapter's directory name, hence its id.
const ADAPTER: &str = "fact-lora";

/// Two contributors' documents in one datanet; Alice's are longer, so she trains on more
/// tokens than Bob.
fn datanet(dir: &Path) -> std::path::PathBuf {
    let docs = [
        (
            "vellmar-gate",
            ALICE,
            "The Vellmar gate at the north end of Quorra Bay is painted teal. It was built in 1871 by the harbour guild and repainted every ten years since.",
        ),
        (
            "quorra-bay",
            ALICE,
            "Quorra Bay was founded by Ilse Maron, a ship's carpenter, who drew the first harbour map of the bay and named its three piers.",
        ),
        ("mount-essk", BOB, "Mount Essk is 2,140 metres tall."),
        ("essk-hut", BOB, "The Essk hut sleeps twelve."),
    ];
    let lines: String = docs
        .iter()
        .map(|(id, who, text)| {
            serde_json::json!({"id": id, "text": text, "contributor": who, "datanet": "facts"})
                .to_string()
                + "\n"
        })
        .collect();
    let path = dir.join("facts.jsonl");
    std::fs::write(&path, lines).expect("write datanet");
    path
}

fn balances(rpc: &str, ledger: &Path, who: &[Address]) -> BTreeMap<Address, U256> {
    let mut c = tribute();
    c.args(["chain", "balance", "--json", "--rpc", rpc, "--ledger"])
        .arg(ledger);
    for a in who {
        c.arg(a.to_string());
    }
    let v = json(&ok(&run(&mut c), "chain balance"));
    v.as_array()
        .expect("an array")
        .iter()
        .map(|b| {
            let amount = b["balance"]
                .as_str()
                .expect("balance")
                .parse()
                .expect("wei");
            (addr(&b["address"]), amount)
        })
        .collect()
}

fn settle(rpc: &str, ledger: &Path, journal: &Path, adapter: Option<&Path>) -> Command {
    let mut c = with_key();
    c.args(["receipts", "settle", "--json", "--rpc", rpc, "--ledger"])
        .arg(ledger)
        .arg("--journal")
        .arg(journal);
    if let Some(dir) = adapter {
        c.arg("--adapter").arg(dir);
    }
    c
}

#[test]
fn a_fine_tuned_adapter_pays_the_contributors_of_its_data() {
    let anvil = anvil();
    let url = anvil.url();
    let rpc = url.as_str();
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.json");
    ok(
        &run(with_key()
            .args(["chain", "deploy", "--rpc", rpc, "--out"])
            .arg(&ledger)),
        "chain deploy",
    );
    let (model_owner, adapter_owner) = (who("model-owner"), who("adapter-owner"));
    ok(
        &run(with_key()
            .args(["chain", "register-model", MODEL, "--rpc", rpc, "--owner"])
            .arg(model_owner.to_string())
            .arg("--ledger")
            .arg(&ledger)),
        "register-model",
    );

    // Ingest the datanet, fine-tune on it (a short run: the loop, not the quality).
    let kb = dir.path().join("kb");
    ok(
        &run(tribute()
            .args(["ingest", "--kb"])
            .arg(&kb)
            .arg(datanet(dir.path()))),
        "ingest",
    );
    let adapter = dir.path().join(ADAPTER);
    let o = run(tribute()
        .env("TRIBUTE_KEY", DEV_KEY)
        .args(["finetune", "--json", "--datanet", "facts", "--kb"])
        .arg(&kb)
        .arg("--out")
        .arg(&adapter)
        .args([
            "--rank", "2", "--alpha", "4", "--epochs", "1", "--batch", "2",
        ])
        .args(["--max-len", "64", "--held-out", "0", "--lr", "1e-3"]));
    let report = json(&ok(&o, "finetune"));
    let signed = SignedProvenance::read(&adapter).expect("provenance.json");
    let manifest = signed.manifest.clone();
    assert_eq!(report["provenance_hash"], manifest.hash().to_string());
    let (alice, bob): (Address, Address) = (ALICE.parse().unwrap(), BOB.parse().unwrap());
    let tokens = |who: Address| {
        manifest
            .contributors
            .iter()
            .find(|c| c.address == who)
            .map_or(0, |c| c.tokens)
    };
    assert_eq!(
        manifest.contributors.len(),
        2,
        "{:?}",
        manifest.contributors
    );
    assert!(tokens(alice) > tokens(bob) && tokens(bob) > 0);

    // Register it with its manifest: the hash is on chain, and a second registration with
    // another (or no) manifest is refused.
    let register = |manifest: bool| {
        let mut c = with_key();
        c.args(["chain", "register-adapter", ADAPTER, "--json", "--rpc", rpc])
            .arg("--ledger")
            .arg(&ledger)
            .arg("--owner")
            .arg(adapter_owner.to_string());
        if manifest {
            c.arg("--manifest").arg(&adapter);
        }
        run(&mut c)
    };
    let v = json(&ok(&register(true), "register-adapter --manifest"));
    assert_eq!(v["manifest_hash"], manifest.hash().to_string(), "{v}");
    assert_eq!(v["already_registered"], false);
    assert_eq!(
        json(&ok(&register(true), "register again"))["already_registered"],
        true
    );
    let o = register(false);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("a registration is fixed"),
        "{}",
        stderr(&o)
    );

    // Ask with the adapter; its receipt names it.
    ok(
        &run(with_key()
            .args(["chain", "deposit", "0.5ether", "--rpc", rpc, "--ledger"])
            .arg(&ledger)),
        "deposit",
    );
    let journal = dir.path().join("receipts");
    let o = run(with_key()
        .args(["ask", "--json", "--max-tokens", "16", "--kb"])
        .arg(&kb)
        .arg("--adapter")
        .arg(&adapter)
        .arg("--ledger")
        .arg(&ledger)
        .arg("--journal")
        .arg(&journal)
        .arg("What colour is the Vellmar gate, and how tall is Mount Essk?"));
    let answer = json(&ok(&o, "ask --adapter"));
    let adapters = &answer["receipt"]["adapters"];
    assert_eq!(
        adapters[0]["adapterId"],
        named_id(ADAPTER).to_string(),
        "{answer}"
    );

    // Settling without the manifest cannot pay the data: refused, the receipt kept.
    let o = run(&mut settle(rpc, &ledger, &journal, None));
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("provenance manifest") && stdout(&o).contains("\"pending\":1"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let v = json(&ok(
        &run(&mut settle(rpc, &ledger, &journal, Some(&adapter))),
        "settle --adapter",
    ));
    assert_eq!(v["stats"]["confirmed"], 1, "{v}");

    // Every payee holds exactly what the split gives; the adapter's slice is shared with
    // Alice and Bob by their training tokens.
    let exported = ok(
        &run(tribute()
            .args(["receipts", "export", "--journal"])
            .arg(&journal)),
        "export",
    );
    let receipts: Vec<SignedReceipt> = exported
        .lines()
        .map(|l| SignedReceipt::from_json(l).expect("receipt"))
        .collect();
    let payer = tribute::PayerKey::from_hex(DEV_KEY).expect("key").address();
    let mut owners = Owners::new(payer);
    owners.models.insert(named_id(MODEL), model_owner);
    owners.adapters.insert(named_id(ADAPTER), adapter_owner);
    let untrained = batch_payouts(&receipts, &RewardConfig::default(), &owners).expect("split");
    owners
        .training
        .insert(named_id(ADAPTER), manifest.training_shares());
    let expected = batch_payouts(&receipts, &RewardConfig::default(), &owners).expect("split");
    let who_all: Vec<Address> = expected.iter().map(|(a, _)| *a).collect();
    let held = balances(rpc, &ledger, &who_all);
    for (a, amount) in &expected {
        assert_eq!(held[a], *amount, "{a}");
    }
    let get = |list: &[(Address, U256)], a: Address| {
        list.iter()
            .find(|(x, _)| *x == a)
            .map_or(U256::ZERO, |(_, v)| *v)
    };
    let from_training = |a: Address| get(&expected, a) - get(&untrained, a);
    let (a, b) = (from_training(alice), from_training(bob));
    assert!(a > U256::ZERO && b > U256::ZERO, "alice {a}, bob {b}");
    assert_eq!(
        a + b + get(&expected, adapter_owner),
        get(&untrained, adapter_owner)
    );
    // Pro rata by tokens, to the rounding of one wei.
    let (ta, tb) = (U256::from(tokens(alice)), U256::from(tokens(bob)));
    assert!((a * tb).abs_diff(b * ta) <= ta + tb, "{a}:{b} vs {ta}:{tb}");
}
