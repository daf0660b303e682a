//! The model-free `similarity` method: embedding cosine and lexical overlap between answer
//! sentences and sources.

use std::collections::BTreeSet;
use std::ops::Range;

use unicode_segmentation::UnicodeSegmentation;

use super::{AttributionConfig, Source, TextEmbedder};
use crate::error::{Error, Result};

/// Lower-case word stems of a text for lexical overlap (UAX #29 words, ASCII stop words out).
fn words(text: &str) -> BTreeSet<String> {
    const STOP: &[&str] = &[
        "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is",
        "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "which", "with",
        "you", "your", "can", "will", "not", "but", "they", "their", "there", "also", "more",
    ];
    text.unicode_words()
        .map(str::to_lowercase)
        .filter(|w| !STOP.contains(&w.as_str()))
        .map(|w| {
            // A light stem: plural and common suffixes, so "charges"/"charging" meet.
            let mut s = w.as_str();
            for suf in ["ing", "es", "ed", "s"] {
                if s.len() > suf.len() + 3 && s.ends_with(suf) {
                    s = &s[..s.len() - suf.len()];
                    break;
                }
            }
            s.to_owned()
        })
        .collect()
}

/// Share of the sentence's content words found in the source.
fn lexical(sentence: &BTreeSet<String>, source: &BTreeSet<String>) -> f64 {
    if sentence.is_empty() {
        return 0.0;
    }
    sentence.intersection(source).count() as f64 / sentence.len() as f64
}

pub(super) fn lexical_matrix(
    answer: &str,
    sents: &[(Range<usize>, Range<usize>)],
    sources: &[Source],
) -> Vec<Vec<f64>> {
    let src: Vec<_> = sources.iter().map(|s| words(&s.text)).collect();
    sents
        .iter()
        .map(|(span, _)| {
            let w = words(&answer[span.clone()]);
            src.iter().map(|s| lexical(&w, s)).collect()
        })
        .collect()
}

pub(super) fn similarity_matrix(
    answer: &str,
    sents: &[(Range<usize>, Range<usize>)],
    sources: &[Source],
    embedder: Option<&dyn TextEmbedder>,
    config: &AttributionConfig,
) -> Result<Vec<Vec<f64>>> {
    let lex = lexical_matrix(answer, sents, sources);
    let Some(embedder) = embedder else {
        return Ok(lex);
    };
    let c = config.similarity_cosine.clamp(0.0, 1.0);
    let texts: Vec<&str> = sents
        .iter()
        .map(|(s, _)| answer[s.clone()].trim())
        .chain(sources.iter().map(|s| s.text.as_str()))
        .collect();
    let v = embedder.embed(&texts).map_err(|e| Error::Scorer(e.0))?;
    if v.len() != texts.len() {
        return Err(Error::Scorer(format!(
            "the embedder returned {} vectors for {} texts",
            v.len(),
            texts.len()
        )));
    }
    let (sv, rv) = v.split_at(sents.len());
    Ok(sv
        .iter()
        .zip(&lex)
        .map(|(a, lrow)| {
            rv.iter()
                .zip(lrow)
                .map(|(b, l)| {
                    let cos: f64 = a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| f64::from(*x) * f64::from(*y))
                        .sum();
                    c * cos + (1.0 - c) * l
                })
                .collect()
        })
        .collect())
}
