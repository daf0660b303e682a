//! The chunker (`chunk_sections`, `chunk_text`, `ChunkerConfig::text_budget`): any UTF-8
//! text of any length, any budget and overlap (valid or not), any section boundaries
//! (in range or not, on a character boundary or not), words or characters as tokens.
//!
//! Properties (`tribute_index_fuzz::check_spans`): spans are non-empty, trimmed, on
//! character boundaries, in text order and within the budget; together they cover every
//! non-whitespace character; none crosses a section boundary; chunking is deterministic;
//! without boundaries `chunk_sections` is `chunk_text`. Locating the spans in a layout
//! built from the boundaries gives consistent character offsets.

use arbitrary::Arbitrary;
use tribute_index::chunker::{
    ChunkerConfig, TokenCounter, WordCounter, chunk_sections, chunk_text,
};
use tribute_index::{Layout, Section};
use tribute_index_fuzz::{CharCounter, check_spans};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    max_tokens: u8,
    overlap_tokens: u8,
    by_chars: bool,
    title: &'a str,
    boundaries: Vec<u16>,
    text: &'a str,
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(data)) else {
            return;
        };
        let counter: &dyn TokenCounter = if input.by_chars {
            &CharCounter
        } else {
            &WordCounter
        };
        let raw = ChunkerConfig {
            max_tokens: usize::from(input.max_tokens),
            overlap_tokens: usize::from(input.overlap_tokens),
        };
        let text = input.text;
        let boundaries: Vec<usize> = input.boundaries.iter().map(|&b| usize::from(b)).collect();
        // The configs the engine uses (validated, then fitted to a title) and raw ones.
        let mut configs = vec![raw];
        if raw.validate().is_ok() {
            configs.push(raw.text_budget(input.title, counter));
        }
        for config in configs {
            let spans = chunk_sections(text, &boundaries, &config, counter);
            check_spans(text, &boundaries, &config, counter, &spans);
            let plain = chunk_text(text, &config, counter);
            assert_eq!(chunk_sections(text, &[], &config, counter), plain);
            check_spans(text, &[], &config, counter, &plain);
            let mut starts: Vec<usize> = boundaries
                .iter()
                .copied()
                .filter(|&b| b < text.len() && text.is_char_boundary(b))
                .collect();
            starts.sort_unstable();
            starts.dedup();
            let layout = Layout {
                page_starts: starts.clone(),
                sections: starts
                    .iter()
                    .map(|&start| Section {
                        start,
                        headings: vec![format!("h{start}")],
                    })
                    .collect(),
            };
            for (l, s) in layout.locate(text, &spans).iter().zip(&spans) {
                assert_eq!(
                    l.char_end - l.char_start,
                    text[s.start..s.end].chars().count()
                );
            }
        }
    });
}
