//! Inline citation markers in answer text — `[1]`, `[1, 2]`, `[1][3]`, `[Source 2]` — as
//! a model writes them when prompted to cite, and which sentence each one belongs to.

use std::ops::Range;

/// The largest number read as a marker: bracketed numbers above it (years, counts) are
/// ordinary text.
pub const MAX_MARKER: usize = 99;

/// One bracketed group of markers in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerGroup {
    /// Its byte range in the text, brackets included.
    pub span: Range<usize>,
    /// The source numbers it names, in order.
    pub numbers: Vec<usize>,
}

/// A marker placed in a text: the source number and the byte offset where the text it
/// cites ends (the start of its run of markers, the whitespace before the run left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedMarker {
    /// The byte offset in the text.
    pub at: usize,
    /// The source number (1-based, as written; it may name no source).
    pub number: usize,
}

/// The marker groups of `text`, in order: `[` one or more numbers `]`, the numbers
/// separated by `,` or `;`, each optionally written `Source n`, each 1..=[`MAX_MARKER`].
pub fn find_markers(text: &str) -> Vec<MarkerGroup> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find('[').map(|i| from + i) {
        from = open + 1;
        let Some(len) = text[open + 1..].find(']') else {
            break;
        };
        let inner = &text[open + 1..open + 1 + len];
        if let Some(numbers) = parse_group(inner) {
            let end = open + len + 2;
            out.push(MarkerGroup {
                span: open..end,
                numbers,
            });
            from = end;
        }
    }
    out
}

/// The numbers of a group's inside (`1`, `1, 2`, `Source 3`), or `None` when it is not a
/// marker group.
fn parse_group(inner: &str) -> Option<Vec<usize>> {
    if inner.len() > 48 || inner.contains(['[', '\n']) {
        return None;
    }
    let mut numbers = Vec::new();
    for item in inner.split([',', ';']) {
        let mut item = item.trim();
        if let Some(rest) = item
            .get(..6)
            .filter(|head| head.eq_ignore_ascii_case("source"))
            .and_then(|_| item.get(6..))
        {
            item = rest.trim_start();
        }
        if item.is_empty() || item.len() > 2 || !item.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: usize = item.parse().ok()?;
        if !(1..=MAX_MARKER).contains(&n) {
            return None;
        }
        numbers.push(n);
    }
    Some(numbers)
}

/// Runs of marker groups: groups separated only by whitespace, `,` or `;` form one run,
/// as `[1][2]` or `[1], [3]`. Each run: its byte range and its groups.
fn runs(text: &str, groups: &[MarkerGroup]) -> Vec<(Range<usize>, Vec<usize>)> {
    let mut out: Vec<(Range<usize>, Vec<usize>)> = Vec::new();
    for g in groups {
        match out.last_mut() {
            Some((r, numbers))
                if text[r.end..g.span.start]
                    .chars()
                    .all(|c| c.is_whitespace() || c == ',' || c == ';') =>
            {
                r.end = g.span.end;
                numbers.extend(&g.numbers);
            }
            _ => out.push((g.span.clone(), g.numbers.clone())),
        }
    }
    out
}

/// Where the text a run cites ends: the run's start with the whitespace before it left out.
fn cited_end(text: &str, run_start: usize) -> usize {
    text[..run_start].trim_end().len()
}

/// The markers of `text`, each placed where the text it cites ends (see [`PlacedMarker`]):
/// `Paris is the capital [1].` and `Paris is the capital. [1]` both place `[1]` after the
/// first sentence's words.
pub fn placed_markers(text: &str) -> Vec<PlacedMarker> {
    runs(text, &find_markers(text))
        .into_iter()
        .flat_map(|(r, numbers)| {
            let at = cited_end(text, r.start);
            numbers
                .into_iter()
                .map(move |number| PlacedMarker { at, number })
        })
        .collect()
}

/// `text` without its markers (and the whitespace before each run of them), and the
/// markers placed in the text returned. A run at the very start also takes the whitespace
/// after it.
pub fn strip_markers(text: &str) -> (String, Vec<PlacedMarker>) {
    let mut clean = String::with_capacity(text.len());
    let mut placed = Vec::new();
    let mut at = 0;
    for (r, numbers) in runs(text, &find_markers(text)) {
        let cut = cited_end(text, r.start).max(at);
        clean.push_str(&text[at..cut]);
        let mut end = r.end;
        if clean.trim().is_empty() {
            end = r.end + (text[r.end..].len() - text[r.end..].trim_start().len());
            clean.clear();
        }
        placed.extend(numbers.into_iter().map(|number| PlacedMarker {
            at: clean.len(),
            number,
        }));
        at = end;
    }
    clean.push_str(&text[at..]);
    (clean, placed)
}

