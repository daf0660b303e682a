//! PDF files (`load_file` on a `.pdf`, feature `documents`): any bytes. `pdf-extract`
//! panics on some malformed files and the loader catches that by design, so this target
//! keeps the default panic hook out (`fuzz_nohook!`): a panic that escapes the loader still
//! aborts.
//!
//! Properties: no panic; a file that loads gives one valid document whose layout points
//! into its text in order, and chunking it keeps the chunker's promises
//! (`tribute_index_fuzz::check_document`). Errors are typed by construction.

use tribute_index_fuzz::{check_document, load};

fn main() {
    afl::fuzz_nohook!(|data: &[u8]| {
        if let Ok(docs) = load("doc.pdf", data) {
            assert_eq!(docs.len(), 1);
            check_document(&docs[0]);
        }
    });
}
