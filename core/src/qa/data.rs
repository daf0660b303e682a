//! Question-answering examples: one JSON object per line, the format of
//! `examples/data/attribution/dev.jsonl`.

use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// One question with its gold answer and passages.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QaExample {
    /// Identifier (unique within the file).
    pub id: String,
    /// The question.
    pub question: String,
    /// The gold answer.
    pub answer: String,
    /// The passages that go with the question (supporting and distracting ones).
    pub passages: Vec<QaPassage>,
}

/// A passage of a [`QaExample`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QaPassage {
    /// Identifier.
    pub id: String,
    /// Title (may be empty).
    #[serde(default)]
    pub title: String,
    /// Text.
    pub text: String,
    /// Whether it supports the gold answer.
    #[serde(default)]
    pub supporting: bool,
}

impl QaExample {
    /// Reads a JSONL file of examples (blank lines skipped). A line that is not JSON, lacks
    /// `id`, `question`, `answer` or `passages`, or has an empty question, answer or
    /// passage text is an [`Error::QaData`] naming the file and line.
    pub fn load_jsonl(path: &Path) -> Result<Vec<QaExample>> {
        read_jsonl(path, "examples", |ex: &QaExample| {
            ex.check().map_err(|m| format!("example {:?}: {m}", ex.id))
        })
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.question.trim().is_empty() {
            return Err("empty question".into());
        }
        if self.answer.trim().is_empty() {
            return Err("empty answer".into());
        }
        if self.passages.is_empty() {
            return Err("no passages".into());
        }
        if let Some(p) = self.passages.iter().find(|p| p.text.trim().is_empty()) {
            return Err(format!("passage {:?} has empty text", p.id));
        }
        Ok(())
    }
}

/// The objects of a JSONL file, one per non-blank line, each checked by `check`. Any fault
/// is an [`Error::QaData`] naming the file and line (line 0: the file as a whole, e.g. one
/// holding no `what`).
pub(super) fn read_jsonl<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    check: impl Fn(&T) -> std::result::Result<(), String>,
) -> Result<Vec<T>> {
    let bad = |line: usize, message: String| Error::QaData {
        path: path.to_owned(),
        line,
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(0, e.to_string()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| bad(n + 1, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let item: T = serde_json::from_str(&line).map_err(|e| bad(n + 1, e.to_string()))?;
        check(&item).map_err(|m| bad(n + 1, m))?;
        out.push(item);
    }
    if out.is_empty() {
        return Err(bad(0, format!("the file holds no {what}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<QaExample>> {
        let dir = std::env::temp_dir().join(format!("tribute-qa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{:x}.jsonl",
            text.len() * 31 + text.lines().count()
        ));
        std::fs::write(&path, text).unwrap();
        let r = QaExample::load_jsonl(&path);
        std::fs::remove_file(&path).ok();
        r
    }

    const GOOD: &str =
        r#"{"id": "a", "question": "q?", "answer": "x", "passages": [{"id": "p", "text": "t"}]}"#;

    #[test]
    fn reads_examples_and_skips_blank_lines() {
        let ex = load(&format!("{GOOD}\n\n{GOOD}\n")).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].passages[0].title, "");
        assert!(!ex[0].passages[0].supporting);
    }

    #[test]
    fn a_line_missing_a_field_is_named_with_its_line() {
        let no_answer = r#"{"id": "b", "question": "q?", "passages": []}"#;
        match load(&format!("{GOOD}\n\n{no_answer}\n")) {
            Err(Error::QaData { line, message, .. }) => {
                assert_eq!(line, 3);
                assert!(message.contains("missing field `answer`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let empty_text = r#"{"id": "c", "question": "q?", "answer": "x", "passages": [{"id": "p", "text": " "}]}"#;
        let e = load(empty_text).unwrap_err();
        assert!(e.to_string().contains(":1: example \"c\": passage"), "{e}");
        assert!(matches!(load("\n"), Err(Error::QaData { line: 0, .. })));
    }
}
