//! What the index fuzz targets share: a scratch file for the loaders (they read paths) and
//! the properties every loaded document and every chunking must have.

use std::path::PathBuf;
use std::sync::OnceLock;

use tribute_index::chunker::{self, ChunkerConfig, Span, TokenCounter, WordCounter};
use tribute_index::{Document, LoadOptions};

/// Writes `bytes` to the scratch file `name` and returns its path. The folder is
/// `$TRIBUTE_FUZZ_SCRATCH` (set per target by `core/fuzz/run.sh`), else one per fuzzer
/// instance under the temporary directory: AFL's children share their parent, the fork server.
pub fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::var_os("TRIBUTE_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "tribute-fuzz-{}",
                    std::os::unix::process::parent_id()
                ))
            });
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        dir
    });
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the scratch file");
    path
}

/// Loads `bytes` as the file `name` (its extension picks the format).
pub fn load(name: &str, bytes: &[u8]) -> tribute_index::Result<Vec<Document>> {
    tribute_index::load_file(&scratch(name, bytes), &LoadOptions::default())
}

/// Checks a document a loader returned: it validates, its layout points into its text in
/// order, and chunking it and locating the chunks keeps every property of [`check_spans`].
pub fn check_document(doc: &Document) {
    doc.validate().expect("a loaded document validates");
    let text = &doc.text;
    let layout = &doc.layout;
    assert!(
        layout.page_starts.windows(2).all(|w| w[0] <= w[1]),
        "page starts out of order: {:?}",
        layout.page_starts
    );
    for &p in &layout.page_starts {
        assert!(
            p <= text.len() && text.is_char_boundary(p),
            "page start {p}"
        );
    }
    assert!(
        layout.sections.windows(2).all(|w| w[0].start < w[1].start),
        "sections out of order"
    );
    for s in &layout.sections {
        assert!(
            s.start < text.len() && text.is_char_boundary(s.start),
            "section start {} in a text of {} bytes",
            s.start,
            text.len()
        );
        assert!(
            s.headings.last().is_some_and(|h| !h.trim().is_empty()),
            "a section without its heading: {:?}",
            s.headings
        );
    }
    let config = ChunkerConfig::default().text_budget(&doc.title, &WordCounter);
    let spans = doc.chunk_spans(&config, &WordCounter);
    check_spans(text, &layout.boundaries(), &config, &WordCounter, &spans);
    let locators = doc.locate(&spans);
    assert_eq!(locators.len(), spans.len());
    for (l, s) in locators.iter().zip(&spans) {
        assert!(l.char_start <= l.char_end, "{l:?}");
        assert_eq!(
            l.char_end - l.char_start,
            text[s.start..s.end].chars().count()
        );
        assert!(l.pages.windows(2).all(|w| w[0] < w[1]), "{l:?}");
    }
}

/// Checks what the chunker promises for `spans` of `text` cut at `boundaries`: spans are
/// non-empty, on character boundaries, trimmed, in text order and within the token budget;
/// together they cover every non-whitespace character (nothing is lost); none crosses a
/// section boundary; and chunking is deterministic.
pub fn check_spans(
    text: &str,
    boundaries: &[usize],
    config: &ChunkerConfig,
    counter: &dyn TokenCounter,
    spans: &[Span],
) {
    let budget = config.max_tokens.max(1);
    let mut covered = vec![false; text.len()];
    let mut last = (0, 0);
    for s in spans {
        assert!(
            s.start < s.end && s.end <= text.len(),
            "span {s:?} of a {}-byte text",
            text.len()
        );
        assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
        let piece = &text[s.start..s.end];
        assert_eq!(piece, piece.trim(), "span {s:?} is not trimmed");
        assert!(
            s.start >= last.0 && s.end >= last.1,
            "span {s:?} after {last:?}"
        );
        assert!(s.tokens <= budget, "span {s:?} over the budget {budget}");
        last = (s.start, s.end);
        covered[s.start..s.end].iter_mut().for_each(|c| *c = true);
        for &b in boundaries {
            let cuts = b > 0 && b < text.len() && text.is_char_boundary(b);
            assert!(
                !(cuts && s.start < b && b < s.end),
                "span {s:?} crosses the section boundary {b}"
            );
        }
    }
    if let Some((i, c)) = text
        .char_indices()
        .find(|&(i, c)| !c.is_whitespace() && !covered[i])
    {
        panic!("character {c:?} at byte {i} is in no chunk");
    }
    assert_eq!(
        spans,
        chunker::chunk_sections(text, boundaries, config, counter).as_slice(),
        "chunking is not deterministic"
    );
}

/// A token counter that counts every character: unlike [`WordCounter`] it makes each
/// punctuation mark and space a token, so sentences overflow the budget often.
pub struct CharCounter;

impl TokenCounter for CharCounter {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        text.char_indices()
            .map(|(i, c)| (i, i + c.len_utf8()))
            .collect()
    }
}
