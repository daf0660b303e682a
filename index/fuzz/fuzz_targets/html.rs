//! HTML files (`load_file` on an `.html`, feature `documents`): any bytes, any charset.
//!
//! Properties: no panic; a file that loads gives one valid document whose layout points
//! into its text in order, and chunking it keeps the chunker's promises
//! (`tribute_index_fuzz::check_document`). Errors are typed by construction.

use tribute_index_fuzz::{check_document, load};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(docs) = load("doc.html", data) {
            assert_eq!(docs.len(), 1);
            check_document(&docs[0]);
        }
    });
}
