//! Attribution records: everything needed to recompute an answer's citation weights and
//! reward split, committed to by the answer's receipt (`attributionHash`, receipt version 2).
//!
//! A record names the model, tokenizer and adapters by content hash, the prompt (template
//! version, system prompt, earlier turns, question), the answer (text and token ids), the
//! sources **in prompt order** by content hash (their text stays in the knowledge base),
//! the attribution method with all its parameters, the scores and weights it produced, and
//! the inputs of the reward split. Its hash is `keccak256` of its canonical JSON
//! ([`AttributionRecord::to_json`]: fixed key order, no whitespace).
//!
//! # Versions
//!
//! - **2**: each source also carries its [`RecordedLocator`] (pages, heading path,
//!   character span), so that the receipt binds *where* a cited chunk lies in its
//!   document as well as its text (left out for chunks indexed without one).
//! - **1**: sources without locators. Such records still load and hash as they did.
//!
//! [`RecordStore`] keeps records beside the receipt journal (`<journal>/records/<hash>.json`),
//! content-addressed and crash-safe: [`RecordStore::put`] writes a temporary file, syncs it,
//! renames it into place and syncs the directory before it returns, so a receipt naming
//! the record is only journaled (acknowledged) once the record is durable.
//!
//! With a journal in PostgreSQL (feature `postgres`) the records live in its database
//! instead, in `tribute_attribution_records(hash, record)`, committed before the receipt is
//! journaled; [`crate::journal::JournalBackend::put_record`] and `get_record` reach either
//! place.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use alloy_primitives::{Address, B256, U256, keccak256};
use serde::{Deserialize, Serialize};

use crate::split::RewardConfig;
use crate::weights::{AttributionConfig, Method};

/// The record format version written into new records (see [Versions](self#versions)).
pub const RECORD_VERSION: u16 = 2;
/// The oldest record version that still loads.
pub const FIRST_RECORD_VERSION: u16 = 1;
/// The records' directory inside a journal directory.
pub const RECORDS_DIR: &str = "records";

/// Why a record could not be stored or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Reading, writing or syncing a record file failed.
    #[error("attribution record I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No record with this hash is stored.
    #[error(
        "attribution record {hash} is missing (looked for {path}); the receipt cannot be audited without it"
    )]
    Missing {
        /// The hash the receipt commits to.
        hash: B256,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The stored file does not hash to the name the receipt commits to.
    #[error("attribution record {expected} was altered: its content hashes to {actual} ({path})")]
    Altered {
        /// The hash the receipt commits to.
        expected: B256,
        /// The hash of what is stored.
        actual: B256,
        /// The file.
        path: PathBuf,
    },
    /// The record hashes correctly but does not parse (or has an unknown version).
    #[error("attribution record {hash} is malformed: {reason}")]
    Malformed {
        /// Its hash.
        hash: B256,
        /// What is wrong.
        reason: String,
    },
    /// The shared journal's database could not store or load the record (feature
    /// `postgres`); nothing was written.
    #[error("attribution records at {url}: {reason}")]
    Database {
        /// The journal's URL, password hidden.
        url: String,
        /// The driver's message.
        reason: String,
    },
}

/// The model that answered, by content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedModel {
    /// Its name.
    pub name: String,
    /// Its on-chain id (the receipt's `modelId`).
    pub id: B256,
    /// keccak-256 of the model directory's manifest (see `docs/ATTRIBUTION.md`).
    pub hash: B256,
    /// keccak-256 of the tokenizer files' manifest.
    pub tokenizer_hash: B256,
}

/// An adapter merged into the model for the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedAdapter {
    /// The name it was registered under.
    pub name: String,
    /// Its on-chain id (the receipt's `adapterId`).
    pub id: B256,
    /// keccak-256 of its files' manifest; `None` when the engine did not know its path.
    pub hash: Option<B256>,
    /// Its merge weight.
    pub weight: f32,
}

/// One earlier turn of the conversation, as it went into the prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedTurn {
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// The prompt the answer was generated from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedPrompt {
    /// The prompt template's version (how sources and question are laid out).
    pub template: String,
    /// The system prompt.
    pub system: String,
    /// Earlier turns.
    pub history: Vec<RecordedTurn>,
    /// The question.
    pub question: String,
    /// How many prompt tokens.
    pub tokens: usize,
    /// keccak-256 of the prompt's token ids (u32 little-endian).
    pub tokens_hash: B256,
}

