//! EIP-712 usage receipts: what an answer used (model, adapters, cited chunks) and what
//! the payer owes for it, signed by the payer and verifiable by anyone — off chain here, on
//! chain by the ledger contract's `hashReceipt` (`attribution/contracts`).
//!
//! Types (identical in the contract):
//! ```text
//! AdapterUse(bytes32 adapterId,int32 weightMicros)
//! CitedChunk(bytes32 contentHash,address contributor,uint16 weightBps)
//! UsageReceipt(uint16 version,bytes32 receiptId,address payer,address servingNode,bytes32 modelId,
//!   AdapterUse[] adapters,bytes32 queryHash,bytes32 answerHash,CitedChunk[] chunks,uint256 fee,
//!   uint64 nonce,uint64 timestamp,bytes32 attributionHash)
//! ```
//! Domain: name "Tribute Ledger", version "1", the chain id and the ledger's address.
//!
//! # Versions
//!
//! - **2** (written since 0.4): `attributionHash` is the keccak-256 of the answer's
//!   [attribution record](crate::record) (zero when none was written, e.g. an answer
//!   without sources), so that anyone holding the record can recompute the weights.
//! - **1**: the same type without `attributionHash` (the type string ends at
//!   `uint64 timestamp)`); such receipts still verify, hash as before and must carry a
//!   zero `attributionHash`. [`UsageReceipt::digest`] and the contract (`hashReceipt` for
//!   version 1, `hashReceiptV2` for version 2) pick the type by `version`.

use std::path::Path;

use alloy_primitives::{Address, B256, Signature, U256, keccak256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Eip712Domain, SolStruct, eip712_domain, sol};
use serde::{Deserialize, Serialize};

/// Receipt format version written into new receipts (see [Versions](self#versions)).
pub const RECEIPT_VERSION: u16 = 2;
/// The oldest receipt version that still verifies.
pub const FIRST_RECEIPT_VERSION: u16 = 1;

sol! {
    /// An adapter merged into the model for the answer, with its merge weight in millionths.
    #[derive(Debug, PartialEq, Eq)]
    struct AdapterUse {
        bytes32 adapterId;
        int32 weightMicros;
    }

    /// A cited chunk: its content hash, its contributor and its citation weight.
    #[derive(Debug, PartialEq, Eq)]
    struct CitedChunk {
        bytes32 contentHash;
        address contributor;
        uint16 weightBps;
    }

    /// What one answer used and what the payer owes for it.
    #[derive(Debug, PartialEq, Eq)]
    struct UsageReceipt {
        uint16 version;
        bytes32 receiptId;
        address payer;
        address servingNode;
        bytes32 modelId;
        AdapterUse[] adapters;
        bytes32 queryHash;
        bytes32 answerHash;
        CitedChunk[] chunks;
        uint256 fee;
        uint64 nonce;
        uint64 timestamp;
        bytes32 attributionHash;
    }

    /// The payer's authorisation to settle a batch of receipts (a Merkle root) with these
    /// payouts.
    #[derive(Debug, PartialEq, Eq)]
    struct SettleBatch {
        address payer;
        bytes32 root;
        uint256 total;
        bytes32 payoutsHash;
        uint64 batchNonce;
    }
}

/// Why a receipt or key was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The JSON is malformed or a field does not parse.
    #[error("malformed receipt JSON: {0}")]
    Json(String),
    /// A field is out of range or inconsistent.
    #[error("invalid receipt: {0}")]
    Invalid(String),
    /// The signature does not recover to the payer.
    #[error("receipt {receipt_id} is signed by {signer}, not by its payer {payer}")]
    WrongSigner {
        /// The receipt id.
        receipt_id: B256,
        /// Who signed.
        signer: Address,
        /// Who should have.
        payer: Address,
    },
    /// The signature bytes are unusable.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// A signing key could not be loaded (the message never contains the key).
    #[error("signing key: {0}")]
    Key(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// Where receipts are settled: the chain and the ledger contract (the EIP-712 domain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// EVM chain id.
    pub chain_id: u64,
    /// The ledger contract's address.
    pub contract: Address,
}

