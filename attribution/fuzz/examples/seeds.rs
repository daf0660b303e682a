//! Writes the attribution fuzz targets' seeds into `attribution/fuzz/corpus/` (checked in;
//! run again only to change them): `cargo run --example seeds` in `core/fuzz`.
//!
//! - `receipt_json`: canonical receipts of versions 1 and 2, alone, as an array, as JSON
//!   lines and pretty-printed, signed by the test key for the test ledger.
//! - `receipt_verify`, `journal` mode 3: bytes that `arbitrary` reads as receipts and
//!   operations.
//! - `journal` modes 0-2: a log the journal wrote (receipts and state changes), that log
//!   without its magic, and its payloads separated by NUL bytes.

use std::path::Path;

use alloy_primitives::{Address, B256, U256, keccak256};
use tribute_attribution::journal::{Journal, LOG_FILE, ReceiptState};
use tribute_attribution::receipt::{CitedChunk, SignedReceipt, UsageReceipt};
use tribute_attribution_fuzz::{key, ledger};

fn receipt(version: u16, n: u64, chunks: usize) -> SignedReceipt {
    let chunks: Vec<CitedChunk> = (0..chunks)
        .map(|i| CitedChunk {
            contentHash: keccak256(format!("chunk {i}")),
            contributor: Address::repeat_byte(0x10 + i as u8),
            weightBps: if i == 0 {
                10_000 - 2_500 * (chunks as u16 - 1)
            } else {
                2_500
            },
        })
        .collect();
    let r = UsageReceipt {
        version,
        receiptId: keccak256(format!("receipt {n}")),
        payer: key().address(),
        servingNode: Address::repeat_byte(0x70),
        modelId: keccak256("SmolLM2-135M-Instruct"),
        adapters: vec![tribute_attribution::receipt::AdapterUse {
            adapterId: keccak256("zephyr"),
            weightMicros: 1_000_000,
        }],
        queryHash: keccak256(format!("query {n}")),
        answerHash: keccak256(format!("answer {n}")),
        chunks,
        fee: U256::from(1_000_000_000_000u64 + n),
        nonce: n,
        timestamp: 1_795_000_000 + n,
        attributionHash: if version >= 2 {
            keccak256(format!("record {n}"))
        } else {
            B256::ZERO
        },
    };
    key().sign(r, &ledger()).expect("sign")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus folder");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let (v1, v2, v2b) = (receipt(1, 1, 2), receipt(2, 2, 3), receipt(2, 3, 0));
    let json = corpus.join("receipt_json");
    write(&json, "v1.json", v1.to_json().as_bytes());
    write(&json, "v2.json", v2.to_json().as_bytes());
    let lines = format!("{}\n\n{}\n", v1.to_json(), v2b.to_json());
    write(&json, "lines.jsonl", lines.as_bytes());
    let array = format!("[{},{}]", v2.to_json(), v2b.to_json());
    write(&json, "array.json", array.as_bytes());
    let value: serde_json::Value = serde_json::from_str(&v2.to_json()).expect("json");
    let pretty = serde_json::to_string_pretty(&value).expect("pretty");
    write(&json, "pretty.json", pretty.as_bytes());

    // `arbitrary` input: any bytes decode; these give a few fields and operations.
    let verify = corpus.join("receipt_verify");
    for (i, len) in [64usize, 160, 400].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..len).map(|k| (k * 37 + i * 11) as u8).collect();
        write(&verify, &format!("bytes-{len}"), &bytes);
    }

    let journal = corpus.join("journal");
    let dir = tempfile_dir();
    {
        let mut j = Journal::open(&dir).expect("journal");
        j.append_batch(&[v1.clone(), v2.clone()]).expect("append");
        j.append(&v2b).expect("append");
        let batch = ReceiptState::Batched {
            batch_id: B256::repeat_byte(1),
        };
        let ids = [v1.receipt.receiptId, v2.receipt.receiptId];
        j.set_state(&ids, batch).expect("batched");
        let confirmed = ReceiptState::Confirmed {
            batch_id: B256::repeat_byte(1),
            tx_hash: B256::repeat_byte(0xee),
            block: 42,
        };
        j.set_state(&ids[..1], confirmed).expect("confirmed");
    }
    let log = std::fs::read(dir.join(LOG_FILE)).expect("log");
    let _ = std::fs::remove_dir_all(&dir);
    write(&journal, "0-log", &[&[0u8][..], &log].concat());
    write(&journal, "1-records", &[&[1u8][..], &log[8..]].concat());
    let mut payloads = vec![2u8];
    let mut pos = 8;
    while pos < log.len() {
        let len = u32::from_le_bytes(log[pos..pos + 4].try_into().expect("len")) as usize;
        payloads.extend_from_slice(&log[pos + 8..pos + 8 + len]);
        payloads.push(0);
        pos += 8 + len;
    }
    write(&journal, "2-payloads", &payloads);
    for (i, len) in [48usize, 200, 600].into_iter().enumerate() {
        let mut bytes = vec![3u8];
        bytes.extend((0..len).map(|k| (k * 53 + i * 7 + 1) as u8));
        write(&journal, &format!("3-ops-{len}"), &bytes);
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tribute-fuzz-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
