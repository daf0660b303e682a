//! Reading documents from files, folders and glob patterns.
//!
//! [`load_paths`] is the entry point for "ingest these": a file named explicitly must
//! load (its error is returned); a file found in a folder or by a glob that cannot be
//! loaded (unknown type, unreadable, corrupt, too large, no text) is left out and listed
//! in [`Loaded::skipped`] with the reason, and the rest continue. Each file lands whole or
//! not at all. Hidden entries (names starting with `.`) of a folder are not visited;
//! symlinks are followed, and a symlink loop is reported, not followed forever.
//!
//! Formats: `.jsonl`/`.ndjson`, `.txt` and `.md`/`.markdown` always; with the
//! `documents` feature `.pdf` (text per page, see `pdf.rs`), `.html`/`.htm` (main
//! content, headings, charset from the BOM or `<meta>`) and `.docx` (paragraphs and
//! heading styles).

#[cfg(feature = "documents")]
mod docx;
#[cfg(feature = "documents")]
mod html;
pub(crate) mod markdown;
#[cfg(feature = "documents")]
mod pdf;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::document::{Document, LoadOptions, load_file};
#[cfg(feature = "documents")]
use crate::document::{Layout, Section, validate_file_document};
use crate::error::{Error, Result};
use crate::types::DocId;

/// A file format Tribute reads, known by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// `.jsonl`, `.ndjson`: one document per line.
    Jsonl,
    /// `.txt`.
    Text,
    /// `.md`, `.markdown`: sections at headings.
    Markdown,
    /// `.pdf`: text per page (feature `documents`).
    Pdf,
    /// `.html`, `.htm`: main content, sections at headings (feature `documents`).
    Html,
    /// `.docx`: paragraphs, sections at heading styles (feature `documents`).
    Docx,
}

impl Format {
    /// The format of `path`, by extension (case-insensitive).
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "jsonl" | "ndjson" => Self::Jsonl,
            "txt" => Self::Text,
            "md" | "markdown" => Self::Markdown,
            "pdf" => Self::Pdf,
            "html" | "htm" => Self::Html,
            "docx" => Self::Docx,
            _ => return None,
        })
    }

    /// A short name for messages ("PDF").
    pub fn name(self) -> &'static str {
        match self {
            Self::Jsonl => "JSONL",
            Self::Text => "text",
            Self::Markdown => "Markdown",
            Self::Pdf => "PDF",
            Self::Html => "HTML",
            Self::Docx => "DOCX",
        }
    }

    /// Whether this build reads the format (PDF, HTML and DOCX need `documents`).
    pub fn is_built(self) -> bool {
        matches!(self, Self::Jsonl | Self::Text | Self::Markdown) || cfg!(feature = "documents")
    }
}

/// A file that a folder or glob ingest left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedFile {
    /// The file (or folder entry that could not be read).
    pub path: PathBuf,
    /// Why it was left out, for people.
    pub reason: String,
}

/// What [`load_paths`] read.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The documents, file by file in path order.
    pub documents: Vec<Document>,
    /// The files the documents came from.
    pub files: Vec<PathBuf>,
    /// Files left out, with the reason (each also logged as a `WARN`, target
    /// `tribute_index::load`).
    pub skipped: Vec<SkippedFile>,
}

/// Loads files, folders (walked recursively, in name order) and glob patterns such as
/// `docs/**/*.pdf` (a path that does not exist and holds `*`, `?` or `[`).
///
/// A file named explicitly must load: its error is returned. A file found in a folder or
/// by a glob that cannot be loaded is listed in [`Loaded::skipped`] with the reason and
/// the rest continue (see the [module docs](self)). Two files whose documents share an
/// id: the later one is refused (named) or skipped (found).
pub fn load_paths(inputs: &[PathBuf], options: &LoadOptions) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut seen_files = HashSet::new();
    let mut ids: HashMap<DocId, PathBuf> = HashMap::new();
    for input in inputs {
        for (path, named) in candidates(input, &mut loaded.skipped)? {
            let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if !seen_files.insert(key) {
                continue;
            }
            let docs = load_file(&path, options)
                .and_then(|docs| claim_ids(&docs, &path, &ids).map(|()| docs));
            match docs {
                Ok(docs) => {
                    for d in &docs {
                        ids.insert(d.id.clone(), path.clone());
                    }
                    loaded.documents.extend(docs);
                    loaded.files.push(path);
                }
                Err(e) if named => return Err(e),
                Err(e) => skip(&mut loaded.skipped, path, e.to_string()),
            }
        }
    }
    Ok(loaded)
}