impl Ledger {
    /// The EIP-712 domain of receipts and batches on this ledger.
    pub fn domain(&self) -> Eip712Domain {
        eip712_domain! {
            name: "Tribute Ledger",
            version: "1",
            chain_id: self.chain_id,
            verifying_contract: self.contract,
        }
    }
}

/// The version-1 types: `UsageReceipt` without `attributionHash` (kept so that receipts
/// signed before version 2 hash and verify as they always did).
mod v1 {
    alloy_sol_types::sol! {
        struct AdapterUse {
            bytes32 adapterId;
            int32 weightMicros;
        }

        struct CitedChunk {
            bytes32 contentHash;
            address contributor;
            uint16 weightBps;
        }

        struct UsageReceipt {
            uint16 version;
            bytes32 receiptId;
            address payer;
            address servingNode;
            bytes32 modelId;
            AdapterUse[] adapters;
            bytes32 queryHash;
            bytes32 answerHash;
            CitedChunk[] chunks;
            uint256 fee;
            uint64 nonce;
            uint64 timestamp;
        }
    }

    impl From<&super::UsageReceipt> for UsageReceipt {
        fn from(r: &super::UsageReceipt) -> Self {
            UsageReceipt {
                version: r.version,
                receiptId: r.receiptId,
                payer: r.payer,
                servingNode: r.servingNode,
                modelId: r.modelId,
                adapters: r
                    .adapters
                    .iter()
                    .map(|a| AdapterUse {
                        adapterId: a.adapterId,
                        weightMicros: a.weightMicros,
                    })
                    .collect(),
                queryHash: r.queryHash,
                answerHash: r.answerHash,
                chunks: r
                    .chunks
                    .iter()
                    .map(|c| CitedChunk {
                        contentHash: c.contentHash,
                        contributor: c.contributor,
                        weightBps: c.weightBps,
                    })
                    .collect(),
                fee: r.fee,
                nonce: r.nonce,
                timestamp: r.timestamp,
            }
        }
    }
}

impl UsageReceipt {
    /// The EIP-712 digest the payer signs (what the contract's `hashReceipt` returns for a
    /// version-1 receipt, `hashReceiptV2` for a version-2 one).
    pub fn digest(&self, ledger: &Ledger) -> B256 {
        let domain = ledger.domain();
        if self.version == 1 {
            v1::UsageReceipt::from(self).eip712_signing_hash(&domain)
        } else {
            self.eip712_signing_hash(&domain)
        }
    }

    /// EIP-712 `hashStruct` of the receipt with the type of its version (the contract's
    /// `receiptStructHash` / `receiptStructHashV2`).
    pub fn struct_hash(&self) -> B256 {
        if self.version == 1 {
            v1::UsageReceipt::from(self).eip712_hash_struct()
        } else {
            self.eip712_hash_struct()
        }
    }

    /// The EIP-712 type hash of the receipt's version.
    pub fn type_hash(&self) -> B256 {
        if self.version == 1 {
            v1::UsageReceipt::from(self).eip712_type_hash()
        } else {
            self.eip712_type_hash()
        }
    }

