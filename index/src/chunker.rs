//! Sentence-aware chunking with a token budget and overlap.

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

use crate::error::{Error, Result};

/// Measures text in the tokens of the model that will embed it.
pub trait TokenCounter: Send + Sync {
    /// Byte spans `(start, end)` of the tokens of `text`, in order, without special tokens.
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)>;

    /// The number of tokens of `text`.
    fn count_tokens(&self, text: &str) -> usize {
        self.token_spans(text).len()
    }
}

/// Counts Unicode words (UAX #29) as tokens: for indexes without an embedding model and for tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct WordCounter;

impl TokenCounter for WordCounter {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        text.unicode_word_indices()
            .map(|(i, w)| (i, i + w.len()))
            .collect()
    }
}

/// Chunking settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunkerConfig {
    /// Most tokens the embedder sees per chunk: the document title (embedded with every
    /// chunk), the chunk text and two special tokens. A long title leaves less for the text,
    /// but never under a quarter of this.
    pub max_tokens: usize,
    /// Tokens of trailing whole sentences repeated at the start of the next chunk.
    pub overlap_tokens: usize,
}

impl Default for ChunkerConfig {
    fn default() -> Self {
        // all-MiniLM-L6-v2's window: 256 word pieces.
        Self {
            max_tokens: 256,
            overlap_tokens: 32,
        }
    }
}

impl ChunkerConfig {
    /// The text budget of a chunk of a document with this title.
    pub fn text_budget(&self, title: &str, counter: &dyn TokenCounter) -> Self {
        let title_tokens = if title.trim().is_empty() {
            0
        } else {
            counter.count_tokens(title) + 1
        };
        let max_tokens = self
            .max_tokens
            .saturating_sub(title_tokens + 2)
            .max(self.max_tokens / 4);
        Self {
            max_tokens,
            overlap_tokens: self.overlap_tokens.min(max_tokens / 4),
        }
    }

    /// Checks the settings are usable.
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens < 8 {
            return Err(Error::InvalidConfig(format!(
                "chunk max_tokens must be at least 8, got {}",
                self.max_tokens
            )));
        }
        if self.overlap_tokens >= self.max_tokens / 2 {
            return Err(Error::InvalidConfig(format!(
                "chunk overlap_tokens ({}) must be under half of max_tokens ({})",
                self.overlap_tokens, self.max_tokens
            )));
        }
        Ok(())
    }
}

/// A piece of a document's text: byte offsets into the document text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// Tokens in the span.
    pub tokens: usize,
}

/// Splits `text` into chunks of whole sentences that fit `config.max_tokens`,
/// repeating up to `config.overlap_tokens` of trailing sentences in the next chunk.
/// A sentence longer than the budget is cut at token boundaries, snapped back to
/// whitespace where possible. Deterministic: the same input gives the same spans.
pub fn chunk_text(text: &str, config: &ChunkerConfig, counter: &dyn TokenCounter) -> Vec<Span> {
    let units = sentence_units(text, config.max_tokens, counter);
    let mut chunks: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < units.len() {
        // Start with an overlap of trailing sentences from the previous chunk.
        let mut start = i;
        if let Some(prev) = chunks.last().copied() {
            let mut overlap = 0;
            let mut j = prev.1;
            while j > prev.0 + 1 {
                let t = units[j - 1].tokens;
                if overlap + t > config.overlap_tokens
                    || overlap + t + units[i].tokens > config.max_tokens
                {
                    break;
                }
                overlap += t;
                j -= 1;
            }
            start = j.min(i);
        }
        let mut tokens: usize = units[start..i].iter().map(|u| u.tokens).sum();
        let mut end = i;
        while end < units.len() && (end == i || tokens + units[end].tokens <= config.max_tokens) {
            tokens += units[end].tokens;
            end += 1;
        }
        chunks.push((start, end));
        i = end;
    }
    chunks
        .into_iter()
        .map(|(s, e)| {
            let (start, end) = trim_span(text, units[s].start, units[e - 1].end);
            Span {
                start,
                end,
                tokens: units[s..e].iter().map(|u| u.tokens).sum(),
            }
        })
        .filter(|s| s.end > s.start)
        .collect()
}

