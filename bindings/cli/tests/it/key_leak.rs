//! Signing keys never leak: every command that loads a key (asks that sign, `receipts`,
//! `chain` against a node that is not there, bad key files, bad keystores, bad variables)
//! runs with full tracing (`TRIBUTE_LOG=trace`), and neither its stdout nor its stderr
//! holds the key's hex, with or without `0x`, in any case, nor any 16-character piece of
//! it. The `Debug` output of every type that holds a key is checked the same way.

use std::path::Path;
use std::process::{Command, Output};

use tribute::attribution::receipt::{Ledger, PayerKey};
use tribute::{Address, Engine, EngineConfig};

use crate::{run, sample_data, stderr, stdout, tribute};

/// A test-only key (not funded anywhere), used by no other test.
const KEY: &str = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
/// Where no node listens.
const NO_NODE: &str = "http://127.0.0.1:1";

/// Fails when `text` holds the key, or any 16 hex digits of it in a row (a truncated or
/// re-cased key is still a leak).
fn assert_no_key(what: &str, text: &str) {
    let hex = KEY.trim_start_matches("0x");
    let lower = text.to_ascii_lowercase();
    for start in 0..=hex.len() - 16 {
        let piece = &hex[start..start + 16];
        assert!(
            !lower.contains(piece),
            "{what}: its output holds the key's digits {start}..{}:\n{text}",
            start + 16
        );
    }
}

/// Runs `cmd` with full tracing and checks both streams; returns the output.
fn checked(what: &str, cmd: &mut Command) -> Output {
    let o = run(cmd.env("TRIBUTE_LOG", "trace").env_remove("TRIBUTE_RPC"));
    assert_no_key(&format!("{what} (stdout)"), &stdout(&o));
    assert_no_key(&format!("{what} (stderr)"), &stderr(&o));
    o
}

