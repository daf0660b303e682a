//! `.md` and `.txt` files (`load_file`): any bytes.
//!
//! Properties: a file loads exactly when it is UTF-8 with some non-whitespace text (else a
//! typed `NotUtf8` at the right byte, or `InvalidDocument`); the document's text is the
//! file unchanged; plain text has no layout; Markdown sections start at headings in order;
//! chunking keeps the chunker's promises (`tribute_index_fuzz::check_document`).

use tribute_index::Error;
use tribute_index_fuzz::{check_document, load};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let utf8 = std::str::from_utf8(data);
        for name in ["notes.md", "notes.txt"] {
            match (load(name, data), &utf8) {
                (Ok(docs), Ok(text)) => {
                    assert_eq!(docs.len(), 1);
                    let doc = &docs[0];
                    assert_eq!(doc.id.as_str(), "notes");
                    assert_eq!(&doc.text, text, "the text is the file");
                    if name.ends_with(".txt") {
                        assert!(doc.layout.is_empty(), "plain text has no layout");
                    }
                    check_document(doc);
                }
                (Ok(_), Err(e)) => panic!("{name}: loaded although not UTF-8 ({e})"),
                (Err(Error::NotUtf8 { valid_up_to, .. }), Err(e)) => {
                    assert_eq!(valid_up_to, e.valid_up_to());
                }
                (Err(Error::InvalidDocument { .. }), Ok(text)) => {
                    assert!(text.trim().is_empty(), "{name}: refused a non-empty text");
                }
                (Err(e), _) => panic!("{name}: unexpected error {e}"),
            }
        }
    });
}