/// Like [`chunk_text`], but each section (from one boundary to the next; the text before
/// the first boundary is a section too) is chunked on its own, so no chunk straddles a
/// heading. Boundaries are byte offsets; ones that are out of range or not on a character
/// boundary are ignored. Without boundaries this is exactly [`chunk_text`].
pub fn chunk_sections(
    text: &str,
    boundaries: &[usize],
    config: &ChunkerConfig,
    counter: &dyn TokenCounter,
) -> Vec<Span> {
    let mut cuts: Vec<usize> = boundaries
        .iter()
        .copied()
        .filter(|&b| b > 0 && b < text.len() && text.is_char_boundary(b))
        .collect();
    if cuts.is_empty() {
        return chunk_text(text, config, counter);
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(text.len());
    let mut spans = Vec::new();
    let mut start = 0;
    for end in cuts {
        spans.extend(
            chunk_text(&text[start..end], config, counter)
                .into_iter()
                .map(|s| Span {
                    start: s.start + start,
                    end: s.end + start,
                    tokens: s.tokens,
                }),
        );
        start = end;
    }
    spans
}

fn trim_span(text: &str, start: usize, end: usize) -> (usize, usize) {
    let piece = &text[start..end];
    let lead = piece.len() - piece.trim_start().len();
    let trail = piece.len() - piece.trim_end().len();
    (start + lead, (end - trail).max(start + lead))
}

/// Sentences (UAX #29), each cut further when it alone exceeds the budget.
fn sentence_units(text: &str, max_tokens: usize, counter: &dyn TokenCounter) -> Vec<Span> {
    // A budget of 0 (an unvalidated config) would never advance through a sentence.
    let max_tokens = max_tokens.max(1);
    let mut units = Vec::new();
    for (start, sentence) in text.split_sentence_bound_indices() {
        if sentence.trim().is_empty() {
            continue;
        }
        let spans = counter.token_spans(sentence);
        if spans.len() <= max_tokens {
            units.push(Span {
                start,
                end: start + sentence.len(),
                tokens: spans.len(),
            });
            continue;
        }
        // Cut an over-long sentence every `max_tokens` tokens, at whitespace if one is near.
        let mut piece_start_tok = 0;
        let mut piece_start_byte = 0;
        while piece_start_tok < spans.len() {
            let mut end_tok = (piece_start_tok + max_tokens).min(spans.len());
            if end_tok < spans.len() {
                // Move the cut back to a token that starts after whitespace.
                let mut k = end_tok;
                while k > piece_start_tok + max_tokens / 2 {
                    let b = spans[k].0;
                    if sentence[..b].ends_with(char::is_whitespace) {
                        break;
                    }
                    k -= 1;
                }
                if k > piece_start_tok + max_tokens / 2 {
                    end_tok = k;
                }
            }
            let end_byte = if end_tok < spans.len() {
                spans[end_tok].0
            } else {
                sentence.len()
            };
            units.push(Span {
                start: start + piece_start_byte,
                end: start + end_byte,
                tokens: end_tok - piece_start_tok,
            });
            piece_start_tok = end_tok;
            piece_start_byte = end_byte;
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: usize, overlap: usize) -> ChunkerConfig {
        ChunkerConfig {
            max_tokens: max,
            overlap_tokens: overlap,
        }
    }

    #[test]
    fn short_text_is_one_chunk() {
        let t = "One sentence. Another one.";
        let c = chunk_text(t, &cfg(50, 5), &WordCounter);
        assert_eq!(
            c,
            vec![Span {
                start: 0,
                end: t.len(),
                tokens: 4
            }]
        );
    }

    #[test]
    fn chunks_respect_budget_keep_sentences_and_overlap() {
        let t = "Alpha beta gamma delta. Epsilon zeta eta theta. Iota kappa lambda mu. Nu xi omicron pi. Rho sigma tau upsilon.";
        let c = chunk_text(t, &cfg(8, 4), &WordCounter);
        assert!(c.len() >= 3, "{c:?}");
        for s in &c {
            assert!(s.tokens <= 8, "{s:?}");
            let piece = &t[s.start..s.end];
            assert!(piece.ends_with('.'), "chunk ends mid-sentence: {piece:?}");
            assert_eq!(WordCounter.count_tokens(piece), s.tokens);
        }
        // Consecutive chunks overlap by one whole sentence.
        assert!(c[1].start < c[0].end, "{c:?}");
        assert_eq!(&t[c[1].start..c[0].end], "Epsilon zeta eta theta.");
        // Every sentence is covered.
        assert_eq!(c[0].start, 0);
        assert_eq!(c.last().map(|s| s.end), Some(t.len()));
        // Deterministic.
        assert_eq!(c, chunk_text(t, &cfg(8, 4), &WordCounter));
    }

    #[test]
    fn overlong_sentence_is_cut_at_whitespace() {
        let words: Vec<String> = (0..50).map(|i| format!("w{i}")).collect();
        let t = words.join(" ");
        let c = chunk_text(&t, &cfg(16, 0), &WordCounter);
        assert_eq!(c.len(), 4);
        for s in &c {
            assert!(s.tokens <= 16);
            let piece = &t[s.start..s.end];
            assert!(!piece.starts_with(' ') && !piece.ends_with(' '));
            assert!(piece.starts_with('w'));
        }
        let total: usize = c.iter().map(|s| s.tokens).sum();
        assert_eq!(total, 50);
    }

    #[test]
    fn multibyte_text_keeps_char_boundaries() {
        let t = "Ça coûte cher. Über alles — naïve café. 東京は大きい。 Ende.";
        for s in chunk_text(t, &cfg(8, 2), &WordCounter) {
            assert!(t.is_char_boundary(s.start) && t.is_char_boundary(s.end));
        }
    }

    #[test]
    fn title_and_special_tokens_come_out_of_the_budget() {
        let c = cfg(64, 16);
        assert_eq!(c.text_budget("", &WordCounter), cfg(62, 15));
        assert_eq!(c.text_budget("Three word title", &WordCounter), cfg(58, 14));
        let long_title = "w ".repeat(100);
        assert_eq!(c.text_budget(&long_title, &WordCounter).max_tokens, 16);
    }

    #[test]
    fn sections_are_chunked_apart() {
        let t = "# A\n\nOne. Two.\n\n# B\n\nThree. Four.";
        let b = t.find("# B").expect("heading");
        let c = chunk_sections(t, &[0, b, t.len() + 9], &cfg(50, 5), &WordCounter);
        let pieces: Vec<&str> = c.iter().map(|s| &t[s.start..s.end]).collect();
        assert_eq!(pieces, ["# A\n\nOne. Two.", "# B\n\nThree. Four."]);
        assert_eq!(
            chunk_sections(t, &[], &cfg(50, 5), &WordCounter),
            chunk_text(t, &cfg(50, 5), &WordCounter)
        );
    }

    /// Found by the `chunker` fuzz target: a budget of 0 looped forever.
    #[test]
    fn zero_budget_terminates_with_one_token_chunks() {
        let t = "hello world foo.";
        let c = chunk_text(t, &cfg(0, 0), &WordCounter);
        let pieces: Vec<&str> = c.iter().map(|s| &t[s.start..s.end]).collect();
        assert_eq!(pieces, ["hello", "world", "foo."]);
        assert!(c.iter().all(|s| s.tokens == 1), "{c:?}");
    }

    #[test]
    fn config_is_validated() {
        assert!(cfg(4, 0).validate().is_err());
        assert!(cfg(64, 40).validate().is_err());
        assert!(ChunkerConfig::default().validate().is_ok());
    }
}
