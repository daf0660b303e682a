//! What the attribution fuzz targets share: the test key and ledger, receipts built from
//! fuzz input, the properties every parsed receipt has, and a scratch folder.

use std::path::PathBuf;
use std::sync::OnceLock;

use alloy_primitives::{Address, B256, U256, address};
use arbitrary::Arbitrary;
use tribute_attribution::receipt::{
    AdapterUse, CitedChunk, Ledger, PayerKey, SignedReceipt, UsageReceipt,
};

/// Anvil's first key: receipts built by the targets are signed with it.
pub const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// The test key (parsed once).
pub fn key() -> &'static PayerKey {
    static KEY_CELL: OnceLock<PayerKey> = OnceLock::new();
    KEY_CELL.get_or_init(|| PayerKey::from_hex(KEY).expect("anvil key"))
}

/// Anvil's chain and first deployment, as in the attribution tests.
pub fn ledger() -> Ledger {
    Ledger {
        chain_id: 31337,
        contract: address!("5FbDB2315678afecb367f032d93F642f64180aa3"),
    }
}

/// Receipt fields chosen by the fuzzer. Chunk weights are rescaled to sum to 10,000 unless
/// `raw_weights`, and the payer is the test key unless `foreign_payer`, so that most
/// receipts are valid and get signed.
#[derive(Debug, Arbitrary)]
pub struct ReceiptSpec {
    version: u8,
    receipt_id: [u8; 32],
    foreign_payer: Option<[u8; 20]>,
    serving_node: [u8; 20],
    model_id: [u8; 32],
    adapters: Vec<([u8; 32], i32)>,
    query_hash: [u8; 32],
    answer_hash: [u8; 32],
    chunks: Vec<([u8; 32], [u8; 20], u16)>,
    raw_weights: bool,
    fee: [u64; 4],
    nonce: u64,
    timestamp: u64,
    attribution_hash: Option<[u8; 32]>,
}

impl ReceiptSpec {
    /// The receipt (`version` 1 or 2 mostly; anything else now and then).
    pub fn receipt(&self) -> UsageReceipt {
        let mut chunks: Vec<CitedChunk> = self
            .chunks
            .iter()
            .map(|(h, c, w)| CitedChunk {
                contentHash: B256::from(*h),
                contributor: Address::from(*c),
                weightBps: *w,
            })
            .collect();
        if !self.raw_weights && !chunks.is_empty() {
            let n = chunks.len() as u16;
            let share = 10_000 / n.min(10_000);
            for c in chunks.iter_mut() {
                c.weightBps = share;
            }
            if let Some(first) = chunks.first_mut() {
                first.weightBps += 10_000 - share * n.min(10_000);
            }
        }
        UsageReceipt {
            version: match self.version {
                0..=127 => 1,
                128..=250 => 2,
                v => u16::from(v),
            },
            receiptId: B256::from(self.receipt_id),
            payer: self
                .foreign_payer
                .map_or_else(|| key().address(), Address::from),
            servingNode: Address::from(self.serving_node),
            modelId: B256::from(self.model_id),
            adapters: self
                .adapters
                .iter()
                .map(|(id, w)| AdapterUse {
                    adapterId: B256::from(*id),
                    weightMicros: *w,
                })
                .collect(),
            queryHash: B256::from(self.query_hash),
            answerHash: B256::from(self.answer_hash),
            chunks,
            fee: U256::from_limbs(self.fee),
            nonce: self.nonce,
            timestamp: self.timestamp,
            attributionHash: self.attribution_hash.map(B256::from).unwrap_or_default(),
        }
    }
}

/// Checks a receipt that parsed: it validates, its canonical JSON reads back to the same
/// receipt and is a fixed point (canonical → parse → canonical gives the same bytes), and
/// verifying it either fails with a typed error or recovers its payer.
pub fn check_parsed(r: &SignedReceipt) {
    r.receipt.validate().expect("a parsed receipt validates");
    let canonical = r.to_json();
    let back = SignedReceipt::from_json(&canonical).expect("canonical JSON parses");
    assert_eq!(&back, r, "canonical JSON changed the receipt");
    assert_eq!(
        back.to_json(),
        canonical,
        "canonical JSON is not a fixed point"
    );
    let ledger = ledger();
    if let Ok(digest) = r.verify(&ledger) {
        assert_eq!(digest, r.receipt.digest(&ledger));
        assert_eq!(
            r.leaf(&ledger),
            tribute_attribution::receipt::receipt_leaf(digest)
        );
    }
}

/// A scratch folder: `$TRIBUTE_FUZZ_SCRATCH` (set per target by `core/fuzz/run.sh`), else
/// one per fuzzer instance under the temporary directory.
pub fn scratch_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("TRIBUTE_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "tribute-fuzz-{}",
                    std::os::unix::process::parent_id()
                ))
            });
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        dir
    })
}
