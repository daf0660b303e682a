//! Runs the example binaries and checks what they print.
//!
//! `cargo test -p tribute-examples` builds the examples before it runs this test (cargo
//! builds a package's examples for `cargo test`); with a target filter such as
//! `--test run`, build them first with `cargo build -p tribute-examples --examples`. The
//! examples use the real SmolLM2-135M-Instruct and MiniLM installed by `scripts/setup.sh`.
//! Each run gets a fresh knowledge base in a temporary directory (`TRIBUTE_EXAMPLE_KB`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Anvil's first development key (public; never for real funds) and its address.
const KEY0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const ADDRESS0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const ALICE: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

/// The built example `name`: `target/<profile>/examples/<name>`, next to this test's
/// `target/<profile>/deps/`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: build the examples first (`cargo build -p tribute-examples --examples`)",
        path.display()
    );
    path
}

/// Runs an example with a fresh knowledge base and no signing key unless `env` sets one;
/// returns its stdout, failing with its stderr when it fails.
fn run(name: &str, env: &[(&str, &Path)], key: Option<&str>) -> String {
    let kb = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(example(name));
    cmd.env("TRIBUTE_EXAMPLE_KB", kb.path())
        .env_remove("TRIBUTE_KEY")
        .env_remove("TRIBUTE_LEDGER");
    if let Some(k) = key {
        cmd.env("TRIBUTE_KEY", k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("--- {name}\n{stdout}");
    stdout
}

/// Citation lines: `[n]  pp.p%  0x…  datanet  title`; returns (percent, contributor, datanet).
fn citations(stdout: &str) -> Vec<(f64, String, String)> {
    stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip(1);
            let pct = words.next()?.strip_suffix('%')?.parse().ok()?;
            let contributor = words.next()?.to_owned();
            let datanet = words.next()?.to_owned();
            contributor
                .starts_with("0x")
                .then_some((pct, contributor, datanet))
        })
        .collect()
}

#[test]
fn quickstart_cites_the_sample_datanet_and_signs_a_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.json");
    std::fs::write(
        &ledger,
        r#"{"chainId":31337,"contract":"0x5FbDB2315678afecb367f032d93F642f64180aa3"}"#,
    )
    .expect("write");
    let out = run("quickstart", &[("TRIBUTE_LEDGER", &ledger)], Some(KEY0));
    assert!(out.contains("Q: How many times per second"), "{out}");
    let cites = citations(&out);
    assert!(!cites.is_empty(), "no citation line:\n{out}");
    let total: f64 = cites.iter().map(|c| c.0).sum();
    assert!(
        (total - 100.0).abs() < 0.5,
        "weights sum to {total}%:\n{out}"
    );
    assert_eq!(cites[0].1, ALICE, "{out}");
    assert_eq!(cites[0].2, "zephyr-docs", "{out}");
    // The answer carries inline markers, and the receipt is signed by the payer.
    assert!(
        out.lines()
            .any(|l| l.starts_with("A: ") && l.contains(" [")),
        "{out}"
    );
    assert!(out.contains(&format!("signed by {ADDRESS0}")), "{out}");
}

#[test]
fn quickstart_without_a_key_says_why_there_is_no_receipt() {
    let out = run("quickstart", &[], None);
    assert!(!citations(&out).is_empty(), "{out}");
    assert!(out.contains("no receipt: no signing key"), "{out}");
}

#[test]
fn datanets_cites_only_the_chosen_datanet_and_sums_payouts_per_contributor() {
    let out = run("datanets", &[], None);
    assert!(out.contains("ingested: 4 added"), "{out}");
    let cites = citations(&out);
    assert!(!cites.is_empty(), "{out}");
    assert!(cites.iter().all(|c| c.2 == "harbor-guide"), "{out}");
    // The payouts: the fee split exactly, contributors paid per their citation share.
    let payouts: Vec<u128> = out
        .lines()
        .filter(|l| l.contains(" wei  ("))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(payouts.iter().sum::<u128>(), 1_000_000_000_000_000, "{out}");
    assert!(out.contains("(contributor,"), "{out}");
    assert!(
        !out.contains("0x90F79bf6EB2c4f870365E785982E1f101E93b906"),
        "{out}"
    );
}

#[test]
fn streaming_prints_the_answer_then_citations() {
    let out = run("streaming", &[], None);
    let answer = out
        .lines()
        .find_map(|l| l.strip_prefix("A: "))
        .expect("an answer line");
    assert!(!answer.trim().is_empty(), "{out}");
    assert!(out.contains("with citations: "), "{out}");
    let cites = citations(&out);
    assert!(!cites.is_empty(), "{out}");
    assert!(
        cites[0].1 == ALICE && cites[0].2 == "zephyr-docs",
        "the installation guide is Alice's:\n{out}"
    );
}
