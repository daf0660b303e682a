//! Unit tests of `session`.

use super::*;

fn citation(marker: usize, chunk: &str) -> Citation {
    Citation {
        marker,
        weight_bps: 5_000,
        chunk_id: chunk.into(),
        doc_id: chunk.into(),
        title: chunk.into(),
        contributor: String::new(),
        datanet: String::new(),
        content_hash: String::new(),
        score: 1.0,
        snippet: String::new(),
        locator: None,
    }
}

/// The sentences of `text` (split after ". "), citing `markers`.
fn sentences(text: &str, markers: &[&[usize]]) -> Vec<AnswerSentence> {
    let mut out = Vec::new();
    let mut start = 0;
    for (piece, m) in text.split_inclusive(". ").zip(markers) {
        let span = start..start + piece.len();
        out.push(AnswerSentence {
            text: piece.to_owned(),
            char_span: span.clone(),
            span,
            markers: m.to_vec(),
            ..AnswerSentence::default()
        });
        start += piece.len();
    }
    out
}

/// Renumbers one turn: (citations' markers in order, sentences' markers, cited text).
fn turn(
    sources: &mut Vec<SessionSource>,
    text: &str,
    cited: &[(usize, &str)],
    markers: &[&[usize]],
) -> (Vec<usize>, Vec<Vec<usize>>, String) {
    let mut citations: Vec<Citation> = cited.iter().map(|(m, c)| citation(*m, c)).collect();
    let mut sentences = sentences(text, markers);
    let mut cited_text = render(text, &sentences);
    renumber(
        &mut citations,
        &mut sentences,
        &mut cited_text,
        text,
        sources,
    );
    (
        citations.iter().map(|c| c.marker).collect(),
        sentences.iter().map(|s| s.markers.clone()).collect(),
        cited_text,
    )
}

#[test]
fn sources_keep_their_number_across_turns_and_new_ones_get_the_next() {
    let mut sources = Vec::new();
    // Turn 1: prompt sources 1 and 2 cited; the text cites 2 first, so it becomes [1].
    let (c, s, t) = turn(
        &mut sources,
        "Forty times. It was 2021.",
        &[(1, "intro"), (2, "dates")],
        &[&[2], &[1]],
    );
    assert_eq!(c, vec![2, 1]);
    assert_eq!(s, vec![vec![1], vec![2]]);
    assert_eq!(t, "Forty times. [1] It was 2021. [2]");
    // Turn 2: a new source only.
    let (c, _, t) = turn(&mut sources, "Ninety minutes.", &[(1, "battery")], &[&[1]]);
    assert_eq!((c, t.as_str()), (vec![3], "Ninety minutes. [3]"));
    // Turn 3: "dates" again (prompt source 3 now) keeps [1]; "intro" keeps [2].
    let (c, s, t) = turn(
        &mut sources,
        "Again forty. Since 2021.",
        &[(3, "dates"), (1, "intro")],
        &[&[3, 1], &[1]],
    );
    assert_eq!(c, vec![1, 2]);
    assert_eq!(s, vec![vec![1, 2], vec![2]]);
    assert_eq!(t, "Again forty. [1] [2] Since 2021. [2]");
    let numbered: Vec<(usize, &str)> = sources
        .iter()
        .map(|s| (s.marker, s.chunk_id.as_str()))
        .collect();
    assert_eq!(numbered, vec![(1, "dates"), (2, "intro"), (3, "battery")]);
}

#[test]
fn renumbering_keeps_the_rest_of_the_cited_text_and_drops_uncited_markers() {
    let mut sources = vec![SessionSource {
        marker: 1,
        chunk_id: "old".into(),
        doc_id: "old".into(),
        title: "old".into(),
    }];
    let text = "One. Two.";
    let mut citations = vec![citation(1, "new")];
    // Sentence 2 names prompt source 2, which got no weight (no citation).
    let mut sents = sentences(text, &[&[1], &[2]]);
    sents[0].uncited_markers = vec![1];
    sents[1].unused_markers = vec![2, 1];
    let mut cited = "One. [1] Two. [2] (see below)".to_owned();
    renumber(&mut citations, &mut sents, &mut cited, text, &mut sources);
    assert_eq!(citations[0].marker, 2);
    assert_eq!(sents[1].markers, Vec::<usize>::new());
    assert_eq!(sents[0].uncited_markers, vec![2]);
    assert_eq!(sents[1].unused_markers, vec![2]);
    assert_eq!(cited, "One. [2] Two. (see below)");
    // An unchanged numbering leaves everything as it was.
    let mut again = "One. [2]".to_owned();
    let mut sents = sentences("One.", &[&[2]]);
    renumber(&mut citations, &mut sents, &mut again, "One.", &mut sources);
    assert_eq!(again, "One. [2]");
}

#[test]
fn the_fallback_prefixes_the_previous_content_words() {
    assert_eq!(
        content_word_query("Who released it?", "What is the Zephyr SDK?"),
        "zephyr sdk Who released it?"
    );
    // Words the question already has are not repeated; nothing to add keeps it.
    assert_eq!(
        content_word_query("Is the SDK free?", "What does the Zephyr SDK cost?"),
        "zephyr cost Is the SDK free?"
    );
    assert_eq!(content_word_query("And then?", "What is it?"), "And then?");
    // A question that stands on its own is not rewritten.
    assert!(looks_like_follow_up("Who released it?"));
    assert!(looks_like_follow_up("And the price?"));
    assert!(!looks_like_follow_up("How long does a full charge take?"));
    let long = "alpha beta gamma delta epsilon zeta eta theta iota kappa";
    assert_eq!(
        content_word_query("Why?", long),
        "gamma delta epsilon zeta eta theta iota kappa Why?"
    );
}

#[test]
fn model_rewrites_are_checked_before_use() {
    let q = "How long does it take?";
    assert_eq!(
        usable_rewrite(" Standalone question: \"How long does charging take?\"", q),
        Some("How long does charging take?".into())
    );
    assert_eq!(usable_rewrite("  ", q), None);
    assert_eq!(
        usable_rewrite("Paris is nice.", q),
        None,
        "no word of the question"
    );
    assert_eq!(
        usable_rewrite("long take long take long take long take", q),
        None,
        "repetitive"
    );
}

#[test]
fn rewrite_modes_parse() {
    assert_eq!(
        "model".parse::<QueryRewrite>().ok(),
        Some(QueryRewrite::Model)
    );
    assert_eq!(
        "content-words".parse::<QueryRewrite>().ok(),
        Some(QueryRewrite::ContentWords)
    );
    assert_eq!("off".parse::<QueryRewrite>().ok(), Some(QueryRewrite::Off));
    assert!("smart".parse::<QueryRewrite>().is_err());
}