fn with_env_key() -> Command {
    let mut c = tribute();
    c.env("TRIBUTE_KEY", KEY);
    c
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn no_command_prints_the_signing_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kb = dir.path().join("kb");
    let o = run(tribute()
        .args(["ingest", "--json", "--kb"])
        .arg(&kb)
        .arg(sample_data()));
    assert!(o.status.success(), "ingest: {}", stderr(&o));
    let ledger = Ledger {
        chain_id: 31337,
        contract: Address::repeat_byte(0x11),
    };
    let ledger_file = write(
        dir.path(),
        "ledger.json",
        &serde_json::to_string(&ledger).expect("json"),
    );
    // Extractive answers: a signed, journaled receipt without loading a model.
    let config = write(dir.path(), "tribute.toml", "answer_mode = \"extractive\"\n");
    let journal = dir.path().join("journal");
    // `tribute ask … EXTRA` with the environment of `c`.
    let ask = |label: &str, mut c: Command, extra: &[&std::ffi::OsStr]| -> Output {
        c.arg("ask")
            .arg("How often does the Zephyr flight controller correct the attitude?")
            .arg("--config")
            .arg(&config)
            .arg("--kb")
            .arg(&kb)
            .arg("--journal")
            .arg(&journal)
            .arg("--ledger")
            .arg(&ledger_file)
            .args(extra);
        checked(label, &mut c)
    };
    let hex = KEY.trim_start_matches("0x");

    // Asks that sign: the key from the environment, from a file; text and JSON output.
    let o = ask("ask", with_env_key(), &[]);
    assert!(o.status.success(), "ask: {}", stderr(&o));
    let o = ask("ask --json", with_env_key(), &["--json".as_ref()]);
    assert!(o.status.success(), "ask --json: {}", stderr(&o));
    let payer = PayerKey::from_hex(KEY).expect("key").address().to_string();
    assert!(
        stdout(&o).contains(&payer),
        "the receipt names its payer: {}",
        stdout(&o)
    );
    let key_file = write(dir.path(), "key.hex", &format!("{hex}\n"));
    let o = ask(
        "ask --key-file",
        tribute(),
        &["--key-file".as_ref(), key_file.as_ref()],
    );
    assert!(o.status.success(), "ask --key-file: {}", stderr(&o));

    // Bad keys that hold most of the real one: refused, and not echoed.
    for (name, text) in [
        ("short.hex", format!("0x{}", &hex[..63])),
        ("long.hex", format!("0x{hex}00")),
        ("two.hex", format!("{KEY}\n{KEY}\n")),
        ("spaced.hex", format!("{} {}", &hex[..32], &hex[32..])),
        ("named.hex", format!("TRIBUTE_KEY={KEY}")),
    ] {
        let f = write(dir.path(), name, &text);
        let o = ask(name, tribute(), &["--key-file".as_ref(), f.as_ref()]);
        assert!(!o.status.success(), "{name} was accepted");
        assert!(stderr(&o).contains(name), "{name}: {}", stderr(&o));
        let mut c = tribute();
        c.env("TRIBUTE_KEY", &text);
        let o = ask(name, c, &[]);
        assert!(!o.status.success(), "TRIBUTE_KEY={name} was accepted");
    }
    // A "keystore" that is not one (its text is the key), and one whose cipher text is.
    let fake = write(dir.path(), "plain.json", KEY);
    let mut c = tribute();
    c.env("TRIBUTE_KEYSTORE_PASSWORD", hex);
    let o = ask("plain keystore", c, &["--keystore".as_ref(), fake.as_ref()]);
    assert!(!o.status.success());
    let fake = write(
        dir.path(),
        "ks.json",
        &serde_json::json!({
            "version": 3,
            "id": "3198bc9c-6672-5ab3-d995-4942343ae5b6",
            "crypto": {
                "cipher": "aes-128-ctr",
                "ciphertext": hex,
                "cipherparams": {"iv": "6087dab2f9fdbbfaddc31a909735c1e6"},
                "kdf": "pbkdf2",
                "kdfparams": {"c": 2, "dklen": 32, "prf": "hmac-sha256", "salt": hex},
                "mac": hex,
            }
        })
        .to_string(),
    );
    let mut c = tribute();
    c.env("TRIBUTE_KEYSTORE_PASSWORD", "wrong");
    let o = ask("fake keystore", c, &["--keystore".as_ref(), fake.as_ref()]);
    assert!(!o.status.success());

    // The journal's receipts, listed and exported.
    for sub in ["list", "export"] {
        let o = checked(
            sub,
            tribute().args(["receipts", sub, "--journal"]).arg(&journal),
        );
        assert!(o.status.success(), "receipts {sub}: {}", stderr(&o));
    }

    // Commands that send with the key, against a node that is not there.
    let ledger_args = |c: &mut Command| {
        c.args(["--rpc", NO_NODE, "--ledger"]).arg(&ledger_file);
    };
    let mut settle = with_env_key();
    settle
        .args(["receipts", "settle", "--journal"])
        .arg(&journal);
    ledger_args(&mut settle);
    let mut deposit = with_env_key();
    deposit.args(["chain", "deposit", "1wei"]);
    ledger_args(&mut deposit);
    let mut withdraw = with_env_key();
    withdraw.args(["chain", "withdraw"]);
    ledger_args(&mut withdraw);
    let mut balance = with_env_key();
    balance.args(["chain", "balance"]);
    ledger_args(&mut balance);
    let mut register = with_env_key();
    register.args(["chain", "register-model", "m", "--owner", &payer]);
    ledger_args(&mut register);
    let mut deploy = with_env_key();
    deploy.args(["chain", "deploy", "--rpc", NO_NODE]);
    let mut bad_url = with_env_key();
    bad_url.args([
        "chain",
        "deploy",
        "--rpc",
        &format!("http://{hex}.invalid:1"),
    ]);
    for (what, mut c) in [
        ("receipts settle", settle),
        ("chain deposit", deposit),
        ("chain withdraw", withdraw),
        ("chain balance", balance),
        ("chain register-model", register),
        ("chain deploy", deploy),
    ] {
        let o = checked(what, &mut c);
        assert!(!o.status.success(), "{what} succeeded without a node");
    }
    // A URL holding the key is the caller's own text: only check the command fails.
    assert!(!run(&mut bad_url).status.success());
}

/// `Debug` of the key, its signer, the engine and its builder, and the errors of every
/// way a key is read, show no key.
#[test]
fn key_holding_types_and_key_errors_do_not_print_the_key() {
    let key = PayerKey::from_hex(KEY).expect("key");
    let hex = KEY.trim_start_matches("0x");
    assert_no_key("PayerKey", &format!("{key:?} {key:#?}"));
    assert_no_key("PrivateKeySigner", &format!("{:?}", key.signer()));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig {
        index: dir.path().join("kb"),
        bm25_only: true,
        answer_mode: tribute::config::AnswerMode::Extractive,
        ..EngineConfig::default()
    };
    let builder = Engine::builder().config(config).signer(key.clone());
    assert_no_key("EngineBuilder", &format!("{builder:?} {builder:#?}"));
    let engine = builder.build().expect("an extractive BM25 engine");
    assert_no_key("Engine", &format!("{engine:?} {engine:#?}"));

    for bad in [
        format!("0x{}", &hex[..63]),
        format!("{KEY}zz"),
        format!("{KEY}\n{KEY}"),
    ] {
        let e = PayerKey::from_hex(&bad).expect_err("bad key");
        assert_no_key("from_hex error", &format!("{e} {e:?}"));
        let f = dir.path().join("bad.hex");
        std::fs::write(&f, &bad).expect("write");
        let e = PayerKey::from_file(&f).expect_err("bad key file");
        assert_no_key("from_file error", &format!("{e} {e:?}"));
        let e = PayerKey::from_keystore(&f, hex).expect_err("not a keystore");
        assert_no_key("from_keystore error", &format!("{e} {e:?}"));
    }
}