/// Fails when a document of `path` has an id that an earlier file's document took.
fn claim_ids(docs: &[Document], path: &Path, ids: &HashMap<DocId, PathBuf>) -> Result<()> {
    match docs.iter().find_map(|d| ids.get(&d.id).map(|p| (d, p))) {
        None => Ok(()),
        Some((d, other)) => Err(Error::InvalidDocument {
            id: d.id.to_string(),
            message: format!(
                "{} gives a document the id that {} already gave one (rename one file)",
                path.display(),
                other.display()
            ),
        }),
    }
}

fn skip(skipped: &mut Vec<SkippedFile>, path: PathBuf, reason: String) {
    tracing::warn!(target: "tribute_index::load", path = %path.display(), "skipped: {reason}");
    skipped.push(SkippedFile { path, reason });
}

/// The files an input stands for, each with whether it was named explicitly.
fn candidates(input: &Path, skipped: &mut Vec<SkippedFile>) -> Result<Vec<(PathBuf, bool)>> {
    match std::fs::metadata(input) {
        Ok(m) if m.is_dir() => Ok(walk(input, skipped)),
        Ok(_) => Ok(vec![(input.to_owned(), true)]),
        Err(e) => {
            let pattern = input.to_string_lossy();
            if e.kind() != std::io::ErrorKind::NotFound || !pattern.contains(['*', '?', '[']) {
                return Err(Error::Io {
                    path: input.to_owned(),
                    source: e,
                });
            }
            let matches = glob::glob(&pattern)
                .map_err(|e| Error::InvalidConfig(format!("glob pattern {pattern:?}: {e}")))?;
            let (mut out, skipped_before) = (Vec::new(), skipped.len());
            for m in matches {
                match m {
                    Ok(p) if p.is_dir() => out.extend(walk(&p, skipped)),
                    Ok(p) => out.push((p, false)),
                    Err(e) => skip(skipped, e.path().to_owned(), e.error().to_string()),
                }
            }
            if out.is_empty() && skipped.len() == skipped_before {
                return Err(Error::NoMatch {
                    pattern: pattern.into_owned(),
                });
            }
            Ok(out)
        }
    }
}

/// The files under `root`, in name order; unreadable entries and symlink loops reported.
fn walk(root: &Path, skipped: &mut Vec<SkippedFile>) -> Vec<(PathBuf, bool)> {
    let hidden = |e: &walkdir::DirEntry| {
        e.depth() > 0 && e.file_name().to_str().is_some_and(|n| n.starts_with('.'))
    };
    let mut out = Vec::new();
    let entries = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !hidden(e));
    for entry in entries {
        match entry {
            Ok(e) if e.file_type().is_dir() => {}
            Ok(e) => out.push((e.into_path(), false)),
            Err(e) => {
                let path = e.path().unwrap_or(root).to_owned();
                skip(skipped, path, e.to_string());
            }
        }
    }
    out
}

/// Reads a whole file, refusing one over `limit` bytes before reading it.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    let bytes = file.metadata().map_err(Error::io(path))?.len();
    let too_large = |bytes| Error::FileTooLarge {
        path: path.to_owned(),
        bytes,
        limit,
    };
    if bytes > limit {
        return Err(too_large(bytes));
    }
    let mut buf = Vec::with_capacity(bytes as usize);
    // The file may grow while it is read: never read past the limit.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(Error::io(path))?;
    if buf.len() as u64 > limit {
        return Err(too_large(buf.len() as u64));
    }
    Ok(buf)
}

