//! PDF: text per page with `pdf-extract` (layout-aware spacing over `lopdf`).
//!
//! Pages are joined with a blank line; the layout records where each page's text begins.
//! An encrypted PDF is tried with the empty password (owner-only protection) and refused
//! when it needs a real one; a PDF whose pages have no text at all is refused as having no
//! text layer (OCR is not attempted). `pdf-extract` panics on some malformed files: the
//! panic is caught and reported as an unreadable file. It also follows each page's
//! `/Parent` chain for inherited attributes without noticing a loop (a hang, or a stack
//! overflow that no `catch_unwind` stops): chains are checked before any page is read.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use pdf_extract::{ObjectId, OutputError, PlainTextOutput};

use super::Extracted;
use crate::document::Layout;
use crate::error::{Error, Result};

fn unreadable(path: &Path, reason: impl Into<String>) -> Error {
    Error::UnreadableDocument {
        path: path.to_owned(),
        format: "PDF",
        reason: reason.into(),
    }
}

pub(super) fn extract(path: &Path, bytes: &[u8]) -> Result<Extracted> {
    let pages =
        catch_unwind(AssertUnwindSafe(|| page_texts(path, bytes))).unwrap_or_else(|_| {
            Err(unreadable(
                path,
                "the PDF parser failed on malformed content",
            ))
        })?;
    let mut text = String::new();
    let mut page_starts = Vec::with_capacity(pages.len());
    for page in &pages {
        let page = page.trim();
        if !page.is_empty() && !text.is_empty() {
            text.push_str("\n\n");
        }
        page_starts.push(text.len());
        text.push_str(page);
    }
    if text.trim().is_empty() {
        return Err(Error::NoTextLayer {
            path: path.to_owned(),
            pages: pages.len(),
        });
    }
    Ok(Extracted {
        title: None,
        text,
        layout: Layout {
            page_starts,
            sections: Vec::new(),
        },
        pages: Some(pages.len()),
    })
}

/// The text of each page, in page order.
fn page_texts(path: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    let mut doc = pdf_extract::Document::load_mem(bytes).map_err(|e| match e {
        pdf_extract::Error::Decryption(_) => Error::EncryptedDocument {
            path: path.to_owned(),
        },
        other => unreadable(path, other.to_string()),
    })?;
    if doc.is_encrypted() && doc.decrypt("").is_err() {
        return Err(Error::EncryptedDocument {
            path: path.to_owned(),
        });
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(unreadable(path, "no pages"));
    }
    for (&n, &page) in &pages {
        check_parent_chain(&doc, page)
            .map_err(|why| unreadable(path, format!("page {n}: {why}")))?;
    }
    let mut texts = Vec::with_capacity(pages.len());
    for &n in pages.keys() {
        let mut text = String::new();
        pdf_extract::output_doc_page(&doc, &mut PlainTextOutput::new(&mut text), n).map_err(
            |e| match e {
                OutputError::PdfError(pdf_extract::Error::Decryption(_)) => {
                    Error::EncryptedDocument {
                        path: path.to_owned(),
                    }
                }
                other => unreadable(path, format!("page {n}: {other}")),
            },
        )?;
        texts.push(text);
    }
    Ok(texts)
}

/// How many `/Parent` levels above a page are followed; real page trees are a few deep.
const MAX_PAGE_TREE_DEPTH: usize = 256;

/// Refuses a page whose `/Parent` chain loops or runs deeper than [`MAX_PAGE_TREE_DEPTH`]
/// (found by fuzzing: a page that is its own parent hung `pdf-extract`).
fn check_parent_chain(
    doc: &pdf_extract::Document,
    page: ObjectId,
) -> std::result::Result<(), String> {
    let mut seen = HashSet::new();
    let mut current = Some(page);
    while let Some(id) = current {
        if !seen.insert(id) {
            return Err(format!(
                "the page tree loops (object {} {} is its own ancestor)",
                id.0, id.1
            ));
        }
        if seen.len() > MAX_PAGE_TREE_DEPTH {
            return Err(format!(
                "the page tree is deeper than {MAX_PAGE_TREE_DEPTH} levels"
            ));
        }
        current = doc
            .get_dictionary(id)
            .ok()
            .and_then(|d| d.get(b"Parent").ok())
            .and_then(|p| p.as_reference().ok());
    }
    Ok(())
}
