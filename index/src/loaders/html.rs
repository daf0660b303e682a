//! HTML: the main content as paragraphs, sections at `<h1>`–`<h6>`.
//!
//! The character encoding comes from a byte-order mark, else from a `<meta charset>` or
//! `<meta http-equiv="Content-Type">` in the first 1024 bytes; a label `encoding_rs`
//! does not know, or no declaration on a file that is not UTF-8, is
//! [`Error::UnknownEncoding`]. The page is parsed by html5ever (through `scraper`); elements
//! nested more than [`depth::MAX_DEPTH`] levels deep are [`Error::NestedTooDeep`].
//! Main content: the `<main>` element (or `role="main"`), else the only `<article>`,
//! else `<body>`; navigation, asides, page headers and footers, forms, scripts, styles
//! and hidden elements are left out.

use std::path::Path;

use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE};
use scraper::{ElementRef, Html, Node};

use super::{Extracted, Outline, collapse_whitespace};
use crate::error::{Error, Result};

mod depth;

/// Elements whose content is never part of the text.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "nav", "aside", "footer", "form", "button",
    "select", "svg", "iframe", "object", "canvas", "head",
];

/// Elements that end the paragraph before them and start a new one.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "blockquote",
    "figure",
    "figcaption",
    "table",
    "tr",
    "td",
    "th",
    "caption",
    "address",
    "details",
    "summary",
    "hr",
    "br",
];

pub(super) fn extract(path: &Path, bytes: &[u8]) -> Result<Extracted> {
    let text = decode(path, bytes)?;
    let too_deep = || Error::NestedTooDeep {
        path: path.to_owned(),
        format: "HTML",
        limit: depth::MAX_DEPTH,
    };
    let page: Html = depth::parse_document(&text).ok_or_else(too_deep)?;
    let root = page.root_element();
    let elements = || root.descendants().filter_map(ElementRef::wrap);
    let title = elements()
        .find(|e| e.value().name() == "title")
        .map(|t| collapse_whitespace(&t.text().collect::<String>()))
        .filter(|t| !t.is_empty());
    let articles: Vec<ElementRef<'_>> = elements()
        .filter(|e| e.value().name() == "article")
        .collect();
    let main = elements()
        .find(|e| e.value().name() == "main" || e.value().attr("role") == Some("main"))
        .or(match articles.as_slice() {
            [only] => Some(*only),
            _ => None,
        })
        .or_else(|| elements().find(|e| e.value().name() == "body"))
        .unwrap_or(root);
    let mut walker = Walker {
        skip_headers: matches!(main.value().name(), "body" | "html"),
        ..Walker::default()
    };
    walker.element(main, true, 0);
    if walker.too_deep {
        return Err(too_deep());
    }
    walker.flush();
    Ok(walker.outline.finish(title))
}

#[derive(Default)]
struct Walker {
    outline: Outline,
    /// Inline text of the paragraph being read.
    inline: String,
    /// Whether `<header>` elements are page headers (walking the whole body) rather than
    /// the headers of the main content.
    skip_headers: bool,
    /// Set when an element nests deeper than [`depth::MAX_DEPTH`] below the main content.
    too_deep: bool,
}

impl Walker {
    fn flush(&mut self) {
        let p = collapse_whitespace(&self.inline);
        self.outline.paragraph(&p);
        self.inline.clear();
    }

    /// Reads `e`, `depth` levels below the main content; recursive, hence the depth check
    /// (parsing already refuses deeper pages, but reparenting can deepen a subtree).
    fn element(&mut self, e: ElementRef<'_>, is_root: bool, depth: usize) {
        if depth > depth::MAX_DEPTH {
            self.too_deep = true;
            return;
        }
        let el = e.value();
        let name = el.name();
        let hidden = el.attr("hidden").is_some() || el.attr("aria-hidden") == Some("true");
        // A page header is navigation; the header of the main content holds its title.
        let page_header = name == "header" && self.skip_headers;
        if !is_root && (SKIPPED.contains(&name) || hidden || page_header) {
            return;
        }
        if let Some(level) = heading_level(name) {
            self.flush();
            self.outline.heading(level, &e.text().collect::<String>());
            return;
        }
        if name == "pre" {
            self.flush();
            self.outline.paragraph(&e.text().collect::<String>());
            return;
        }
        let block = BLOCKS.contains(&name);
        if block {
            self.flush();
        }
        for child in e.children() {
            match child.value() {
                Node::Text(t) => self.inline.push_str(t),
                Node::Element(_) => {
                    if let Some(c) = ElementRef::wrap(child) {
                        self.element(c, false, depth + 1);
                    }
                }
                _ => {}
            }
        }
        if block {
            self.flush();
        }
    }
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

/// Decodes the page: BOM, else declared charset, else UTF-8.
fn decode(path: &Path, bytes: &[u8]) -> Result<String> {
    if let Some((encoding, bom)) = Encoding::for_bom(bytes) {
        return Ok(encoding
            .decode_without_bom_handling(&bytes[bom..])
            .0
            .into_owned());
    }
    let unknown = |encoding: String| Error::UnknownEncoding {
        path: path.to_owned(),
        encoding,
    };
    match declared_charset(bytes) {
        Some(label) => {
            let encoding = Encoding::for_label(label.as_bytes())
                .ok_or_else(|| unknown(format!("declared {label:?}")))?;
            // A UTF-16 declaration in a page readable as ASCII means UTF-8 (HTML standard).
            let encoding = if encoding == UTF_16LE || encoding == UTF_16BE {
                UTF_8
            } else {
                encoding
            };
            Ok(encoding.decode_without_bom_handling(bytes).0.into_owned())
        }
        None => String::from_utf8(bytes.to_vec())
            .map_err(|_| unknown("none declared, and the bytes are not UTF-8".into())),
    }
}

/// The charset a `<meta>` tag in the first 1024 bytes declares.
fn declared_charset(bytes: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).to_ascii_lowercase();
    let mut rest = head.as_str();
    while let Some(i) = rest.find("<meta") {
        let tag = &rest[i..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        if let Some(j) = tag.find("charset") {
            let value = tag[j + "charset".len()..].trim_start();
            if let Some(value) = value.strip_prefix('=') {
                let label: String = value
                    .trim_start()
                    .trim_start_matches(['"', '\''])
                    .chars()
                    .take_while(|c| {
                        !matches!(c, '"' | '\'' | ';' | '/' | '>') && !c.is_whitespace()
                    })
                    .collect();
                if !label.is_empty() {
                    return Some(label);
                }
            }
        }
        rest = &rest[i + "<meta".len()..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charset_declarations_are_found() {
        assert_eq!(
            declared_charset(b"<html><meta charset=\"ISO-8859-1\">").as_deref(),
            Some("iso-8859-1")
        );
        assert_eq!(
            declared_charset(
                b"<meta http-equiv='Content-Type' content='text/html; charset=Shift_JIS'>"
            )
            .as_deref(),
            Some("shift_jis")
        );
        assert_eq!(declared_charset(b"<meta name=\"x\" content=\"y\">"), None);
    }
}