/// The file name without its extension: the id of a one-document file.
pub(crate) fn file_stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("document")
        .to_owned()
}

/// The metadata every one-document file gets: where it came from.
pub(crate) fn source_metadata(path: &Path) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("source".into(), Value::String(path.display().to_string()));
    m
}

/// The open headings while a document is read, to give each section its path.
#[derive(Default)]
pub(crate) struct HeadingStack(Vec<(u8, String)>);

impl HeadingStack {
    /// Enters a heading of `level` (1 outermost) and returns the path down to it.
    pub(crate) fn enter(&mut self, level: u8, title: &str) -> Vec<String> {
        while self.0.last().is_some_and(|(l, _)| *l >= level) {
            self.0.pop();
        }
        self.0.push((level, title.to_owned()));
        self.0.iter().map(|(_, t)| t.clone()).collect()
    }
}

/// Text with runs of whitespace made one space, trimmed.
pub(crate) fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a PDF, HTML or DOCX reader extracted.
#[cfg(feature = "documents")]
pub(crate) struct Extracted {
    /// The document's own title, if it has one.
    title: Option<String>,
    text: String,
    layout: Layout,
    /// Page count, for paged formats.
    pages: Option<usize>,
}

/// Builds extracted text paragraph by paragraph, recording where sections begin.
#[cfg(feature = "documents")]
#[derive(Default)]
pub(crate) struct Outline {
    text: String,
    sections: Vec<Section>,
    headings: HeadingStack,
}

#[cfg(feature = "documents")]
impl Outline {
    /// Appends a paragraph (blank line between paragraphs; empty ones dropped).
    fn paragraph(&mut self, p: &str) {
        let p = p.trim();
        if p.is_empty() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
        }
        self.text.push_str(p);
    }

    /// Starts a section at a heading of `level` (1 outermost); the heading is a paragraph.
    fn heading(&mut self, level: u8, title: &str) {
        let title = collapse_whitespace(title);
        if title.is_empty() {
            return;
        }
        let start = if self.text.is_empty() {
            0
        } else {
            self.text.len() + 2
        };
        let headings = self.headings.enter(level, &title);
        self.sections.push(Section { start, headings });
        self.paragraph(&title);
    }

    fn finish(self, title: Option<String>) -> Extracted {
        Extracted {
            title,
            text: self.text,
            layout: Layout {
                page_starts: Vec::new(),
                sections: self.sections,
            },
            pages: None,
        }
    }
}

/// Reads a PDF, HTML or DOCX file as one document.
pub(crate) fn load_rich(path: &Path, format: Format, options: &LoadOptions) -> Result<Document> {
    #[cfg(feature = "documents")]
    {
        let bytes = read_limited(path, options.max_file_bytes)?;
        let extracted = match format {
            Format::Pdf => pdf::extract(path, &bytes)?,
            Format::Html => html::extract(path, &bytes)?,
            Format::Docx => docx::extract(path, &bytes)?,
            Format::Jsonl | Format::Text | Format::Markdown => {
                return Err(Error::UnsupportedFile {
                    path: path.to_owned(),
                });
            }
        };
        let stem = file_stem(path);
        let mut metadata = source_metadata(path);
        metadata.insert("format".into(), Value::String(format.name().to_owned()));
        if let Some(pages) = extracted.pages {
            metadata.insert("pages".into(), Value::from(pages));
        }
        let doc = Document {
            id: DocId::new(stem.clone()),
            title: extracted.title.unwrap_or(stem),
            text: extracted.text,
            datanet: options.datanet.clone(),
            contributor: options.contributor,
            license: None,
            metadata,
            layout: extracted.layout,
        };
        validate_file_document(&doc, path)?;
        Ok(doc)
    }
    #[cfg(not(feature = "documents"))]
    {
        let _ = options;
        Err(Error::FormatNotBuilt {
            path: path.to_owned(),
            format: format.name(),
        })
    }
}
