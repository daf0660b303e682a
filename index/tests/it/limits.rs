//! Per-document limits (`IndexConfig::max_document_bytes`, `max_chunks_per_document`): a
//! document over either is a typed error and nothing of its batch is ingested.

use tribute_index::{ChunkerConfig, DocId, Document, Error, Index, IndexConfig};

/// A BM25-only index with 8-word chunks and small limits.
fn index(dir: &std::path::Path, max_bytes: usize, max_chunks: usize) -> Index {
    let config = IndexConfig {
        chunker: ChunkerConfig {
            max_tokens: 8,
            overlap_tokens: 0,
        },
        max_document_bytes: max_bytes,
        max_chunks_per_document: max_chunks,
        ..IndexConfig::default()
    };
    Index::open(dir, None, config).expect("opens")
}

/// `sentences` sentences of six words each.
fn text(sentences: usize) -> String {
    (0..sentences)
        .map(|i| format!("Turbine {i} logged a torque spike."))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn documents_over_the_limits_are_refused_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = index(dir.path(), 2_000, 4);
    let small = Document::new("small", text(2));

    // Over the chunk limit: 10 sentences of 6 words in chunks of 8 words ≥ 5 chunks.
    let many = Document::new("many-chunks", text(10));
    match index.add_documents(vec![small.clone(), many], None) {
        Err(Error::DocumentTooLarge {
            id,
            what: "chunks",
            value,
            limit: 4,
            setting: "max_chunks_per_document",
        }) => {
            assert_eq!(id, "many-chunks");
            assert!(value > 4, "{value}");
        }
        other => panic!("expected DocumentTooLarge(chunks), got {other:?}"),
    }
    // Over the byte limit, counted on title + text.
    let mut big = Document::new("big", "x".repeat(1_990));
    big.title = "a title of 20 bytes.".into();
    let err = index
        .add_documents(vec![small.clone(), big], None)
        .expect_err("2,010 bytes > 2,000");
    assert!(
        matches!(
            &err,
            Error::DocumentTooLarge { id, what: "bytes", value: 2_010, limit: 2_000, .. } if id == "big"
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("max_document_bytes"), "{err}");
    // Nothing of either batch was written, also after a reopen.
    assert_eq!(index.document_count(), 0);
    drop(index);
    let mut index = self::index(dir.path(), 2_000, 4);
    assert_eq!(index.document_count(), 0);
    index.verify().expect("consistent");

    // At the limits, documents go in.
    let at_limit = Document::new("at-limit", "y".repeat(2_000));
    let report = index
        .add_documents(vec![small, at_limit], None)
        .expect("within the limits");
    assert_eq!(report.added, 2);
    assert!(index.document(&DocId::new("at-limit")).is_some());
}
