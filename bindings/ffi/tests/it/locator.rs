//! Locators through the FFI surface: where hits and citations point in their documents.

use tribute_ffi::{Engine, EngineOptions, Generator, Index, Locator, SearchMode};

/// A Markdown file whose accent makes character offsets differ from byte offsets.
const NOTES: &str = "# Zéphyr notes\n\nZephyr keeps a knowledge base of attributed documents.\n\n\
    ## Ingest\n\nDocuments are cut into chunks of whole sentences.\n\n\
    ### Formats\n\nPDF, HTML, DOCX, Markdown and plain text are read.\n\n\
    ## Search\n\nHybrid search fuses BM25 and dense retrieval.\n";

#[test]
fn markdown_hits_and_citations_carry_locators() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notes = dir.path().join("notes.md");
    std::fs::write(&notes, NOTES).expect("write");
    let kb = Index::open(dir.path().join("kb").display().to_string(), None)
        .expect("MiniLM is required; run scripts/setup.sh");
    kb.add_files(vec![notes.display().to_string()], None, None, None)
        .expect("ingest");

    let hit = kb
        .search(
            "PDF DOCX plain text".into(),
            1,
            Some(SearchMode::Bm25),
            None,
        )
        .expect("search")
        .remove(0);
    assert!(hit.text.starts_with("### Formats"), "{:?}", hit.text);
    let start = NOTES[..NOTES.find("### Formats").expect("in the notes")]
        .chars()
        .count() as u64;
    assert_eq!(
        hit.locator,
        Some(Locator {
            pages: vec![],
            headings: vec!["Zéphyr notes".into(), "Ingest".into(), "Formats".into()],
            char_start: start,
            char_end: start + hit.text.chars().count() as u64,
        })
    );
    assert_eq!(
        hit.start,
        start + 1,
        "bytes, not characters: é is two bytes"
    );

    let generator =
        Generator::load(None, "cpu".into(), 1).expect("SmolLM2 is required; run scripts/setup.sh");
    let engine = Engine::new(kb, EngineOptions::default(), Some(generator), None).expect("engine");
    let r = engine
        .retrieve(
            "Which formats are read: PDF, HTML, DOCX?".into(),
            Some(2),
            None,
            false,
        )
        .expect("retrieve");
    assert!(!r.citations.is_empty());
    for c in &r.citations {
        let h = r
            .hits
            .iter()
            .find(|h| h.chunk_id == c.chunk_id)
            .expect("a cited hit");
        assert!(c.locator.is_some());
        assert_eq!(c.locator, h.locator, "{}", c.chunk_id);
    }
    assert!(r.citations.iter().any(|c| {
        c.locator
            .as_ref()
            .is_some_and(|l| l.headings.last().is_some_and(|h| h == "Formats"))
    }));
    engine.release();
}