/// For each sentence (byte spans, in order), the distinct marker numbers placed in it, in
/// the order written. A marker belongs to the sentence holding the last byte of the text
/// it cites; one placed before any text belongs to the first sentence.
pub fn markers_by_sentence(sentences: &[Range<usize>], placed: &[PlacedMarker]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); sentences.len()];
    if sentences.is_empty() {
        return out;
    }
    for m in placed {
        let byte = m.at.saturating_sub(1);
        let i = sentences.iter().rposition(|s| s.start <= byte).unwrap_or(0);
        if !out[i].contains(&m.number) {
            out[i].push(m.number);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use tribute_attribution::weights::sentences;

    use super::*;

    fn numbers(text: &str) -> Vec<Vec<usize>> {
        find_markers(text).into_iter().map(|g| g.numbers).collect()
    }

    #[test]
    fn finds_the_marker_forms_models_write() {
        assert_eq!(
            numbers("A [1]. B [2, 3]. C [1][4]. D [Source 5]; E [source 6, Source 7]."),
            vec![vec![1], vec![2, 3], vec![1], vec![4], vec![5], vec![6, 7]]
        );
        let g = &find_markers("Paris [12].")[0];
        assert_eq!(g.span, 6..10);
    }

    #[test]
    fn brackets_that_are_not_markers_stay_text() {
        for text in [
            "In [2019] it rained.",
            "[0] is no source.",
            "A list [a, b].",
            "Empty [] and [ ].",
            "Unclosed [1",
            "Nested [[x] and [1\n].",
            "[1.5] [-1] [1-3] [100] [Source] [Sourceé 1]",
        ] {
            assert!(
                find_markers(text).is_empty(),
                "{text}: {:?}",
                find_markers(text)
            );
        }
        // An unclosed bracket does not hide a marker after it.
        assert_eq!(numbers("a [b [2]"), vec![vec![2]]);
    }

    #[test]
    fn strips_markers_and_places_them_after_the_text_they_cite() {
        let (clean, placed) =
            strip_markers("Paris is the capital [1]. It lies on the Seine. [2][3]");
        assert_eq!(clean, "Paris is the capital. It lies on the Seine.");
        let at: Vec<(usize, usize)> = placed.iter().map(|m| (m.at, m.number)).collect();
        assert_eq!(at, vec![(20, 1), (43, 2), (43, 3)]);

        let (clean, placed) = strip_markers("[2] Rome is old. [1], [4] Yes.");
        assert_eq!(clean, "Rome is old. Yes.");
        assert_eq!(placed[0], PlacedMarker { at: 0, number: 2 });
        assert_eq!(placed[1], PlacedMarker { at: 12, number: 1 });
        assert_eq!(placed[2], PlacedMarker { at: 12, number: 4 });

        let (clean, placed) = strip_markers("No markers at all.");
        assert_eq!((clean.as_str(), placed.len()), ("No markers at all.", 0));
        let (clean, placed) = strip_markers(" [1] ");
        assert_eq!((clean.as_str(), placed.len()), ("", 1));
    }

    #[test]
    fn markers_go_to_the_sentence_they_follow() {
        let (clean, placed) =
            strip_markers("Paris is the capital. [1] It lies on the Seine [2]. [3] Bananas.");
        let spans: Vec<Range<usize>> = sentences(&clean).into_iter().map(|(b, _)| b).collect();
        assert_eq!(spans.len(), 3, "{clean}");
        assert_eq!(
            markers_by_sentence(&spans, &placed),
            vec![vec![1], vec![2, 3], vec![]]
        );
        // Unstripped text: the run after a period starts the next UAX #29 sentence, but it
        // still belongs to the one it follows.
        let raw = "Paris is the capital. [1] It lies on the Seine [2][2].";
        let spans: Vec<Range<usize>> = sentences(raw).into_iter().map(|(b, _)| b).collect();
        assert_eq!(
            markers_by_sentence(&spans, &placed_markers(raw)),
            vec![vec![1], vec![2]]
        );
        // Before any text: the first sentence; no sentences: nothing.
        assert_eq!(
            markers_by_sentence(
                std::slice::from_ref(&(0..5)),
                &[PlacedMarker { at: 0, number: 9 }]
            ),
            vec![vec![9]]
        );
        assert!(markers_by_sentence(&[], &[PlacedMarker { at: 0, number: 1 }]).is_empty());
    }

    #[test]
    fn multibyte_text_around_markers() {
        let (clean, placed) = strip_markers("Über alles [1]. Ça va? [2]");
        assert_eq!(clean, "Über alles. Ça va?");
        assert_eq!(placed[1].at, clean.len());
    }
}