    /// Checks the fields a well-formed receipt must satisfy: a known version, a payer,
    /// cited-chunk weights that sum to 10,000 (or no chunks), and no `attributionHash` in a
    /// version-1 receipt (it would not be signed).
    pub fn validate(&self) -> Result<(), ReceiptError> {
        if !(FIRST_RECEIPT_VERSION..=RECEIPT_VERSION).contains(&self.version) {
            return Err(ReceiptError::Invalid(format!(
                "version {} (this library reads {FIRST_RECEIPT_VERSION} to {RECEIPT_VERSION})",
                self.version
            )));
        }
        if self.version == 1 && self.attributionHash != B256::ZERO {
            return Err(ReceiptError::Invalid(
                "a version-1 receipt cannot carry an attributionHash (version 1 does not sign it)"
                    .into(),
            ));
        }
        if self.payer == Address::ZERO {
            return Err(ReceiptError::Invalid("payer is the zero address".into()));
        }
        let bps: u32 = self.chunks.iter().map(|c| u32::from(c.weightBps)).sum();
        if !self.chunks.is_empty() && bps != 10_000 {
            return Err(ReceiptError::Invalid(format!(
                "cited chunk weights sum to {bps} bps, not 10,000"
            )));
        }
        if let Some(c) = self.chunks.iter().find(|c| c.contributor == Address::ZERO) {
            return Err(ReceiptError::Invalid(format!(
                "chunk {} has the zero address as contributor",
                c.contentHash
            )));
        }
        Ok(())
    }
}

/// A receipt with the payer's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    /// The receipt.
    pub receipt: UsageReceipt,
    /// The payer's EIP-712 signature (r ‖ s ‖ v, v ∈ {27, 28}).
    pub signature: Signature,
}

impl SignedReceipt {
    /// Recovers the signer and checks that it is the payer; returns the digest.
    pub fn verify(&self, ledger: &Ledger) -> Result<B256, ReceiptError> {
        self.receipt.validate()?;
        let digest = self.receipt.digest(ledger);
        let signer = recover_signer(&self.signature, digest)?;
        if signer != self.receipt.payer {
            return Err(ReceiptError::WrongSigner {
                receipt_id: self.receipt.receiptId,
                signer,
                payer: self.receipt.payer,
            });
        }
        Ok(digest)
    }

    /// The canonical JSON of the receipt and its signature: fixed key order, no
    /// whitespace, addresses EIP-55, hashes and the signature as 0x-hex, the fee in decimal.
    pub fn to_json(&self) -> String {
        let j = ReceiptJson::from(self);
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string(&j).unwrap_or_default()
    }

    /// Parses canonical (or any equivalent) receipt JSON; unknown fields are refused.
    pub fn from_json(text: &str) -> Result<Self, ReceiptError> {
        let j: ReceiptJson =
            serde_json::from_str(text).map_err(|e| ReceiptError::Json(e.to_string()))?;
        let r = SignedReceipt::try_from(j)?;
        r.receipt.validate()?;
        Ok(r)
    }

    /// The leaf of this receipt in a settlement Merkle tree (see [`receipt_leaf`]).
    pub fn leaf(&self, ledger: &Ledger) -> B256 {
        receipt_leaf(self.receipt.digest(ledger))
    }
}

/// The on-chain id of a model or adapter name: the name itself when it is already a
/// 0x-prefixed 32-byte hex id, else `keccak256(name)` of its UTF-8 bytes. Receipts carry
/// these ids (`modelId`, `adapterId`) and the ledger's registry maps them to owners.
pub fn named_id(name: &str) -> B256 {
    let t = name.trim();
    if t.len() == 66
        && t.starts_with("0x")
        && let Ok(id) = t.parse::<B256>()
    {
        return id;
    }
    keccak256(t.as_bytes())
}

/// The hash of a batch's payouts that the payer signs in [`SettleBatch`]:
/// `keccak256(abi.encode(payees, amounts))` (the contract's `payoutsHash`).
pub fn payouts_hash(payees: &[Address], amounts: &[U256]) -> B256 {
    use alloy_sol_types::SolValue;
    keccak256((payees.to_vec(), amounts.to_vec()).abi_encode_params())
}

/// A receipt's Merkle leaf: `keccak256(keccak256(digest))` (OpenZeppelin's double-hashed
/// leaf, so that no inner node can pass for a leaf).
pub fn receipt_leaf(digest: B256) -> B256 {
    keccak256(keccak256(digest))
}

