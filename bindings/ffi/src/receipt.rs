//! Signing keys ([`Signer`]) and signed usage receipts ([`Receipt`]).

use std::sync::Arc;

use tribute::attribution::receipt::{Ledger as RustLedger, PayerKey, SignedReceipt};

use crate::error::{Result, TributeError, guard};
use crate::types::{Ledger, count};

/// The payer's signing key: answers' receipts are signed (EIP-712) with it. The key is
/// never printed or returned; only its address is.
#[derive(Debug, uniffi::Object)]
pub struct Signer {
    pub(crate) key: PayerKey,
}

#[uniffi::export]
impl Signer {
    /// The key in the environment variable `variable` (hex, with or without `0x`).
    /// Throws `Receipt` when the variable is unset or does not hold a key.
    #[uniffi::constructor(default(variable = "TRIBUTE_KEY"))]
    pub fn from_env(variable: String) -> Result<Arc<Self>> {
        guard(|| {
            Ok(Arc::new(Signer {
                key: PayerKey::from_env(&variable)?,
            }))
        })
    }

    /// A key from hex text (with or without `0x`). Throws `Receipt` when it is not a
    /// 32-byte private key.
    #[uniffi::constructor]
    pub fn from_hex(key: String) -> Result<Arc<Self>> {
        guard(|| {
            Ok(Arc::new(Signer {
                key: PayerKey::from_hex(&key)?,
            }))
        })
    }

    /// A key from a file holding hex.
    #[uniffi::constructor]
    pub fn from_file(path: String) -> Result<Arc<Self>> {
        guard(|| {
            Ok(Arc::new(Signer {
                key: PayerKey::from_file(path.as_ref())?,
            }))
        })
    }

    /// A key from an encrypted JSON keystore (Web3 Secret Storage).
    #[uniffi::constructor]
    pub fn from_keystore(path: String, password: String) -> Result<Arc<Self>> {
        guard(|| {
            Ok(Arc::new(Signer {
                key: PayerKey::from_keystore(path.as_ref(), &password)?,
            }))
        })
    }

    /// A new random key (for tests and throw-away accounts).
    #[uniffi::constructor]
    pub fn random() -> Arc<Self> {
        Arc::new(Signer {
            key: PayerKey::random(),
        })
    }

    /// The key's address (EIP-55 checksummed).
    pub fn address(&self) -> String {
        self.key.address().to_checksum(None)
    }
}

/// One cited chunk of a receipt.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReceiptChunk {
    /// keccak-256 of the chunk text (0x-hex).
    pub content_hash: String,
    /// Its contributor (EIP-55).
    pub contributor: String,
    /// Its weight in basis points (a receipt's chunks sum to 10,000).
    pub weight_bps: u32,
}

/// An adapter named by a receipt.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ReceiptAdapter {
    /// Its on-chain id (keccak-256 of its name, 0x-hex).
    pub adapter_id: String,
    /// Its merge weight.
    pub weight: f64,
}

/// A signed usage receipt: who paid (`payer`), for which model and adapters, which chunks
/// were cited with which weights (`chunks`), and the fee. Check it with `verify()`;
/// `toJson()` is the canonical JSON the CLI and the ledger tooling read.
#[derive(Debug, uniffi::Object)]
pub struct Receipt {
    pub(crate) inner: SignedReceipt,
    /// The ledger `verify()` uses by default (the engine's).
    ledger: Option<RustLedger>,
}

impl Receipt {
    pub(crate) fn new(inner: SignedReceipt, ledger: Option<RustLedger>) -> Self {
        Receipt { inner, ledger }
    }
}

#[uniffi::export]
impl Receipt {
    /// Parses receipt JSON (as `toJson()` writes it); `ledger` becomes the default of
    /// `verify()`. Throws `Receipt` when it is malformed.
    #[uniffi::constructor(default(ledger = None))]
    pub fn from_json(json: String, ledger: Option<Ledger>) -> Result<Arc<Self>> {
        guard(|| {
            let ledger = ledger.as_ref().map(RustLedger::try_from).transpose()?;
            Ok(Arc::new(Receipt::new(
                SignedReceipt::from_json(&json)?,
                ledger,
            )))
        })
    }

