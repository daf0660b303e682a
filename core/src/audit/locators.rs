//! Comparing the locators a record binds with the knowledge base's current ones.
//!
//! A version-2 attribution record stores, per source, where its chunk lay in its document
//! (pages, heading path, character span) when the answer was given. The audit fetches the
//! chunks by content hash; the same text may since have moved (the document was edited
//! around it, or re-ingested from another format). Such a move does not change the
//! attribution or the payouts — the text the model saw is the same — so it leaves the
//! [`Verdict`](super::Verdict) alone, but the place a reader was pointed to no longer
//! holds: each one is reported as a [`LocatorChange`].

use std::collections::HashMap;
use std::fmt;

use alloy_primitives::B256;
use serde::Serialize;
use tribute_attribution::record::{RecordedLocator, RecordedSource};
use tribute_index::{Chunk, Locator};

/// A cited chunk whose place in its document differs between the record and the
/// knowledge base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocatorChange {
    /// The source's position in the prompt (0-based; its marker is `[source + 1]`).
    pub source: usize,
    /// The chunk id the record names.
    pub chunk_id: String,
    /// The chunk's content hash (the text is unchanged).
    pub content_hash: B256,
    /// The locator in the record (`None`: the chunk was indexed without one).
    pub recorded: Option<RecordedLocator>,
    /// The knowledge base's chunk with this text: the one with the recorded id when it
    /// still exists, else the first in ingest order.
    pub current_chunk_id: String,
    /// Its locator now (`None`: indexed without one).
    pub current: Option<RecordedLocator>,
}

impl fmt::Display for LocatorChange {
    /// `[2] doc#0: recorded p. 2 · chars 0–120, now p. 3 · chars 40–160 (doc#1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |l: &Option<RecordedLocator>| {
            l.as_ref()
                .map_or_else(|| "no locator".to_owned(), |l| as_locator(l).to_string())
        };
        write!(
            f,
            "[{}] {}: recorded {}, now {}",
            self.source + 1,
            self.chunk_id,
            show(&self.recorded),
            show(&self.current)
        )?;
        if self.current_chunk_id != self.chunk_id {
            write!(f, " ({})", self.current_chunk_id)?;
        }
        Ok(())
    }
}

/// A knowledge-base locator as a record stores it.
pub(crate) fn recorded(l: &Locator) -> RecordedLocator {
    RecordedLocator {
        pages: l.pages.clone(),
        headings: l.headings.clone(),
        char_start: l.char_start,
        char_end: l.char_end,
    }
}

fn as_locator(l: &RecordedLocator) -> Locator {
    Locator {
        pages: l.pages.clone(),
        headings: l.headings.clone(),
        char_start: l.char_start,
        char_end: l.char_end,
    }
}

