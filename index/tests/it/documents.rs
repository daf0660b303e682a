//! Loading real files (fixtures written by fpdf2, python-docx and by hand, see
//! `tests/fixtures/documents/make_fixtures.py`) and the locators their chunks get.

use std::path::{Path, PathBuf};

use tribute_index::document::load_file;
use tribute_index::{
    ChunkerConfig, Document, Error, Index, IndexConfig, LoadOptions, Locator, Mode, load_paths,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/documents")
        .join(name)
}

fn load_one(name: &str) -> Document {
    let mut docs = load_file(&fixture(name), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(docs.len(), 1, "{name}");
    docs.remove(0)
}

/// A BM25-only index with small chunks, so each fixture is cut into several.
fn small_chunk_index(dir: &Path) -> Index {
    let config = IndexConfig {
        chunker: ChunkerConfig {
            max_tokens: 24,
            overlap_tokens: 0,
        },
        ..IndexConfig::default()
    };
    Index::open(dir, None, config).expect("opens")
}

/// Every chunk's character span picks its text out of the document's extracted text.
fn assert_spans_match(doc: &Document, index: &Index) {
    let chars: Vec<char> = doc.text.chars().collect();
    let chunks: Vec<_> = index
        .chunks()
        .expect("chunks")
        .into_iter()
        .filter(|c| c.doc_id == doc.id)
        .collect();
    assert!(!chunks.is_empty(), "{}", doc.id);
    for c in chunks {
        let l = c.locator.as_ref().expect("every new chunk has a locator");
        let by_chars: String = chars[l.char_start..l.char_end].iter().collect();
        assert_eq!(by_chars, c.text, "{}", c.chunk_id);
        assert_eq!(&doc.text[c.start..c.end], c.text, "{}", c.chunk_id);
    }
}

/// The locator of the best BM25 hit for `query`.
fn locate(index: &Index, query: &str) -> (String, Locator) {
    let hits = index
        .search(query)
        .mode(Mode::Bm25)
        .k(1)
        .execute()
        .expect("search");
    let h = hits
        .first()
        .unwrap_or_else(|| panic!("no hit for {query:?}"));
    (h.text.clone(), h.locator.clone().expect("a locator"))
}

#[test]
fn markdown_chunks_carry_heading_paths_and_spans() {
    let doc = load_one("notes.md");
    assert_eq!(doc.title, "Zephyr notes");
    let paths: Vec<Vec<String>> = doc
        .layout
        .sections
        .iter()
        .map(|s| s.headings.clone())
        .collect();
    assert_eq!(
        paths,
        [
            vec!["Zephyr notes"],
            vec!["Zephyr notes", "Ingest"],
            vec!["Zephyr notes", "Ingest", "Formats"],
            vec!["Zephyr notes", "Search"],
        ]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut index = small_chunk_index(dir.path());
    index
        .add_documents(vec![doc.clone()], None)
        .expect("ingest");
    let (text, l) = locate(&index, "PDF DOCX plain text");
    assert_eq!(
        text,
        "### Formats\n\nPDF, HTML, DOCX, Markdown and plain text are read."
    );
    assert_eq!(l.headings, ["Zephyr notes", "Ingest", "Formats"]);
    assert!(l.pages.is_empty());
    let start = doc.text.find("### Formats").expect("in the file");
    assert_eq!((l.char_start, l.char_end), (start, start + text.len()));
    // No chunk straddles a heading.
    for c in index.chunks().expect("chunks") {
        for s in &doc.layout.sections {
            assert!(!(c.start < s.start && s.start < c.end), "{:?}", c.text);
        }
    }
    assert_spans_match(&doc, &index);
}

#[cfg(feature = "documents")]
mod rich {
    use super::*;

    #[test]
    fn pdf_text_comes_per_page() {
        let doc = load_one("handbook.pdf");
        assert_eq!(doc.id.as_str(), "handbook");
        assert_eq!(doc.metadata["pages"], 3);
        assert_eq!(doc.metadata["format"], "PDF");
        assert_eq!(doc.layout.page_starts.len(), 3);
        let page = |n: usize| {
            let end = doc
                .layout
                .page_starts
                .get(n)
                .copied()
                .unwrap_or(doc.text.len());
            doc.text[doc.layout.page_starts[n - 1]..end]
                .trim()
                .to_owned()
        };
        assert!(page(1).starts_with("Zephyr Handbook"), "{}", page(1));
        assert!(page(2).starts_with("Adapters"), "{}", page(2));
        assert!(page(3).starts_with("Receipts"), "{}", page(3));
        assert!(page(3).contains("signed receipt"), "{}", page(3));

        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = small_chunk_index(dir.path());
        index
            .add_documents(vec![doc.clone()], None)
            .expect("ingest");
        let chunks: Vec<(String, Vec<u32>)> = index
            .chunks()
            .expect("chunks")
            .into_iter()
            .map(|c| (c.text, c.locator.expect("locator").pages))
            .collect();
        // pdf-extract keeps the PDF's line breaks; a chunk may run over a page break.
        let expected: [(&str, &[u32]); 4] = [
            (
                "Zephyr Handbook\nThe Zephyr SDK ships a hybrid retriever. It combines BM25 with dense vectors and fuses both\nranked lists.",
                &[1],
            ),
            (
                "Adapters\nAdapters are small LoRA weights. Each adapter is loaded on demand and merged with the base",
                &[2],
            ),
            (
                "model at run time.\n\nReceipts\nEvery answer carries a signed receipt. The receipt names the contributors whose chunks supported",
                &[2, 3],
            ),
            ("the answer.", &[3]),
        ];
        let expected: Vec<(String, Vec<u32>)> = expected
            .iter()
            .map(|(t, p)| (t.to_string(), p.to_vec()))
            .collect();
        assert_eq!(chunks, expected);
        assert_eq!(locate(&index, "hybrid retriever BM25").1.pages, [1]);
        assert_eq!(locate(&index, "LoRA weights adapter").1.pages, [2]);
        assert_eq!(
            locate(&index, "signed receipt contributors").1.pages,
            [2, 3]
        );
        assert_spans_match(&doc, &index);
        // One big chunk spans every page.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut whole = Index::open(dir.path(), None, IndexConfig::default()).expect("opens");
        whole.add_documents(vec![doc], None).expect("ingest");
        assert_eq!(locate(&whole, "receipt").1.pages, [1, 2, 3]);
    }

    #[test]
    fn docx_paragraphs_and_heading_styles() {
        let doc = load_one("guide.docx");
        assert_eq!(doc.title, "Zephyr Guide");
        assert_eq!(
            doc.text,
            "Zephyr Guide\n\nThis guide explains how to install and use the Zephyr SDK.\n\n\
             Installation\n\nInstall the SDK with the package manager of your platform.\n\n\
             On Linux\n\nOn Linux, unpack the archive and add its bin folder to the PATH.\n\n\
             Usage\n\nOpen a knowledge base, ingest documents, then ask questions."
        );
        let sections: Vec<(usize, Vec<String>)> = doc
            .layout
            .sections
            .iter()
            .map(|s| (s.start, s.headings.clone()))
            .collect();
        let at = |s: &str| doc.text.find(s).expect("in the text");
        assert_eq!(
            sections,
            [
                (at("Installation"), vec!["Installation".to_owned()]),
                (
                    at("On Linux\n"),
                    vec!["Installation".into(), "On Linux".into()]
                ),
                (at("Usage"), vec!["Usage".into()]),
            ]
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = small_chunk_index(dir.path());
        index
            .add_documents(vec![doc.clone()], None)
            .expect("ingest");
        let (text, l) = locate(&index, "unpack archive bin folder");
        assert_eq!(
            text,
            "On Linux\n\nOn Linux, unpack the archive and add its bin folder to the PATH."
        );
        assert_eq!(l.headings, ["Installation", "On Linux"]);
        assert_eq!(
            (l.char_start, l.char_end),
            (at("On Linux\n"), at("On Linux\n") + text.len())
        );
        assert_eq!(
            locate(&index, "guide explains").1.headings,
            Vec::<String>::new()
        );
        assert_eq!(
            locate(&index, "knowledge base questions").1.headings,
            ["Usage"]
        );
        assert_spans_match(&doc, &index);
    }

    #[test]
    fn html_main_content_charset_and_headings() {
        let doc = load_one("release-notes.html");
        assert_eq!(doc.title, "Zephyr release notes");
        assert_eq!(
            doc.text,
            "Release notes\n\nVersion 2.0 of the Zephyr SDK is out. It brings a new café-grade retriever.\n\n\
             Retrieval\n\nHybrid search now fuses BM25 and dense scores with reciprocal rank fusion.\n\n\
             Filters\n\nFilter by datanet.\n\nFilter by contributor.\n\n\
             Receipts\n\nReceipts are signed with EIP-712 and can be settled on chain."
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = small_chunk_index(dir.path());
        index
            .add_documents(vec![doc.clone()], None)
            .expect("ingest");
        let (text, l) = locate(&index, "filter contributor datanet");
        assert_eq!(
            text,
            "Filters\n\nFilter by datanet.\n\nFilter by contributor."
        );
        assert_eq!(l.headings, ["Release notes", "Retrieval", "Filters"]);
        // "café" holds a two-byte character: the character span is one shorter than bytes.
        let byte_start = doc.text.find("Filters").expect("in the text");
        assert_eq!(l.char_start, byte_start - 1);
        assert_eq!(l.char_end - l.char_start, text.chars().count());
        assert_eq!(
            locate(&index, "EIP-712 settled").1.headings,
            ["Release notes", "Receipts"]
        );
        assert_spans_match(&doc, &index);
    }

    /// Deep nesting made html5ever's tree builder quadratic (20,000 `<div>`s: 14 s) and the
    /// text walker recursed per level (a stack overflow further down): refused, quickly.
    #[test]
    fn deeply_nested_html_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let page = |name: &str, html: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, html).expect("write");
            load_file(&path, &LoadOptions::default())
        };
        for (name, open) in [("divs.html", "<div>"), ("templates.html", "<template>")] {
            let err = page(name, format!("<html><body>{}deep", open.repeat(100_000)))
                .expect_err("100,000 nested elements");
            assert!(
                matches!(
                    err,
                    Error::NestedTooDeep {
                        format: "HTML",
                        limit: 512,
                        ..
                    }
                ),
                "{name}: {err}"
            );
        }
        // Below the limit (html, body and 500 <div>s) the page loads.
        let docs = page(
            "deep.html",
            format!("<html><body>{}deep", "<div>".repeat(500)),
        )
        .expect("500 nested elements load");
        assert_eq!(docs[0].text, "deep");
    }

    #[test]
    fn bad_documents_are_typed_errors() {
        let err = |name: &str| load_file(&fixture(name), &LoadOptions::default()).expect_err(name);
        assert!(
            matches!(err("encrypted.pdf"), Error::EncryptedDocument { .. }),
            "{}",
            err("encrypted.pdf")
        );
        assert!(
            matches!(
                err("corrupt.pdf"),
                Error::UnreadableDocument { format: "PDF", .. }
            ),
            "{}",
            err("corrupt.pdf")
        );
        // Found by fuzzing: a page that is its own /Parent hung pdf-extract (and overflowed
        // the stack in debug builds); the page tree is checked first.
        let looped = err("page-parent-loop.pdf");
        assert!(
            matches!(&looped, Error::UnreadableDocument { format: "PDF", reason, .. } if reason.contains("page tree loops")),
            "{looped}"
        );
        let scan = err("scanned.pdf");
        assert!(
            matches!(scan, Error::NoTextLayer { pages: 1, .. }),
            "{scan}"
        );
        assert!(scan.to_string().contains("OCR is not attempted"), "{scan}");
        let renamed = err("renamed-zip.docx");
        assert!(
            matches!(&renamed, Error::UnreadableDocument { format: "DOCX", reason, .. } if reason.contains("without word/document.xml")),
            "{renamed}"
        );
        let not_zip = err("not-a-zip.docx");
        assert!(
            matches!(&not_zip, Error::UnreadableDocument { format: "DOCX", reason, .. } if reason.contains("not a zip")),
            "{not_zip}"
        );
        let unknown = err("unknown-charset.html");
        assert!(
            matches!(&unknown, Error::UnknownEncoding { encoding, .. } if encoding.contains("x-klingon-7")),
            "{unknown}"
        );
        // Undeclared and not UTF-8.
        let dir = tempfile::tempdir().expect("tempdir");
        let latin = dir.path().join("latin.html");
        std::fs::write(&latin, b"<p>caf\xe9</p>").expect("write");
        assert!(matches!(
            load_file(&latin, &LoadOptions::default()),
            Err(Error::UnknownEncoding { .. })
        ));
        // A UTF-16 page with a byte-order mark decodes.
        let utf16 = dir.path().join("wide.html");
        let mut bytes = vec![0xff, 0xfe];
        for u in "<p>Wide café</p>".encode_utf16() {
            bytes.extend(u.to_le_bytes());
        }
        std::fs::write(&utf16, bytes).expect("write");
        let docs = load_file(&utf16, &LoadOptions::default()).expect("UTF-16 with BOM");
        assert_eq!(docs[0].text, "Wide café");
    }

    /// A folder with good files, bad ones, an unknown type, a dangling symlink and a
    /// symlink loop: the good ones load whole, everything else is listed with a reason,
    /// and a bad file named explicitly stops the ingest before anything is written.
    #[test]
    fn folders_skip_and_report_what_they_cannot_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let docs = dir.path().join("docs");
        std::fs::create_dir_all(docs.join("sub")).expect("mkdir");
        for name in [
            "handbook.pdf",
            "guide.docx",
            "scanned.pdf",
            "encrypted.pdf",
            "notes.md",
        ] {
            std::fs::copy(fixture(name), docs.join(name)).expect("copy");
        }
        std::fs::copy(
            fixture("release-notes.html"),
            docs.join("sub/release-notes.html"),
        )
        .expect("copy");
        std::fs::write(docs.join("sheet.xlsx"), b"PK").expect("write");
        std::fs::write(docs.join(".hidden.md"), b"# hidden").expect("write");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(docs.join("gone.md"), docs.join("dangling.md"))
                .expect("symlink");
            std::os::unix::fs::symlink(&docs, docs.join("sub/loop")).expect("symlink");
        }
        let loaded =
            load_paths(std::slice::from_ref(&docs), &LoadOptions::default()).expect("loads");
        let ids: Vec<&str> = loaded.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["guide", "handbook", "notes", "release-notes"]);
        let skipped: Vec<(String, &str)> = loaded
            .skipped
            .iter()
            .map(|s| {
                let name = s
                    .path
                    .strip_prefix(&docs)
                    .unwrap_or(&s.path)
                    .display()
                    .to_string();
                (name, s.reason.as_str())
            })
            .collect();
        let reason = |name: &str| {
            skipped
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, r)| *r)
                .unwrap_or_else(|| panic!("{name} not reported: {skipped:?}"))
        };
        assert!(reason("encrypted.pdf").contains("encrypted"));
        assert!(reason("scanned.pdf").contains("text layer"));
        assert!(reason("sheet.xlsx").contains("unsupported file type"));
        #[cfg(unix)]
        {
            assert!(!reason("dangling.md").is_empty());
            assert!(
                reason("sub/loop").contains("loop"),
                "{}",
                reason("sub/loop")
            );
        }
        assert!(
            skipped.iter().all(|(n, _)| !n.contains("hidden")),
            "{skipped:?}"
        );

        // Through the index: the report lists the skipped files; the good files land whole.
        let kb = dir.path().join("kb");
        let mut index = Index::open(&kb, None, IndexConfig::default()).expect("opens");
        let report = index
            .ingest_paths(std::slice::from_ref(&docs), &LoadOptions::default(), None)
            .expect("ingest");
        assert_eq!(report.added, 4);
        assert_eq!(report.skipped, loaded.skipped);
        let json = serde_json::to_value(&report).expect("serialises");
        assert!(
            json["skipped"]
                .as_array()
                .is_some_and(|s| s.len() == skipped.len())
        );

        // A bad file named explicitly: an error, and nothing of the batch is added.
        let fresh = dir.path().join("kb2");
        let mut index = Index::open(&fresh, None, IndexConfig::default()).expect("opens");
        let err = index
            .ingest_paths(
                &[docs.join("guide.docx"), docs.join("encrypted.pdf")],
                &LoadOptions::default(),
                None,
            )
            .expect_err("named bad file");
        assert!(matches!(err, Error::EncryptedDocument { .. }), "{err}");
        assert_eq!(index.document_count(), 0);

        // Globs.
        let pattern = docs.join("**").join("*.html");
        let loaded = load_paths(&[pattern], &LoadOptions::default()).expect("glob");
        assert_eq!(loaded.documents.len(), 1);
        let nothing = docs.join("*.rtf");
        assert!(matches!(
            load_paths(&[nothing], &LoadOptions::default()),
            Err(Error::NoMatch { .. })
        ));
    }
}