/// A source shown to the model, in prompt order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedSource {
    /// keccak-256 of the chunk's text (the key to fetch it from the knowledge base).
    pub content_hash: B256,
    /// The chunk id when it was cited.
    pub chunk_id: String,
    /// The document title shown with it.
    pub title: String,
    /// Who contributed it.
    pub contributor: Address,
    /// How many bytes of the chunk's text were shown (less than its length when it was cut
    /// to fit the prompt budget).
    pub shown_bytes: usize,
    /// Its retrieval score (an input of the `retrieval` method and of the fallback).
    pub retrieval_score: f64,
    /// Where the chunk lies in its document (version 2 on; absent for chunks indexed
    /// without a locator). Last, so that a source without one serialises as in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locator: Option<RecordedLocator>,
}

/// Where a source's chunk lies in its document: the pages it spans (paged formats such as
/// PDF), the heading path of its section and its character span in the document's
/// extracted text. Every key is written, empty lists included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedLocator {
    /// The 1-based pages, in order; empty for formats without pages.
    pub pages: Vec<u32>,
    /// The headings above the chunk, outermost first.
    pub headings: Vec<String>,
    /// The chunk's first character (Unicode scalar value, 0-based) in the document's text.
    pub char_start: usize,
    /// One past its last character.
    pub char_end: usize,
}

/// What the attribution produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedResult {
    /// Raw score per source (method-specific units), in prompt order.
    pub scores: Vec<f64>,
    /// Weight per source in basis points, in prompt order.
    pub weights_bps: Vec<u32>,
    /// Why the weights fell back to retrieval scores, if they did.
    pub fallback: Option<String>,
    /// Model passes spent.
    pub model_passes: usize,
}

/// The inputs of the reward split: the fee, the cited chunks as the receipt names them and
/// the reward policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedSplit {
    /// Fee in wei (decimal).
    #[serde(with = "tribute_common::wei::serde")]
    pub fee: U256,
    /// `(content hash, contributor, weight bps)` of each cited chunk, as in the receipt.
    pub chunks: Vec<(B256, Address, u16)>,
    /// The reward policy and governance of the split.
    pub rewards: RewardConfig,
}

/// Everything needed to recompute one answer's attribution and reward split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributionRecord {
    /// The format version: [`RECORD_VERSION`] for new records.
    pub version: u16,
    /// The model.
    pub model: RecordedModel,
    /// The adapters, in merge order.
    pub adapters: Vec<RecordedAdapter>,
    /// The prompt.
    pub prompt: RecordedPrompt,
    /// The answer text.
    pub answer: String,
    /// The answer's token ids (what the model scores).
    pub answer_tokens: Vec<u32>,
    /// The sources in prompt order.
    pub sources: Vec<RecordedSource>,
    /// The attribution method.
    pub method: Method,
    /// All its parameters (seed, passes, question weight…).
    pub params: AttributionConfig,
    /// What it produced.
    pub result: RecordedResult,
    /// The reward split's inputs.
    pub split: RecordedSplit,
}

impl AttributionRecord {
    /// The canonical JSON: fields in declaration order, no whitespace, floats in their
    /// shortest round-trip form.
    pub fn to_json(&self) -> String {
        // Serialising strings, numbers and hashes cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// keccak-256 of [`to_json`](Self::to_json): what the receipt's `attributionHash` holds.
    pub fn hash(&self) -> B256 {
        keccak256(self.to_json().as_bytes())
    }

    /// Parses a record whose bytes hash to `hash`.
    pub fn from_json(hash: B256, bytes: &[u8]) -> Result<Self, RecordError> {
        let record: AttributionRecord =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Malformed {
                hash,
                reason: e.to_string(),
            })?;
        let malformed = |reason: String| RecordError::Malformed { hash, reason };
        if !(FIRST_RECORD_VERSION..=RECORD_VERSION).contains(&record.version) {
            return Err(malformed(format!(
                "version {} (this library reads {FIRST_RECORD_VERSION} to {RECORD_VERSION})",
                record.version
            )));
        }
        if record.version == 1 && record.sources.iter().any(|s| s.locator.is_some()) {
            return Err(malformed(
                "a version-1 record cannot carry locators (version 1 does not define them)".into(),
            ));
        }
        Ok(record)
    }
}

