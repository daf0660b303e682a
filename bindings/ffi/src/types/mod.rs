//! Records and enums: plain values copied across the boundary (Kotlin data classes, Swift
//! structs), and their conversions from the `tribute` types, by topic.

mod answer;
mod ask;
mod index;
mod options;
mod receipts;

pub use answer::{AlertReason, Answer, AnswerSentence, Citation, Retrieval, SourceAlert, Usage};
pub use ask::{AdapterWeight, AskOptions, AttributionMethod};
pub use index::{Document, Duplicate, Hit, IngestProgress, IngestReport, Locator, SearchMode};
pub use options::{ChainOptions, EngineOptions, Ledger, load_ledger};
pub use receipts::{JournaledReceipt, ReceiptState, ReceiptStats, SettleReport, SettledBatch};

/// A count as `u32` (saturating: counts here never come near it).
pub(crate) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A `u32` argument as `usize`.
pub(crate) fn size(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use tribute::attribution::Method;
    use tribute::attribution::receipt::Ledger as RustLedger;

    use super::*;
    use crate::error::TributeError;

    #[test]
    fn enums_round_trip() {
        for m in [SearchMode::Bm25, SearchMode::Dense, SearchMode::Hybrid] {
            assert_eq!(SearchMode::from(tribute::Mode::from(m)), m);
        }
        for m in [
            AttributionMethod::Loo,
            AttributionMethod::Ablation,
            AttributionMethod::Shapley,
            AttributionMethod::Similarity,
            AttributionMethod::Retrieval,
        ] {
            assert_eq!(AttributionMethod::from(Method::from(m)), m);
        }
    }

    #[test]
    fn ledger_converts_and_checksums() {
        let l = Ledger {
            chain_id: 31_337,
            contract: "0x5fbdb2315678afecb367f032d93f642f64180aa3".into(),
        };
        let r = RustLedger::try_from(&l).expect("a valid ledger");
        assert_eq!(r.chain_id, 31_337);
        assert_eq!(
            Ledger::from(&r).contract,
            "0x5FbDB2315678afecb367f032d93F642f64180aa3"
        );
        let bad = Ledger {
            chain_id: 1,
            contract: "0x12".into(),
        };
        assert!(matches!(
            RustLedger::try_from(&bad),
            Err(TributeError::Config(_))
        ));
    }

    #[test]
    fn ask_options_convert() {
        let o = AskOptions {
            top_k: Some(3),
            mode: Some(SearchMode::Bm25),
            adapters: vec![AdapterWeight {
                id: "zephyr".into(),
                weight: 0.5,
            }],
            method: Some(AttributionMethod::Similarity),
            fee_wei: Some("1000".into()),
            ..AskOptions::default()
        };
        let r = tribute::AskOptions::try_from(o).expect("valid options");
        assert_eq!(r.top_k, Some(3));
        assert_eq!(r.mode, Some(tribute::Mode::Bm25));
        assert_eq!(r.adapters, vec![("zephyr".to_owned(), 0.5)]);
        assert_eq!(r.method, Some(Method::Similarity));
        assert_eq!(r.fee.map(|f| f.to_string()), Some("1000".into()));
        let bad = AskOptions {
            fee_wei: Some("-1".into()),
            ..AskOptions::default()
        };
        assert!(matches!(
            tribute::AskOptions::try_from(bad),
            Err(TributeError::Request(_))
        ));
    }

    #[test]
    fn chain_options_convert_and_validate() {
        let c = ChainOptions {
            rpc: "http://127.0.0.1:8545".into(),
            batch_size: Some(7),
            treasury: Some("0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc".into()),
            fallback_owner: None,
            timeout_secs: Some(5),
        };
        let r = tribute::config::ChainConfig::try_from(c.clone()).expect("valid");
        assert_eq!((r.batch_size, r.timeout_secs), (7, 5));
        assert_eq!(r.treasury.map(|a| a.to_checksum(None)), c.treasury.clone());
        let r = tribute::config::ChainConfig::try_from(ChainOptions {
            batch_size: None,
            timeout_secs: None,
            treasury: None,
            ..c.clone()
        })
        .expect("valid");
        assert_eq!((r.batch_size, r.timeout_secs, r.treasury), (100, 30, None));
        let bad = ChainOptions {
            treasury: Some("0x12".into()),
            ..c
        };
        assert!(matches!(
            tribute::config::ChainConfig::try_from(bad),
            Err(TributeError::Config(m)) if m.starts_with("chain treasury")
        ));
    }

    #[test]
    fn ledgers_load_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.json");
        std::fs::write(
            &path,
            r#"{"chainId": 31337, "contract": "0x5fbdb2315678afecb367f032d93f642f64180aa3"}"#,
        )
        .expect("write");
        let l = load_ledger(path.display().to_string()).expect("a ledger");
        assert_eq!(l.chain_id, 31_337);
        assert_eq!(l.contract, "0x5FbDB2315678afecb367f032d93F642f64180aa3");
        std::fs::write(&path, "{}").expect("write");
        assert!(matches!(
            load_ledger(path.display().to_string()),
            Err(TributeError::Config(_))
        ));
        assert!(matches!(
            load_ledger(dir.path().join("missing.json").display().to_string()),
            Err(TributeError::Config(_))
        ));
    }

    #[test]
    fn documents_convert_and_validate() {
        let alice = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        let d = Document {
            id: "d1".into(),
            text: "Some text.".into(),
            title: Some("T".into()),
            datanet: None,
            contributor: None,
            license: Some("CC-BY-4.0".into()),
            metadata_json: Some(r#"{"lang":"en"}"#.into()),
        };
        let c = tribute::Contributor::parse(alice).expect("an address");
        let r = d.clone().into_rust(0, Some("net"), Some(c)).expect("valid");
        assert_eq!(r.title, "T");
        assert_eq!(r.datanet.as_str(), "net");
        assert_eq!(r.contributor.to_string(), alice);
        assert_eq!(r.metadata["lang"], "en");
        let bad = Document {
            metadata_json: Some("[1]".into()),
            ..d.clone()
        };
        assert!(matches!(
            bad.into_rust(3, None, None),
            Err(TributeError::KnowledgeBase(m)) if m.starts_with("document 3")
        ));
        let bad = Document {
            contributor: Some("not an address".into()),
            ..d
        };
        assert!(matches!(
            bad.into_rust(0, None, None),
            Err(TributeError::KnowledgeBase(_))
        ));
    }
}
