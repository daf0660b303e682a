//! Whole document texts: a local index (format 2) gives back each live document as it was
//! added — text byte for byte, even where chunking trims whitespace — after replaces,
//! deletes and reopening; a format-1 index says it does not keep them.

use serde_json::json;
use tribute_index::{ChunkerConfig, DocId, Document, Error, Index, IndexConfig};

use super::{ALICE, addr};

fn small_chunks() -> IndexConfig {
    IndexConfig {
        chunker: ChunkerConfig {
            max_tokens: 24,
            overlap_tokens: 4,
        },
        ..IndexConfig::default()
    }
}

/// A text that is cut into several chunks, with whitespace the chunker trims.
fn long_text() -> String {
    let mut text = String::from("  \n");
    for i in 0..12 {
        text.push_str(&format!(
            "Sentence number {i} says something about gusts and rotors.\n\n  "
        ));
    }
    text.push('\t');
    text
}

#[test]
fn documents_come_back_as_they_were_added() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = Index::open(dir.path(), None, small_chunks()).expect("open");
    let mut metadata = serde_json::Map::new();
    metadata.insert("source".into(), json!("field-notes"));
    metadata.insert("page".into(), json!(7));
    let mut long = Document::new("long", long_text())
        .with_title("Notes")
        .with_datanet("pilot-notes")
        .with_contributor(addr(ALICE))
        .with_license("CC-BY-4.0");
    long.metadata = metadata.clone();
    let short = Document::new("short", "foo");
    let copy = Document::new("copy", "foo");
    index
        .add_documents(vec![long.clone(), short, copy], None)
        .expect("add");
    assert!(
        index.document(&DocId::from("long")).expect("record").chunks > 2,
        "the test wants a text cut into several chunks"
    );

    let got = index
        .get_document(&DocId::from("long"))
        .expect("get")
        .expect("present");
    assert_eq!(got.text, long.text);
    assert_eq!(got.title, "Notes");
    assert_eq!(got.datanet.as_str(), "pilot-notes");
    assert_eq!(got.contributor, addr(ALICE));
    assert_eq!(got.license.as_deref(), Some("CC-BY-4.0"));
    assert_eq!(got.metadata, metadata);
    // An exact duplicate (not indexed again) still has its text.
    let copy = index
        .get_document(&DocId::from("copy"))
        .expect("get")
        .expect("present");
    assert_eq!(copy.text, "foo");
    assert_eq!(index.get_document(&DocId::from("nope")).expect("get"), None);

    // Replaced, deleted, then all of it again after reopening.
    index
        .add_documents(vec![Document::new("short", "bar baz")], None)
        .expect("replace");
    assert!(index.delete(&DocId::from("copy")).expect("delete"));
    drop(index);
    let index = Index::open(dir.path(), None, small_chunks()).expect("reopen");
    let text = |id: &str| index.document_text(&DocId::from(id)).expect("text");
    assert_eq!(text("long").as_deref(), Some(long.text.as_str()));
    assert_eq!(text("short").as_deref(), Some("bar baz"));
    assert_eq!(text("copy"), None);
}

#[test]
fn a_format_1_index_says_it_keeps_no_texts() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Index::open(dir.path(), None, IndexConfig::default()).expect("create"));
    // The index as a build before format 2 would have created it.
    let meta_path = dir.path().join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).expect("meta")).expect("json");
    assert_eq!(meta["format"], 2);
    meta["format"] = json!(1);
    std::fs::write(&meta_path, serde_json::to_vec(&meta).expect("json")).expect("write");

    let mut index = Index::open(dir.path(), None, IndexConfig::default()).expect("open v1");
    index
        .add_documents(vec![Document::new("a", "Some text.")], None)
        .expect("add");
    assert!(index.document(&DocId::from("a")).is_some());
    let err = index.get_document(&DocId::from("a")).unwrap_err();
    assert!(matches!(err, Error::TextNotKept { .. }), "{err}");
    // No `text` line went into the log, which a format-1 build could not read.
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).expect("log");
    assert!(!log.contains(r#""op":"text""#), "{log}");
    assert_eq!(index.get_document(&DocId::from("b")).expect("none"), None);
}

/// Found by the `jsonl` fuzz target: without serde_json's `float_roundtrip`, a metadata
/// number could come back one ulp off after a JSON round trip (`1.1111111111111112e+24`
/// read back as `…111e+24`), so stored metadata drifted from what the file said.
#[test]
fn metadata_numbers_survive_json_and_storage_exactly() {
    let metadata: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        r#"{"k": 1.1111111111111112e+24, "t": 1.1111111111111113e+23, "f": 1e49, "e": 0.1}"#,
    )
    .expect("metadata");
    let mut doc = Document::new("floats", "x y");
    doc.metadata = metadata.clone();
    let json = serde_json::to_string(&doc).expect("serialise");
    let back: Document = serde_json::from_str(&json).expect("read back");
    assert_eq!(back, doc, "JSON round trip changed the document");
    assert_eq!(
        metadata["k"].as_f64(),
        Some(1.1111111111111112e24),
        "parsed to the nearest double"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = Index::open(dir.path(), None, small_chunks()).expect("open");
    index.add_documents(vec![doc.clone()], None).expect("add");
    drop(index);
    let index = Index::open(dir.path(), None, small_chunks()).expect("reopen");
    let got = index
        .get_document(&DocId::from("floats"))
        .expect("get")
        .expect("present");
    assert_eq!(got.metadata, metadata);
}
