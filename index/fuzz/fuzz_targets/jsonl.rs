//! Document JSONL files (`load_file` on a `.jsonl`): BEIR and Tribute lines, any bytes.
//!
//! Properties: every non-blank line becomes exactly one valid document (or the file is
//! refused with a typed error); `skip_empty` changes nothing for a file that loads without
//! it; a document survives a JSON round trip unchanged; chunking it keeps the chunker's
//! promises (`tribute_index_fuzz::check_document`).

use tribute_index::{Document, LoadOptions, load_file};
use tribute_index_fuzz::{check_document, scratch};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let path = scratch("corpus.jsonl", data);
        let strict = load_file(&path, &LoadOptions::default());
        let lenient = load_file(
            &path,
            &LoadOptions {
                skip_empty: true,
                ..LoadOptions::default()
            },
        );
        let Ok(docs) = strict else {
            return;
        };
        let lines = data
            .split(|&b| b == b'\n')
            .filter(|l| std::str::from_utf8(l).is_ok_and(|l| !l.trim().is_empty()))
            .count();
        assert_eq!(docs.len(), lines, "one document per non-blank line");
        assert_eq!(
            lenient.as_ref().ok(),
            Some(&docs),
            "skip_empty changed a file that loads without it"
        );
        let mut ids = std::collections::HashSet::new();
        for doc in &docs {
            assert!(ids.insert(doc.id.clone()), "duplicate id {}", doc.id);
            let json = serde_json::to_string(doc).expect("a document serialises");
            let back: Document = serde_json::from_str(&json).expect("and reads back");
            assert_eq!(&back, doc, "JSON round trip changed the document");
            check_document(doc);
        }
    });
}