/// A file over the size limit is refused from its size alone: a sparse 500 MB file
/// (no disk used) is not read.
#[test]
fn oversized_files_are_refused_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.txt");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(500 << 20).expect("sparse file");
    let started = std::time::Instant::now();
    let err = load_file(&big, &LoadOptions::default()).expect_err("too large");
    assert!(
        matches!(err, Error::FileTooLarge { bytes, limit, .. } if bytes == 500 << 20 && limit == 256 << 20),
        "{err}"
    );
    assert!(started.elapsed().as_secs_f64() < 1.0, "the file was read");
    let small_limit = LoadOptions {
        max_file_bytes: 8,
        ..LoadOptions::default()
    };
    let md = dir.path().join("a.md");
    std::fs::write(&md, "# Nine bytes plus").expect("write");
    assert!(matches!(
        load_file(&md, &small_limit),
        Err(Error::FileTooLarge { limit: 8, .. })
    ));
    // In a folder it is skipped and reported; the rest loads.
    std::fs::write(dir.path().join("b.txt"), "tiny").expect("write");
    let loaded = load_paths(&[dir.path().to_owned()], &small_limit).expect("loads");
    assert_eq!(loaded.documents.len(), 1);
    assert_eq!(loaded.skipped.len(), 2);
}

/// Locators survive a reopen of a local index.
#[test]
fn locators_are_stored() {
    let doc = load_one("notes.md");
    let dir = tempfile::tempdir().expect("tempdir");
    let before = {
        let mut index = small_chunk_index(dir.path());
        index.add_documents(vec![doc], None).expect("ingest");
        index.chunks().expect("chunks")
    };
    let index = small_chunk_index(dir.path());
    let after = index.chunks().expect("chunks");
    assert_eq!(before, after);
    assert!(after.iter().all(|c| c.locator.is_some()));
}