/// Half the order of secp256k1: signatures with a larger `s` are malleable twins of a
/// low-`s` one and are refused, as the ledger contract refuses them.
const HALF_ORDER: U256 = U256::from_limbs([
    0xdfe9_2f46_681b_20a0,
    0x5d57_6e73_57a4_501d,
    0xffff_ffff_ffff_ffff,
    0x7fff_ffff_ffff_ffff,
]);

/// Recovers the address that signed `digest` (libsecp256k1). High-`s` signatures are
/// refused ([`ReceiptError::BadSignature`]), as `ecrecover` in the ledger contract does.
pub fn recover_signer(signature: &Signature, digest: B256) -> Result<Address, ReceiptError> {
    if signature.s() > HALF_ORDER {
        return Err(ReceiptError::BadSignature(
            "s is in the upper half of the curve order (malleable signature)".into(),
        ));
    }
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&signature.r().to_be_bytes::<32>());
    compact[32..].copy_from_slice(&signature.s().to_be_bytes::<32>());
    let recid = if signature.v() {
        secp256k1::ecdsa::RecoveryId::One
    } else {
        secp256k1::ecdsa::RecoveryId::Zero
    };
    let public = secp256k1::ecdsa::RecoverableSignature::from_compact(&compact, recid)
        .and_then(|sig| sig.recover(secp256k1::Message::from_digest(digest.0)))
        .map_err(|e| ReceiptError::BadSignature(e.to_string()))?;
    let uncompressed = public.serialize_uncompressed();
    Ok(Address::from_raw_public_key(&uncompressed[1..]))
}

/// The payer's signing key. Its `Debug` shows the address only; the key is never printed.
///
/// Signing uses libsecp256k1 (RFC 6979 deterministic nonces, low `s`): the signatures are
/// byte-identical to alloy's k256 signer's, about five times faster.
#[derive(Clone)]
pub struct PayerKey {
    signer: PrivateKeySigner,
    secret: secp256k1::SecretKey,
}

impl std::fmt::Debug for PayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PayerKey")
            .field(&self.signer.address())
            .finish()
    }
}

impl From<PrivateKeySigner> for PayerKey {
    fn from(signer: PrivateKeySigner) -> Self {
        let bytes: [u8; 32] = signer.to_bytes().0;
        // A k256 signing key is a valid non-zero scalar, so libsecp256k1 accepts it.
        let secret = secp256k1::SecretKey::from_byte_array(bytes)
            .unwrap_or_else(|_| unreachable!("k256 keys are valid secp256k1 scalars"));
        PayerKey { signer, secret }
    }
}

impl PayerKey {
    /// A key from 0x-hex (or plain hex) text.
    pub fn from_hex(text: &str) -> Result<Self, ReceiptError> {
        text.trim()
            .parse::<PrivateKeySigner>()
            .map(PayerKey::from)
            .map_err(|_| ReceiptError::Key("not a 32-byte hex private key".into()))
    }

    /// A new random key (for tests and throw-away accounts).
    pub fn random() -> Self {
        PayerKey::from(PrivateKeySigner::random())
    }

    /// A key from an environment variable holding hex.
    pub fn from_env(var: &str) -> Result<Self, ReceiptError> {
        let v = std::env::var(var)
            .map_err(|_| ReceiptError::Key(format!("environment variable {var} is not set")))?;
        Self::from_hex(&v).map_err(|_| {
            ReceiptError::Key(format!("{var} does not hold a 32-byte hex private key"))
        })
    }

    /// A key from a file holding hex.
    pub fn from_file(path: &Path) -> Result<Self, ReceiptError> {
        let v = std::fs::read_to_string(path)
            .map_err(|e| ReceiptError::Key(format!("{}: {e}", path.display())))?;
        Self::from_hex(&v).map_err(|_| {
            ReceiptError::Key(format!(
                "{} does not hold a 32-byte hex private key",
                path.display()
            ))
        })
    }

