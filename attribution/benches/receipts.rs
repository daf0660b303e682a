//! Receipt throughput on one core: EIP-712 hashing, signing and verification
//! (`cargo bench -p tribute-attribution --bench receipts`; env `BENCH_N`, default 2,000).
//! Aims: sign ≥ 5,000/s and verify ≥ 3,000/s per core.

use std::time::Instant;

use alloy_primitives::{Address, U256, keccak256};
use tribute_attribution::receipt::{AdapterUse, CitedChunk, Ledger, PayerKey, UsageReceipt};

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    // Anvil's first development key (public; never for real funds).
    let key =
        PayerKey::from_hex("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
            .expect("key");
    let ledger = Ledger {
        chain_id: 31337,
        contract: Address::repeat_byte(0x11),
    };
    let receipts: Vec<UsageReceipt> = (0..n)
        .map(|i| UsageReceipt {
            version: 1,
            receiptId: keccak256(i.to_le_bytes()),
            payer: key.address(),
            servingNode: Address::repeat_byte(0x22),
            modelId: keccak256("SmolLM2-135M-Instruct"),
            adapters: vec![AdapterUse {
                adapterId: keccak256("zephyr"),
                weightMicros: 1_000_000,
            }],
            queryHash: keccak256(format!("q{i}")),
            answerHash: keccak256(format!("a{i}")),
            chunks: (0..4u8)
                .map(|c| CitedChunk {
                    contentHash: keccak256([c, i as u8]),
                    contributor: Address::repeat_byte(0x30 + c),
                    weightBps: 2_500,
                })
                .collect(),
            fee: U256::from(1_000_000_000_000u64),
            nonce: i as u64,
            timestamp: 1_795_000_000,
            attributionHash: Default::default(),
        })
        .collect();
    let t = Instant::now();
    let digests: Vec<_> = receipts.iter().map(|r| r.digest(&ledger)).collect();
    let hash_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let signed: Vec<_> = receipts
        .into_iter()
        .map(|r| key.sign(r, &ledger).expect("sign"))
        .collect();
    let sign_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (s, d) in signed.iter().zip(&digests) {
        assert_eq!(s.verify(&ledger).expect("verify"), *d);
    }
    let verify_s = t.elapsed().as_secs_f64();
    println!("# receipts: {n} receipts with 4 cited chunks and 1 adapter, one thread\n");
    println!("| operation | per second |\n|---|---|");
    println!("| EIP-712 digest | {:.0} |", n as f64 / hash_s);
    println!("| sign (digest + ECDSA) | {:.0} |", n as f64 / sign_s);
    println!(
        "| verify (digest + recover + compare) | {:.0} |",
        n as f64 / verify_s
    );
    println!(
        "{{\"sign_per_s\": {:.0}, \"verify_per_s\": {:.0}}}",
        n as f64 / sign_s,
        n as f64 / verify_s
    );
}