    /// Checks the signature: recovers the signer, checks that it is the payer, and returns
    /// the payer's address. `ledger` defaults to the engine's. Throws `Receipt` when the
    /// signature does not match or no ledger is known.
    #[uniffi::method(default(ledger = None))]
    pub fn verify(&self, ledger: Option<Ledger>) -> Result<String> {
        guard(|| {
            let ledger = match &ledger {
                Some(l) => RustLedger::try_from(l)?,
                None => self.ledger.ok_or_else(|| {
                    TributeError::Receipt(
                        "no ledger to verify against: pass verify(ledger = Ledger(chainId, contract))"
                            .into(),
                    )
                })?,
            };
            self.inner.verify(&ledger)?;
            Ok(self.payer())
        })
    }

    /// The receipt id (0x-hex, 32 bytes).
    pub fn id(&self) -> String {
        self.inner.receipt.receiptId.to_string()
    }

    /// The payer's address (EIP-55).
    pub fn payer(&self) -> String {
        self.inner.receipt.payer.to_checksum(None)
    }

    /// The serving node's address (EIP-55).
    pub fn serving_node(&self) -> String {
        self.inner.receipt.servingNode.to_checksum(None)
    }

    /// The model's on-chain id (0x-hex; zero for a retrieval-only receipt).
    pub fn model_id(&self) -> String {
        self.inner.receipt.modelId.to_string()
    }

    /// The fee in wei, as a decimal string.
    pub fn fee_wei(&self) -> String {
        self.inner.receipt.fee.to_string()
    }

    /// The payer's receipt counter.
    pub fn nonce(&self) -> u64 {
        self.inner.receipt.nonce
    }

    /// Seconds since the Unix epoch when it was signed.
    pub fn timestamp(&self) -> u64 {
        self.inner.receipt.timestamp
    }

    /// keccak-256 of the question (0x-hex).
    pub fn query_hash(&self) -> String {
        self.inner.receipt.queryHash.to_string()
    }

    /// keccak-256 of the answer (0x-hex).
    pub fn answer_hash(&self) -> String {
        self.inner.receipt.answerHash.to_string()
    }

    /// The cited chunks (their weights sum to 10,000 basis points).
    pub fn chunks(&self) -> Vec<ReceiptChunk> {
        self.inner
            .receipt
            .chunks
            .iter()
            .map(|c| ReceiptChunk {
                content_hash: c.contentHash.to_string(),
                contributor: c.contributor.to_checksum(None),
                weight_bps: u32::from(c.weightBps),
            })
            .collect()
    }

    /// The adapters used.
    pub fn adapters(&self) -> Vec<ReceiptAdapter> {
        self.inner
            .receipt
            .adapters
            .iter()
            .map(|a| ReceiptAdapter {
                adapter_id: a.adapterId.to_string(),
                weight: f64::from(a.weightMicros) / 1e6,
            })
            .collect()
    }

    /// How many chunks it cites.
    pub fn chunk_count(&self) -> u32 {
        count(self.inner.receipt.chunks.len())
    }

    /// The canonical JSON (fixed key order, EIP-55 addresses, the fee in decimal).
    pub fn to_json(&self) -> String {
        self.inner.to_json()
    }

    /// Whether `other` is the same signed receipt.
    pub fn same_as(&self, other: Arc<Receipt>) -> bool {
        self.inner == other.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Anvil's first development key (public; never for real funds).
    const KEY0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn signer_from_hex_and_errors() {
        let s = Signer::from_hex(KEY0.into()).expect("a valid key");
        assert_eq!(s.address(), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert!(matches!(
            Signer::from_hex("0x1234".into()),
            Err(TributeError::Receipt(_))
        ));
        assert!(matches!(
            Signer::from_env("TRIBUTE_FFI_TEST_SURELY_UNSET".into()),
            Err(TributeError::Receipt(_))
        ));
        assert_ne!(Signer::random().address(), Signer::random().address());
    }

    #[test]
    fn malformed_receipt_json_is_a_receipt_error() {
        assert!(matches!(
            Receipt::from_json("{}".into(), None),
            Err(TributeError::Receipt(_))
        ));
    }
}
