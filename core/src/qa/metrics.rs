//! Answer-quality measures of one answer against its gold answer: SQuAD's exact match and
//! token F1, containment, recall, and a check for answers that loop.

use std::collections::HashMap;

/// Lowercases, drops punctuation and the articles *a*, *an*, *the*, and collapses
/// whitespace: the normalisation of the official SQuAD v1.1 evaluation script.
pub fn normalize_answer(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_punct: String = lower
        .chars()
        .map(|c| if is_punctuation(c) { ' ' } else { c })
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// SQuAD drops ASCII punctuation; Unicode punctuation (curly quotes, dashes) goes too,
/// since it carries no answer content.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            c,
            '\u{2018}'..='\u{201F}' | '\u{2010}'..='\u{2015}' | '\u{2026}' | '\u{00AB}' | '\u{00BB}'
        )
}

fn tokens(text: &str) -> Vec<String> {
    normalize_answer(text)
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// 1 when the normalised prediction equals the normalised gold answer.
pub fn exact_match(prediction: &str, gold: &str) -> f64 {
    f64::from(u8::from(
        normalize_answer(prediction) == normalize_answer(gold),
    ))
}

/// Shared normalised tokens (as a multiset) of prediction and gold: `(common, predicted,
/// gold)` counts.
fn overlap(prediction: &str, gold: &str) -> (usize, usize, usize) {
    let p = tokens(prediction);
    let g = tokens(gold);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &g {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let mut common = 0;
    for t in &p {
        if let Some(c) = counts.get_mut(t.as_str())
            && *c > 0
        {
            *c -= 1;
            common += 1;
        }
    }
    (common, p.len(), g.len())
}

/// SQuAD token F1 between the normalised prediction and gold answer (1 when both are
/// empty, 0 when only one is).
pub fn token_f1(prediction: &str, gold: &str) -> f64 {
    let (common, p, g) = overlap(prediction, gold);
    if p == 0 || g == 0 {
        return f64::from(u8::from(p == g));
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p as f64;
    let recall = common as f64 / g as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Share of the gold answer's normalised tokens that the prediction has (the recall half
/// of [`token_f1`]).
pub fn answer_recall(prediction: &str, gold: &str) -> f64 {
    let (common, _, g) = overlap(prediction, gold);
    if g == 0 {
        return 1.0;
    }
    common as f64 / g as f64
}

/// Token recall of the gold answer at which a prediction counts as containing it.
pub const CONTAINS_RECALL: f64 = 0.5;

/// 1 when the prediction contains the answer: the normalised gold answer occurs in the
/// normalised prediction as a whole-word substring, or — for long-form gold answers,
/// which no answer reproduces word for word — the prediction holds at least
/// [`CONTAINS_RECALL`] of the gold answer's normalised tokens.
pub fn contains_answer(prediction: &str, gold: &str) -> f64 {
    let p = format!(" {} ", normalize_answer(prediction));
    let g = normalize_answer(gold);
    if g.is_empty() {
        return 1.0;
    }
    let whole = p.contains(&format!(" {g} "));
    f64::from(u8::from(
        whole || answer_recall(prediction, gold) >= CONTAINS_RECALL,
    ))
}

/// Length of the word n-grams [`is_looping`] counts.
pub const LOOP_NGRAM: usize = 4;

/// Times one n-gram must occur for [`is_looping`].
pub const LOOP_REPEATS: usize = 3;

/// Whether the answer loops: some run of [`LOOP_NGRAM`] normalised words occurs at least
/// [`LOOP_REPEATS`] times.
pub fn is_looping(text: &str) -> bool {
    let words = tokens(text);
    let mut seen: HashMap<&[String], usize> = HashMap::new();
    for w in words.windows(LOOP_NGRAM) {
        let c = seen.entry(w).or_default();
        *c += 1;
        if *c >= LOOP_REPEATS {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalisation_and_scores() {
        assert_eq!(
            normalize_answer("The  Eiffel-Tower, in PARIS!"),
            "eiffel tower in paris"
        );
        assert_eq!(exact_match("the Milky Way.", "Milky way"), 1.0);
        assert_eq!(exact_match("Milky Way galaxy", "Milky way"), 0.0);
        // prediction: forty times per second (4 tokens); gold: forty per second (3).
        // common 3 → p = 3/4, r = 1, F1 = 2·0.75/1.75.
        let f1 = token_f1("forty times per second", "forty per second");
        assert!((f1 - 1.5 / 1.75).abs() < 1e-12, "{f1}");
        assert_eq!(token_f1("", ""), 1.0);
        assert_eq!(token_f1("a", "forty"), 0.0);
        assert!((answer_recall("forty times", "forty per second") - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn containment_is_whole_words_or_half_the_gold_tokens() {
        assert_eq!(contains_answer("It says forty per second.", "forty"), 1.0);
        assert_eq!(contains_answer("It says fortyish.", "forty"), 0.0);
        // 2 of 4 gold tokens: recall 0.5 counts.
        assert_eq!(
            contains_answer("outer ear and more", "outer middle inner ear"),
            1.0
        );
        assert_eq!(contains_answer("outer", "outer middle inner ear"), 0.0);
    }

    #[test]
    fn looping_needs_three_repeats_of_a_four_word_run() {
        let once = "the cat sat on the mat. the cat sat on the sofa.";
        assert!(!is_looping(once));
        let thrice = "It is red, it is red, it is red, it is red.";
        assert!(is_looping(thrice));
        assert!(!is_looping("short"));
    }
}
