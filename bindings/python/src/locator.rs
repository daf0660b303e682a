//! [`Locator`]: where a hit's or citation's chunk lies in its document.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Where a chunk lies in its document: its pages (paged formats such as PDF), the heading
/// path of its section (Markdown, HTML, DOCX) and its character span in the document's
/// extracted text (`text[char_start:char_end]` in Python).
#[pyclass(module = "tribute", frozen, get_all, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Locator {
    /// The 1-based pages the chunk spans, in order; empty for formats without pages.
    pub pages: Vec<u32>,
    /// The headings above the chunk, outermost first; empty before the first heading and
    /// for formats without headings.
    pub headings: Vec<String>,
    /// The chunk's first character (Unicode code point, 0-based) in the document's text.
    pub char_start: usize,
    /// One past the chunk's last character.
    pub char_end: usize,
}

impl From<&tribute::Locator> for Locator {
    fn from(l: &tribute::Locator) -> Self {
        Locator {
            pages: l.pages.clone(),
            headings: l.headings.clone(),
            char_start: l.char_start,
            char_end: l.char_end,
        }
    }
}

impl From<&Locator> for tribute::Locator {
    fn from(l: &Locator) -> Self {
        tribute::Locator {
            pages: l.pages.clone(),
            headings: l.headings.clone(),
            char_start: l.char_start,
            char_end: l.char_end,
        }
    }
}

#[pymethods]
impl Locator {
    /// The locator as a dict (`pages`, `headings`, `char_start`, `char_end`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("pages", self.pages.clone())?;
        d.set_item("headings", self.headings.clone())?;
        d.set_item("char_start", self.char_start)?;
        d.set_item("char_end", self.char_end)?;
        Ok(d)
    }

    /// `p. 2 · Install › On Linux · chars 120–480`.
    fn __str__(&self) -> String {
        tribute::Locator::from(self).to_string()
    }

    fn __repr__(&self) -> String {
        format!("Locator({self})", self = self.__str__())
    }
}
