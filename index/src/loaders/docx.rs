//! DOCX: the paragraphs of `word/document.xml`, sections at heading paragraphs.
//!
//! A paragraph is a heading when its style (from `word/styles.xml`) is named
//! `heading N` or carries an outline level, or when the paragraph itself sets an outline
//! level; the `Title` style gives the document title. Runs' text, tabs and breaks are
//! kept; deleted text, field codes and drawings are not.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use zip::ZipArchive;
use zip::result::ZipError;

use super::{Extracted, Outline, collapse_whitespace};
use crate::error::{Error, Result};

/// The most XML one part may inflate to (a zip bomb stops here).
const MAX_PART_BYTES: u64 = 512 << 20;

/// What a paragraph style makes of a paragraph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StyleKind {
    Title,
    Heading(u8),
}

fn unreadable(path: &Path, reason: impl Into<String>) -> Error {
    Error::UnreadableDocument {
        path: path.to_owned(),
        format: "DOCX",
        reason: reason.into(),
    }
}

pub(super) fn extract(path: &Path, bytes: &[u8]) -> Result<Extracted> {
    let mut archive = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| unreadable(path, format!("not a zip archive ({e})")))?;
    let document = part(path, &mut archive, "word/document.xml")?.ok_or_else(|| {
        unreadable(
            path,
            "a zip archive without word/document.xml: not a Word document",
        )
    })?;
    let styles = match part(path, &mut archive, "word/styles.xml")? {
        Some(xml) => {
            heading_styles(&xml).map_err(|e| unreadable(path, format!("word/styles.xml: {e}")))?
        }
        None => HashMap::new(),
    };
    paragraphs(&document, &styles).map_err(|e| unreadable(path, format!("word/document.xml: {e}")))
}

/// A part of the package as text, or `None` when the package lacks it.
fn part(
    path: &Path,
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    name: &str,
) -> Result<Option<String>> {
    let entry = match archive.by_name(name) {
        Ok(e) => e,
        Err(ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(unreadable(path, format!("{name}: {e}"))),
    };
    let mut xml = String::new();
    entry
        .take(MAX_PART_BYTES)
        .read_to_string(&mut xml)
        .map_err(|e| unreadable(path, format!("{name}: {e}")))?;
    Ok(Some(xml))
}

/// The value of an attribute named `local` (any prefix).
fn attr(e: &BytesStart<'_>, local: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().into_inner() == local)
        .and_then(|a| {
            a.normalized_value(XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// Paragraph styles that make titles or headings, by style id.
fn heading_styles(xml: &str) -> std::result::Result<HashMap<String, StyleKind>, quick_xml::Error> {
    let mut kinds = HashMap::new();
    let mut reader = Reader::from_str(xml);
    let mut current: Option<String> = None;
    loop {
        match reader.read_event()? {
            Event::Start(e) if e.local_name().into_inner() == "style" => {
                current = attr(&e, "styleId");
            }
            Event::End(e) if e.local_name().into_inner() == "style" => current = None,
            Event::Start(e) | Event::Empty(e) => {
                let Some(id) = &current else { continue };
                let val = attr(&e, "val");
                match (e.local_name().into_inner(), val) {
                    ("name", Some(name)) => {
                        let name = name.to_ascii_lowercase();
                        if name == "title" {
                            kinds.insert(id.clone(), StyleKind::Title);
                        } else if let Some(n) = name.strip_prefix("heading ")
                            && let Ok(level) = n.trim().parse::<u8>()
                        {
                            kinds.entry(id.clone()).or_insert(StyleKind::Heading(level));
                        }
                    }
                    ("outlineLvl", Some(v)) => {
                        if let Ok(l) = v.parse::<u8>()
                            && l < 9
                        {
                            kinds.insert(id.clone(), StyleKind::Heading(l + 1));
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(kinds)
}

/// A paragraph being read.
#[derive(Default)]
struct Paragraph {
    text: String,
    style: Option<String>,
    outline_level: Option<u8>,
}

fn paragraphs(
    xml: &str,
    styles: &HashMap<String, StyleKind>,
) -> std::result::Result<Extracted, quick_xml::Error> {
    let mut reader = Reader::from_str(xml);
    let mut outline = Outline::default();
    let mut title = None;
    // Paragraphs nest (text boxes hold paragraphs): the innermost is last.
    let mut open: Vec<Paragraph> = Vec::new();
    let (mut in_run, mut in_text) = (false, false);
    loop {
        let event = reader.read_event()?;
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                let empty = matches!(event, Event::Empty(_));
                match e.local_name().into_inner() {
                    "p" if !empty => open.push(Paragraph::default()),
                    "r" if !empty => in_run = true,
                    "t" if !empty => in_text = true,
                    "pStyle" => {
                        if let Some(p) = open.last_mut() {
                            p.style = attr(e, "val");
                        }
                    }
                    "outlineLvl" => {
                        if let Some(p) = open.last_mut() {
                            p.outline_level = attr(e, "val")
                                .and_then(|v| v.parse::<u8>().ok())
                                .filter(|&l| l < 9)
                                .map(|l| l + 1);
                        }
                    }
                    "tab" if in_run => push(&mut open, "\t"),
                    "br" | "cr" if in_run => push(&mut open, "\n"),
                    _ => {}
                }
            }
            Event::Text(t) if in_text => push(&mut open, &t.xml10_content()),
            Event::GeneralRef(r) if in_text => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(r)
                        .unwrap_or_default()
                        .to_owned(),
                };
                push(&mut open, &c);
            }
            Event::End(e) => match e.local_name().into_inner() {
                "t" => in_text = false,
                "r" => in_run = false,
                "p" => {
                    if let Some(p) = open.pop() {
                        let kind = p
                            .outline_level
                            .map(StyleKind::Heading)
                            .or_else(|| p.style.as_ref().and_then(|s| styles.get(s).copied()));
                        match kind {
                            Some(StyleKind::Heading(level)) => outline.heading(level, &p.text),
                            Some(StyleKind::Title) => {
                                let t = collapse_whitespace(&p.text);
                                if title.is_none() && !t.is_empty() {
                                    title = Some(t);
                                }
                                outline.paragraph(&p.text);
                            }
                            None => outline.paragraph(&p.text),
                        }
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(outline.finish(title))
}

fn push(open: &mut [Paragraph], s: &str) {
    if let Some(p) = open.last_mut() {
        p.text.push_str(s);
    }
}
