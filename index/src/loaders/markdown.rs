//! Markdown sections: headings found by a CommonMark parser, so `#` lines inside code
//! blocks are not taken for headings and setext headings are.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::{HeadingStack, collapse_whitespace};
use crate::document::{Layout, Section};

/// The sections of a Markdown text: one per heading, starting at the heading's first byte.
pub(crate) fn layout(text: &str) -> Layout {
    let mut sections = Vec::new();
    let mut headings = HeadingStack::default();
    // The heading being read: its level, first byte and text so far.
    let mut open: Option<(u8, usize, String)> = None;
    for (event, range) in Parser::new_ext(text, Options::empty()).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                open = Some((level as u8, range.start, String::new()));
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, _, title)) = open.as_mut() {
                    title.push_str(&t);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some((_, _, title)) = open.as_mut() {
                    title.push(' ');
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, start, title)) = open.take() {
                    let title = collapse_whitespace(&title);
                    if !title.is_empty() {
                        let path = headings.enter(level, &title);
                        sections.push(Section {
                            start,
                            headings: path,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Layout {
        page_starts: Vec::new(),
        sections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_nest_and_code_blocks_are_not_headings() {
        let text = "Intro.\n\n# A\n\nx\n\n```\n# not\n```\n\n## B `code`\n\ny\n\nC\n-\n\n# D\n";
        let l = layout(text);
        let got: Vec<(usize, Vec<&str>)> = l
            .sections
            .iter()
            .map(|s| (s.start, s.headings.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                (text.find("# A").unwrap(), vec!["A"]),
                (text.find("## B").unwrap(), vec!["A", "B code"]),
                (text.find("C\n-").unwrap(), vec!["A", "C"]),
                (text.find("# D").unwrap(), vec!["D"]),
            ]
        );
    }
}