/// The sources of a record of format `version` whose chunk text is in `chunks` but at no
/// chunk with the recorded locator, in prompt order. Version-1 records define no locators:
/// nothing to compare. Sources whose text is gone are not listed (the audit reports those
/// as missing chunks).
pub(crate) fn locator_changes(
    version: u16,
    sources: &[RecordedSource],
    chunks: &[Chunk],
) -> Vec<LocatorChange> {
    if version < 2 {
        return Vec::new();
    }
    let mut by_hash: HashMap<B256, Vec<&Chunk>> = HashMap::new();
    for c in chunks {
        by_hash.entry(c.content_hash.as_b256()).or_default().push(c);
    }
    let mut out = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let Some(found) = by_hash.get(&s.content_hash) else {
            continue;
        };
        // The same text may lie in several documents: it has not moved while any of them
        // still holds it at the recorded place.
        if found
            .iter()
            .any(|c| c.locator.as_ref().map(recorded) == s.locator)
        {
            continue;
        }
        let Some(current) = found
            .iter()
            .find(|c| c.chunk_id.as_str() == s.chunk_id)
            .or_else(|| found.first())
        else {
            continue;
        };
        out.push(LocatorChange {
            source: i,
            chunk_id: s.chunk_id.clone(),
            content_hash: s.content_hash,
            recorded: s.locator.clone(),
            current_chunk_id: current.chunk_id.as_str().to_owned(),
            current: current.locator.as_ref().map(recorded),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use alloy_primitives::Address;
    use tribute_index::{ChunkId, ContentHash, Contributor, DatanetId, DocId};

    use super::*;

    const TEXT: &str = "Zephyr corrects the attitude forty times per second.";

    fn locator(page: u32, start: usize) -> Locator {
        Locator {
            pages: vec![page],
            headings: vec!["Flight".into()],
            char_start: start,
            char_end: start + TEXT.len(),
        }
    }

    fn chunk(doc: &str, text: &str, locator: Option<Locator>) -> Chunk {
        let doc = DocId::new(doc);
        Chunk {
            chunk_id: ChunkId::for_chunk(&doc, 0),
            doc_id: doc,
            title: String::new(),
            text: text.into(),
            start: 0,
            end: text.len(),
            contributor: Contributor::UNKNOWN,
            datanet: DatanetId::new("d"),
            content_hash: ContentHash::of(text),
            locator,
        }
    }

    fn source(c: &Chunk) -> RecordedSource {
        RecordedSource {
            content_hash: c.content_hash.as_b256(),
            chunk_id: c.chunk_id.as_str().to_owned(),
            title: String::new(),
            contributor: Address::ZERO,
            shown_bytes: c.text.len(),
            retrieval_score: 0.5,
            locator: c.locator.as_ref().map(recorded),
        }
    }

    #[test]
    fn unchanged_locators_are_not_reported() {
        let a = chunk("a", TEXT, Some(locator(2, 10)));
        let none = chunk("n", "Another text.", None);
        let sources = [source(&a), source(&none)];
        assert!(locator_changes(2, &sources, &[none, a]).is_empty());
    }

    #[test]
    fn a_chunk_that_moved_is_reported_with_its_new_place() {
        let was = chunk("a", TEXT, Some(locator(2, 10)));
        let sources = [source(&chunk("b", "Other text.", None)), source(&was)];
        // Re-ingested: the same chunk id and text, now on page 3 further down.
        let now = chunk("a", TEXT, Some(locator(3, 400)));
        let changes = locator_changes(2, &sources, std::slice::from_ref(&now));
        assert_eq!(
            changes,
            [LocatorChange {
                source: 1,
                chunk_id: "a#0".into(),
                content_hash: ContentHash::of(TEXT).as_b256(),
                recorded: Some(recorded(&locator(2, 10))),
                current_chunk_id: "a#0".into(),
                current: Some(recorded(&locator(3, 400))),
            }]
        );
        let shown = changes[0].to_string();
        assert!(
            shown.starts_with("[2] a#0: recorded p. 2 · Flight · chars 10–62, now p. 3"),
            "{shown}"
        );
        // A version-1 record binds no locators: nothing to compare.
        assert!(locator_changes(1, &sources, &[now]).is_empty());
    }

    #[test]
    fn the_same_text_still_at_the_recorded_place_elsewhere_has_not_moved() {
        let was = chunk("a", TEXT, Some(locator(2, 10)));
        let sources = [source(&was)];
        let moved = chunk("a", TEXT, Some(locator(5, 0)));
        let copy = chunk("copy", TEXT, Some(locator(2, 10)));
        assert!(locator_changes(2, &sources, &[moved.clone(), copy]).is_empty());
        // Gone from its own document, it is reported at the first chunk with that text.
        let elsewhere = chunk("other", TEXT, None);
        let changes = locator_changes(2, &sources, &[elsewhere]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].current_chunk_id, "other#0");
        assert_eq!(changes[0].current, None);
        assert!(changes[0].to_string().ends_with("now no locator (other#0)"));
        // Text gone altogether: the audit reports a missing chunk instead.
        assert!(locator_changes(2, &sources, &[chunk("x", "Else.", None)]).is_empty());
    }
}