/// Load throughput of the fixtures, for docs/RETRIEVAL.md (not a pass/fail test):
/// `cargo test -p tribute-index --features documents --test it documents::throughput -- --ignored --nocapture`.
/// Set `TRIBUTE_THROUGHPUT_EMBED=ROUNDS` to also time a full ingest with the default
/// embedder (MiniLM: chunk, embed, BM25 and HNSW) over that many copies of each file.
#[cfg(feature = "documents")]
#[test]
#[ignore = "prints load throughput; run by hand"]
fn throughput() {
    let embed_rounds: Option<usize> = std::env::var("TRIBUTE_THROUGHPUT_EMBED")
        .ok()
        .and_then(|v| v.parse().ok());
    for (name, pages_per_file, rounds) in [
        ("handbook.pdf", 3usize, 300usize),
        ("release-notes.html", 1, 2000),
        ("guide.docx", 1, 2000),
    ] {
        let path = fixture(name);
        // Distinct ids and texts, so that every copy is indexed (not taken as a duplicate).
        let copies = |rounds: usize| {
            let started = std::time::Instant::now();
            let mut docs = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                docs.extend(load_file(&path, &LoadOptions::default()).expect("loads"));
            }
            let load = started.elapsed().as_secs_f64();
            for (i, d) in docs.iter_mut().enumerate() {
                d.id = format!("{name}-{i}").into();
                d.text.push_str(&format!(" copy{i}"));
            }
            (docs, load)
        };
        let (docs, load) = copies(rounds);
        // Load + chunk + BM25 index (no embedding).
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = Index::open(dir.path(), None, IndexConfig::default()).expect("opens");
        let started = std::time::Instant::now();
        index.add_documents(docs, None).expect("ingest");
        let ingest = started.elapsed().as_secs_f64();
        let pages = (rounds * pages_per_file) as f64;
        println!(
            "{name}: load {:.0} pages/s ({:.2} ms/file); load + chunk + BM25 index {:.0} pages/s",
            pages / load,
            1000.0 * load / rounds as f64,
            pages / (load + ingest)
        );
        let Some(rounds) = embed_rounds else {
            continue;
        };
        // Load + chunk + embed + BM25 + HNSW.
        let (docs, load) = copies(rounds);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut index = Index::open(dir.path(), Some(crate::embedder()), IndexConfig::default())
            .expect("opens");
        let started = std::time::Instant::now();
        index.add_documents(docs, None).expect("ingest");
        let ingest = started.elapsed().as_secs_f64();
        println!(
            "{name}: load + chunk + embed + index {:.1} pages/s ({} files, {} chunks, {:.1} s)",
            (rounds * pages_per_file) as f64 / (load + ingest),
            rounds,
            index.chunk_count(),
            load + ingest
        );
    }
}