    /// A key from an encrypted JSON keystore (Web3 Secret Storage).
    pub fn from_keystore(path: &Path, password: &str) -> Result<Self, ReceiptError> {
        PrivateKeySigner::decrypt_keystore(path, password)
            .map(PayerKey::from)
            .map_err(|e| ReceiptError::Key(format!("{}: {e}", path.display())))
    }

    /// The key's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The key as alloy's local signer (to send transactions from this account).
    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }

    /// Signs a 32-byte digest (RFC 6979, low `s`, `v` from the recovery id).
    pub fn sign_digest(&self, digest: B256) -> Signature {
        let msg = secp256k1::Message::from_digest(digest.0);
        let sig = secp256k1::SECP256K1.sign_ecdsa_recoverable(msg, &self.secret);
        let (recid, compact) = sig.serialize_compact();
        let odd = matches!(
            recid,
            secp256k1::ecdsa::RecoveryId::One | secp256k1::ecdsa::RecoveryId::Three
        );
        Signature::new(
            U256::from_be_slice(&compact[..32]),
            U256::from_be_slice(&compact[32..]),
            odd,
        )
    }

    /// Signs a receipt whose payer is this key's address.
    pub fn sign(
        &self,
        receipt: UsageReceipt,
        ledger: &Ledger,
    ) -> Result<SignedReceipt, ReceiptError> {
        if receipt.payer != self.address() {
            return Err(ReceiptError::Invalid(format!(
                "the receipt's payer is {}, the key is {}",
                receipt.payer,
                self.address()
            )));
        }
        receipt.validate()?;
        let signature = self.sign_digest(receipt.digest(ledger));
        Ok(SignedReceipt { receipt, signature })
    }

    /// Signs a batch settlement.
    pub fn sign_batch(
        &self,
        batch: &SettleBatch,
        ledger: &Ledger,
    ) -> Result<Signature, ReceiptError> {
        Ok(self.sign_digest(batch.eip712_signing_hash(&ledger.domain())))
    }
}