/// keccak-256 of token ids as u32 little-endian bytes (the record's prompt `tokensHash`).
pub fn tokens_hash(tokens: &[u32]) -> B256 {
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    keccak256(bytes)
}

/// Content-addressed attribution records in a directory (`<hash>.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordStore {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a directory entry (a new file, a rename) durable.
fn sync_dir(dir: &Path) -> Result<(), RecordError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl RecordStore {
    /// The store in `dir` (nothing is created until the first [`put`](Self::put)).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RecordStore { dir: dir.into() }
    }

    /// The store beside the receipt journal in `journal_dir` (`<journal_dir>/records`).
    pub fn beside_journal(journal_dir: &Path) -> Self {
        Self::new(journal_dir.join(RECORDS_DIR))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the record with this hash is (or would be) stored.
    pub fn path(&self, hash: &B256) -> PathBuf {
        self.dir.join(format!("{hash}.json"))
    }

    /// Stores a record durably and returns its hash: a temporary file is written and
    /// synced, renamed to `<hash>.json`, and the directory is synced, all before this
    /// returns. Storing a record that is already there writes nothing.
    pub fn put(&self, record: &AttributionRecord) -> Result<B256, RecordError> {
        static TMP: AtomicU64 = AtomicU64::new(0);
        let json = record.to_json();
        let hash = keccak256(json.as_bytes());
        let path = self.path(&hash);
        if std::fs::read(&path).is_ok_and(|b| b == json.as_bytes()) {
            return Ok(hash);
        }
        if !self.dir.is_dir() {
            std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
            if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let tmp = self.dir.join(format!(
            ".{hash}.{}.{}.tmp",
            std::process::id(),
            TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            use std::io::Write;
            f.write_all(json.as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&path)(e));
        }
        sync_dir(&self.dir)?;
        Ok(hash)
    }

    /// Loads the record with this hash, checking that its bytes hash to it
    /// ([`RecordError::Missing`], [`RecordError::Altered`]).
    pub fn get(&self, hash: &B256) -> Result<AttributionRecord, RecordError> {
        let path = self.path(hash);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RecordError::Missing { hash: *hash, path });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let actual = keccak256(&bytes);
        if actual != *hash {
            return Err(RecordError::Altered {
                expected: *hash,
                actual,
                path,
            });
        }
        AttributionRecord::from_json(*hash, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 record: sources without locators.
    fn record_v1() -> AttributionRecord {
        AttributionRecord {
            version: 1,
            model: RecordedModel {
                name: "SmolLM2-135M-Instruct".into(),
                id: keccak256("SmolLM2-135M-Instruct"),
                hash: keccak256("model files"),
                tokenizer_hash: keccak256("tokenizer files"),
            },
            adapters: vec![RecordedAdapter {
                name: "zephyr".into(),
                id: keccak256("zephyr"),
                hash: None,
                weight: 0.7,
            }],
            prompt: RecordedPrompt {
                template: "tribute-rag/1".into(),
                system: "Answer from the sources.".into(),
                history: vec![],
                question: "What is Zephyr?".into(),
                tokens: 3,
                tokens_hash: tokens_hash(&[1, 2, 3]),
            },
            answer: "A flight controller.".into(),
            answer_tokens: vec![7, 8, 9],
            sources: vec![RecordedSource {
                content_hash: keccak256("chunk"),
                chunk_id: "zephyr-intro#0".into(),
                title: "Zephyr".into(),
                contributor: Address::repeat_byte(1),
                shown_bytes: 5,
                retrieval_score: 0.1 + 0.2,
                locator: None,
            }],
            method: Method::Shapley,
            params: AttributionConfig::default(),
            result: RecordedResult {
                scores: vec![1.0 / 3.0],
                weights_bps: vec![10_000],
                fallback: None,
                model_passes: 2,
            },
            split: RecordedSplit {
                fee: U256::from(10u64).pow(U256::from(18u64)),
                chunks: vec![(keccak256("chunk"), Address::repeat_byte(1), 10_000)],
                rewards: RewardConfig::default(),
            },
        }
    }

    /// The current version's record: its source carries a locator.
    fn record() -> AttributionRecord {
        let mut r = record_v1();
        r.version = RECORD_VERSION;
        r.sources[0].locator = Some(RecordedLocator {
            pages: vec![2, 3],
            headings: vec!["Zephyr".into(), "Setup".into()],
            char_start: 120,
            char_end: 480,
        });
        r
    }

    #[test]
    fn canonical_json_round_trips_bit_exactly() {
        for (r, version) in [(record_v1(), 1), (record(), 2)] {
            let json = r.to_json();
            assert!(
                json.starts_with(&format!("{{\"version\":{version},\"model\":{{")),
                "{json}"
            );
            let back = AttributionRecord::from_json(r.hash(), json.as_bytes()).expect("parses");
            assert_eq!(back, r);
            assert_eq!(
                back.to_json(),
                json,
                "a fixed point: floats round-trip exactly"
            );
            assert_eq!(back.hash(), keccak256(json.as_bytes()));
        }
    }

    #[test]
    fn golden_record_hashes() {
        // Pinned: a change here changes the attributionHash of every receipt signed with
        // such a record. Version 1 (no locators) hashes as it always did.
        let v1 = record_v1();
        assert!(!v1.to_json().contains("locator"));
        assert_eq!(
            v1.hash(),
            alloy_primitives::b256!(
                "bd2fe0f4316abd27ebce8821f91ee02c918b78fd9c7db0fcc7d7722b9e9efaa5"
            )
        );
        // Version 2 writes each source's locator last, every key present.
        let v2 = record();
        assert!(v2.to_json().contains(
            "\"retrievalScore\":0.30000000000000004,\"locator\":{\"pages\":[2,3],\
             \"headings\":[\"Zephyr\",\"Setup\"],\"charStart\":120,\"charEnd\":480}}]"
        ));
        assert_eq!(
            v2.hash(),
            alloy_primitives::b256!(
                "726122f56f575f96a058e6ca4dac98ee76f516ddf55b231572606945a4946e27"
            )
        );
        // The hash binds the locator: moving the cited span changes it.
        let mut moved = record();
        if let Some(l) = moved.sources[0].locator.as_mut() {
            l.char_start += 1;
        }
        assert_ne!(moved.hash(), v2.hash());
    }

    #[test]
    fn versions_are_checked() {
        let load =
            |r: &AttributionRecord| AttributionRecord::from_json(r.hash(), r.to_json().as_bytes());
        assert_eq!(load(&record_v1()).expect("version 1 loads"), record_v1());
        // Version 1 does not define locators: one that carries them is malformed.
        let mut v1_with_locator = record();
        v1_with_locator.version = 1;
        assert!(matches!(
            load(&v1_with_locator),
            Err(RecordError::Malformed { reason, .. }) if reason.contains("locators")
        ));
        // A version-2 source may lack a locator (a chunk indexed without one).
        let mut v2_without = record();
        v2_without.sources[0].locator = None;
        assert_eq!(load(&v2_without).expect("loads"), v2_without);
    }

    #[test]
    fn store_is_content_addressed_and_detects_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RecordStore::beside_journal(dir.path());
        let r = record();
        let hash = store.put(&r).expect("put");
        assert_eq!(hash, r.hash());
        assert_eq!(store.put(&r).expect("again"), hash, "idempotent");
        assert_eq!(store.get(&hash).expect("get"), r);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(store.dir())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");

        let path = store.path(&hash);
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, text.replace("10000", "9999")).expect("tamper");
        assert!(matches!(
            store.get(&hash),
            Err(RecordError::Altered { expected, .. }) if expected == hash
        ));
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(store.get(&hash), Err(RecordError::Missing { .. })));

        // A record of an unknown version that hashes correctly is malformed, not altered.
        let mut future = record();
        future.version = 9;
        let json = future.to_json();
        let h = keccak256(json.as_bytes());
        std::fs::write(store.path(&h), &json).expect("write");
        assert!(matches!(store.get(&h), Err(RecordError::Malformed { .. })));
    }
}