/// Addresses in receipt JSON: written EIP-55; read all-lowercase, all-uppercase or with a
/// valid EIP-55 checksum (a mixed-case address with a wrong checksum is a typo).
mod eip55 {
    use alloy_primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_checksum(None))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text = String::deserialize(d)?;
        let hex = text.strip_prefix("0x").unwrap_or(&text);
        let mixed = hex.chars().any(|c| c.is_ascii_lowercase())
            && hex.chars().any(|c| c.is_ascii_uppercase());
        let parsed = if mixed {
            Address::parse_checksummed(&text, None).map_err(|e| e.to_string())
        } else {
            text.parse::<Address>().map_err(|e| e.to_string())
        };
        parsed.map_err(|e| D::Error::custom(format!("address {text:?}: {e}")))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AdapterJson {
    adapter_id: B256,
    weight_micros: i32,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChunkJson {
    content_hash: B256,
    #[serde(with = "eip55")]
    contributor: Address,
    weight_bps: u16,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReceiptJson {
    version: u16,
    receipt_id: B256,
    #[serde(with = "eip55")]
    payer: Address,
    #[serde(with = "eip55")]
    serving_node: Address,
    model_id: B256,
    adapters: Vec<AdapterJson>,
    query_hash: B256,
    answer_hash: B256,
    chunks: Vec<ChunkJson>,
    /// Decimal wei.
    fee: String,
    nonce: u64,
    timestamp: u64,
    /// Version 2 on: always written; absent (zero) in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attribution_hash: Option<B256>,
    signature: String,
}

impl From<&SignedReceipt> for ReceiptJson {
    fn from(s: &SignedReceipt) -> Self {
        let r = &s.receipt;
        ReceiptJson {
            version: r.version,
            receipt_id: r.receiptId,
            payer: r.payer,
            serving_node: r.servingNode,
            model_id: r.modelId,
            adapters: r
                .adapters
                .iter()
                .map(|a| AdapterJson {
                    adapter_id: a.adapterId,
                    weight_micros: a.weightMicros,
                })
                .collect(),
            query_hash: r.queryHash,
            answer_hash: r.answerHash,
            chunks: r
                .chunks
                .iter()
                .map(|c| ChunkJson {
                    content_hash: c.contentHash,
                    contributor: c.contributor,
                    weight_bps: c.weightBps,
                })
                .collect(),
            fee: r.fee.to_string(),
            nonce: r.nonce,
            timestamp: r.timestamp,
            attribution_hash: (r.version >= 2).then_some(r.attributionHash),
            signature: format!(
                "0x{}",
                alloy_primitives::hex::encode(s.signature.as_bytes())
            ),
        }
    }
}

impl TryFrom<ReceiptJson> for SignedReceipt {
    type Error = ReceiptError;
    fn try_from(j: ReceiptJson) -> Result<Self, ReceiptError> {
        let fee = U256::from_str_radix(j.fee.trim(), 10)
            .map_err(|e| ReceiptError::Json(format!("fee {:?}: {e}", j.fee)))?;
        let sig_bytes = alloy_primitives::hex::decode(j.signature.trim())
            .map_err(|e| ReceiptError::BadSignature(format!("not hex: {e}")))?;
        let signature = Signature::try_from(sig_bytes.as_slice())
            .map_err(|e| ReceiptError::BadSignature(e.to_string()))?;
        Ok(SignedReceipt {
            receipt: UsageReceipt {
                version: j.version,
                receiptId: j.receipt_id,
                payer: j.payer,
                servingNode: j.serving_node,
                modelId: j.model_id,
                adapters: j
                    .adapters
                    .into_iter()
                    .map(|a| AdapterUse {
                        adapterId: a.adapter_id,
                        weightMicros: a.weight_micros,
                    })
                    .collect(),
                queryHash: j.query_hash,
                answerHash: j.answer_hash,
                chunks: j
                    .chunks
                    .into_iter()
                    .map(|c| CitedChunk {
                        contentHash: c.content_hash,
                        contributor: c.contributor,
                        weightBps: c.weight_bps,
                    })
                    .collect(),
                fee,
                nonce: j.nonce,
                timestamp: j.timestamp,
                attributionHash: j.attribution_hash.unwrap_or_default(),
            },
            signature,
        })
    }
}

/// A Merkle tree over receipt leaves with OpenZeppelin's sorted-pair keccak hashing
/// (an odd node at the end of a level moves up unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    levels: Vec<Vec<B256>>,
}

fn hash_pair(a: B256, b: B256) -> B256 {
    let (x, y) = if a < b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(x.as_slice());
    buf[32..].copy_from_slice(y.as_slice());
    keccak256(buf)
}

impl MerkleTree {
    /// Builds the tree; `None` for no leaves.
    pub fn new(leaves: Vec<B256>) -> Option<Self> {
        if leaves.is_empty() {
            return None;
        }
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let prev = levels.last()?;
            let next = prev
                .chunks(2)
                .map(|c| {
                    if c.len() == 2 {
                        hash_pair(c[0], c[1])
                    } else {
                        c[0]
                    }
                })
                .collect();
            levels.push(next);
        }
        Some(MerkleTree { levels })
    }

    /// The root.
    pub fn root(&self) -> B256 {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default()
    }

    /// The proof of the leaf at `index`.
    pub fn proof(&self, index: usize) -> Option<Vec<B256>> {
        if index >= self.levels[0].len() {
            return None;
        }
        let mut proof = Vec::new();
        let mut i = index;
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                proof.push(level[sibling]);
            }
            i /= 2;
        }
        Some(proof)
    }
}

/// Whether `leaf` with `proof` leads to `root` (the contract's `verifyReceipt`).
pub fn verify_proof(leaf: B256, proof: &[B256], root: B256) -> bool {
    proof.iter().fold(leaf, |acc, p| hash_pair(acc, *p)) == root
}
