//! Documents, their [`Layout`] (pages and sections), and how they are read from files:
//! JSONL, `.txt` and `.md` always; `.pdf`, `.html`/`.htm` and `.docx` with the
//! `documents` feature (see [`crate::loaders`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chunker::Span;
use crate::error::{Error, Result};
use crate::loaders::{self, Format};
use crate::types::{ContentHash, Contributor, DatanetId, DocId, Locator};

/// Files larger than this are refused by default ([`LoadOptions::max_file_bytes`]).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;

/// The datanet a document goes to when neither the file nor the caller names one.
pub const DEFAULT_DATANET: &str = "default";

/// One document from a contributor, before chunking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Unique id within the index.
    pub id: DocId,
    /// Title; may be empty.
    pub title: String,
    /// Body text; never empty.
    pub text: String,
    /// The datanet (named, attributed collection) the document belongs to.
    pub datanet: DatanetId,
    /// Who contributed it ([`Contributor::UNKNOWN`] when nobody was named).
    pub contributor: Contributor,
    /// License of the text, e.g. an SPDX id.
    pub license: Option<String>,
    /// Free-form metadata kept with the document.
    pub metadata: Map<String, Value>,
    /// Where the text's pages and sections begin (empty for plain text and JSONL):
    /// what each chunk's [`Locator`] is computed from, and where chunks are cut.
    #[serde(default, skip_serializing_if = "Layout::is_empty")]
    pub layout: Layout,
}

/// Where the pages and sections of a document's text begin, as byte offsets into
/// [`Document::text`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The offset where each page's text begins (page 1 first), for paged formats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub page_starts: Vec<usize>,
    /// The sections, in text order: each begins at its heading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<Section>,
}

/// A section of a document: it begins at its heading and runs to the next section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// Byte offset of the heading in the document text.
    pub start: usize,
    /// The heading path, outermost first (the section's own heading last).
    pub headings: Vec<String>,
}

impl Layout {
    /// Whether the layout records neither pages nor sections.
    pub fn is_empty(&self) -> bool {
        self.page_starts.is_empty() && self.sections.is_empty()
    }

    /// The byte offsets where chunks must be cut: every section start.
    pub fn boundaries(&self) -> Vec<usize> {
        self.sections.iter().map(|s| s.start).collect()
    }

    /// The locators of `spans` (byte spans of `text`, as the chunker gives them).
    pub fn locate(&self, text: &str, spans: &[Span]) -> Vec<Locator> {
        let chars = CharOffsets::new(text, spans.iter().flat_map(|s| [s.start, s.end]));
        spans
            .iter()
            .map(|s| Locator {
                pages: self.pages(s.start, s.end),
                headings: self.headings_at(s.start).to_vec(),
                char_start: chars.of(s.start),
                char_end: chars.of(s.end),
            })
            .collect()
    }

    /// The 1-based pages the bytes `start..end` touch.
    fn pages(&self, start: usize, end: usize) -> Vec<u32> {
        if self.page_starts.is_empty() {
            return Vec::new();
        }
        let page_of = |b: usize| self.page_starts.partition_point(|&p| p <= b).max(1) as u32;
        let (first, last) = (page_of(start), page_of(end.saturating_sub(1).max(start)));
        (first..=last).collect()
    }

    /// The heading path of the section holding byte `at`.
    fn headings_at(&self, at: usize) -> &[String] {
        match self.sections.partition_point(|s| s.start <= at) {
            0 => &[],
            n => &self.sections[n - 1].headings,
        }
    }
}

/// Character offsets of a set of byte offsets, counted in one pass over the text.
struct CharOffsets {
    bytes: Vec<usize>,
    chars: Vec<usize>,
}

impl CharOffsets {
    fn new(text: &str, offsets: impl Iterator<Item = usize>) -> Self {
        let mut bytes: Vec<usize> = offsets.map(|b| b.min(text.len())).collect();
        bytes.sort_unstable();
        bytes.dedup();
        let mut chars = Vec::with_capacity(bytes.len());
        let (mut at, mut count) = (0, 0);
        for &b in &bytes {
            count += text.get(at..b).map_or(0, |piece| piece.chars().count());
            at = b;
            chars.push(count);
        }
        Self { bytes, chars }
    }

    fn of(&self, byte: usize) -> usize {
        match self.bytes.binary_search(&byte) {
            Ok(i) => self.chars[i],
            Err(_) => 0,
        }
    }
}

impl Document {
    /// A document with the given id and text, in the default datanet, with an unknown contributor.
    pub fn new(id: impl Into<DocId>, text: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            title: String::new(),
            text: text.into(),
            datanet: DatanetId::new(DEFAULT_DATANET),
            contributor: Contributor::UNKNOWN,
            license: None,
            metadata: Map::new(),
            layout: Layout::default(),
        }
    }

    /// Sets the title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Sets the datanet.
    pub fn with_datanet(mut self, datanet: impl Into<DatanetId>) -> Self {
        self.datanet = datanet.into();
        self
    }

    /// Sets the contributor.
    pub fn with_contributor(mut self, contributor: Contributor) -> Self {
        self.contributor = contributor;
        self
    }

    /// Sets the license.
    pub fn with_license(mut self, license: impl Into<String>) -> Self {
        self.license = Some(license.into());
        self
    }

    /// keccak-256 of the body text: two documents with the same hash are exact duplicates.
    pub fn content_hash(&self) -> ContentHash {
        ContentHash::of(&self.text)
    }

    /// The byte spans this document is cut into: whole sentences within the token budget,
    /// never across a section boundary of its [`Layout`].
    pub fn chunk_spans(
        &self,
        config: &crate::chunker::ChunkerConfig,
        counter: &dyn crate::chunker::TokenCounter,
    ) -> Vec<Span> {
        crate::chunker::chunk_sections(&self.text, &self.layout.boundaries(), config, counter)
    }

    /// The locators of `spans` of this document (see [`Layout::locate`]).
    pub fn locate(&self, spans: &[Span]) -> Vec<Locator> {
        self.layout.locate(&self.text, spans)
    }

    /// Checks what every ingested document must satisfy.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: &str| Error::InvalidDocument {
            id: self.id.to_string(),
            message: message.to_owned(),
        };
        if self.id.as_str().trim().is_empty() {
            return Err(bad("empty id"));
        }
        if self.text.trim().is_empty() {
            return Err(bad("empty text"));
        }
        if self.datanet.as_str().trim().is_empty() {
            return Err(bad("empty datanet name"));
        }
        Ok(())
    }
}

/// Defaults applied to documents whose file does not say otherwise.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Datanet for documents that name none.
    pub datanet: DatanetId,
    /// Contributor for documents that name none.
    pub contributor: Contributor,
    /// Skip JSONL documents with neither text nor title instead of failing (a document
    /// with a title but no text is indexed by its title). Off by default: an empty
    /// document is an error.
    pub skip_empty: bool,
    /// Files larger than this many bytes are refused ([`Error::FileTooLarge`]) before
    /// anything is read ([`DEFAULT_MAX_FILE_BYTES`] by default).
    pub max_file_bytes: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            datanet: DatanetId::new(DEFAULT_DATANET),
            contributor: Contributor::UNKNOWN,
            skip_empty: false,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// A JSONL line: BEIR (`_id`) or Tribute's own format (`id`, `contributor`, ...).
#[derive(Deserialize)]
struct JsonLine {
    #[serde(alias = "_id")]
    id: Value,
    #[serde(default)]
    title: Option<String>,
    text: Option<String>,
    #[serde(default)]
    contributor: Option<String>,
    #[serde(default)]
    datanet: Option<String>,
    #[serde(default)]
    license: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
    /// Fields we do not know are kept as metadata (public BEIR sets carry a few).
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// Reads documents from a file, chosen by extension: `.jsonl` (one document per line),
/// `.txt`, `.md` (one document per file, Markdown split into sections at its headings),
/// and with the `documents` feature `.pdf`, `.html`/`.htm` and `.docx` (one document per
/// file, with pages or sections).
///
/// The whole file is read and validated before anything is returned, so a bad line
/// means no document of that file is ingested. A file over
/// [`LoadOptions::max_file_bytes`] is refused without being read.
pub fn load_file(path: &Path, options: &LoadOptions) -> Result<Vec<Document>> {
    match Format::of(path) {
        Some(Format::Jsonl) => load_jsonl(path, options),
        Some(Format::Text | Format::Markdown) => load_text(path, options).map(|d| vec![d]),
        Some(format) => loaders::load_rich(path, format, options).map(|d| vec![d]),
        None => Err(Error::UnsupportedFile {
            path: path.to_owned(),
        }),
    }
}

fn read_utf8(path: &Path, options: &LoadOptions) -> Result<String> {
    let bytes = loaders::read_limited(path, options.max_file_bytes)?;
    String::from_utf8(bytes).map_err(|e| Error::NotUtf8 {
        path: path.to_owned(),
        valid_up_to: e.utf8_error().valid_up_to(),
    })
}

/// Reads a JSONL file of documents (BEIR corpus lines or Tribute's own format).
pub fn load_jsonl(path: &Path, options: &LoadOptions) -> Result<Vec<Document>> {
    let bytes = loaders::read_limited(path, options.max_file_bytes)?;
    let mut docs = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let malformed = |message: String| Error::MalformedDocument {
            path: path.to_owned(),
            line: line_no,
            message,
        };
        let line = std::str::from_utf8(raw).map_err(|e| {
            malformed(format!(
                "not valid UTF-8 (at byte {} of the line)",
                e.valid_up_to()
            ))
        })?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed: JsonLine = serde_json::from_str(line)
            .map_err(|e| malformed(format!("invalid JSON document: {e}")))?;
        let id = match parsed.id {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            other => {
                return Err(malformed(format!(
                    "\"id\" must be a string or number, got {other}"
                )));
            }
        };
        if id.trim().is_empty() {
            return Err(malformed("empty \"id\"".into()));
        }
        if let Some(first) = seen.insert(id.clone(), line_no) {
            return Err(malformed(format!(
                "duplicate id {id:?} (first seen on line {first})"
            )));
        }
        let mut text = parsed
            .text
            .ok_or_else(|| malformed("missing \"text\"".into()))?;
        if options.skip_empty && text.trim().is_empty() {
            match parsed.title.as_deref().map(str::trim) {
                Some(t) if !t.is_empty() => text = t.to_owned(),
                _ => continue,
            }
        }
        let contributor = match parsed.contributor {
            Some(c) => Contributor::parse(&c).map_err(|e| malformed(e.to_string()))?,
            None => options.contributor,
        };
        let mut metadata = match parsed.metadata {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => {
                return Err(malformed(format!(
                    "\"metadata\" must be an object, got {other}"
                )));
            }
        };
        for (k, v) in parsed.extra {
            metadata.entry(k).or_insert(v);
        }
        let doc = Document {
            id: DocId::new(id),
            title: parsed.title.unwrap_or_default(),
            text,
            datanet: parsed
                .datanet
                .map(DatanetId::new)
                .unwrap_or_else(|| options.datanet.clone()),
            contributor,
            license: parsed.license,
            metadata,
            layout: Layout::default(),
        };
        doc.validate().map_err(|e| malformed(e.to_string()))?;
        docs.push(doc);
    }
    Ok(docs)
}

/// Reads a `.txt` or `.md` file as one document: id from the file name, title from the
/// first Markdown heading (or the file name). A Markdown file's sections start at its
/// headings (code blocks and the like are not mistaken for headings).
pub fn load_text(path: &Path, options: &LoadOptions) -> Result<Document> {
    let text = read_utf8(path, options)?;
    let stem = loaders::file_stem(path);
    let layout = match Format::of(path) {
        Some(Format::Markdown) => loaders::markdown::layout(&text),
        _ => Layout::default(),
    };
    let title = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .and_then(|l| l.strip_prefix('#'))
        .map(|l| l.trim_start_matches('#').trim().to_owned())
        .unwrap_or_else(|| stem.clone());
    let doc = Document {
        id: DocId::new(stem),
        title,
        text,
        datanet: options.datanet.clone(),
        contributor: options.contributor,
        license: None,
        metadata: loaders::source_metadata(path),
        layout,
    };
    validate_file_document(&doc, path)?;
    Ok(doc)
}

/// Validates a document read from a whole file, naming the file in the error.
pub(crate) fn validate_file_document(doc: &Document, path: &Path) -> Result<()> {
    doc.validate().map_err(|e| match e {
        Error::InvalidDocument { message, .. } => Error::InvalidDocument {
            id: path.display().to_string(),
            message,
        },
        other => other,
    })
}

/// Expands directories into the files of the formats this build reads (sorted),
/// keeping plain files as given. [`crate::loaders::load_paths`] also takes globs and
/// reports what it skips.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(Error::io(p))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(Error::io(p))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let files: Vec<PathBuf> = entries
                .into_iter()
                .filter(|e| e.is_dir() || Format::of(e).is_some_and(Format::is_built))
                .collect();
            out.extend(expand_paths(&files)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).expect("create");
        f.write_all(content).expect("write");
        p
    }

    #[test]
    fn reads_beir_and_own_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "c.jsonl",
            br#"{"_id": "1", "title": "T", "text": "hello world"}

{"id": 7, "text": "x y", "contributor": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "datanet": "dn", "license": "CC-BY-4.0", "metadata": {"k": 1}}
"#,
        );
        let docs = load_file(&p, &LoadOptions::default()).expect("loads");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].id.as_str(), "1");
        assert_eq!(docs[0].datanet.as_str(), DEFAULT_DATANET);
        assert_eq!(docs[1].id.as_str(), "7");
        assert_eq!(docs[1].datanet.as_str(), "dn");
        assert_eq!(docs[1].license.as_deref(), Some("CC-BY-4.0"));
        assert_eq!(docs[1].metadata["k"], 1);
        assert_eq!(
            docs[1].contributor.to_string(),
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
        );
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "bad.jsonl",
            b"{\"_id\":\"1\",\"text\":\"ok\"}\n{\"_id\": \"2\", \"text\": \n",
        );
        let err = load_file(&p, &LoadOptions::default()).unwrap_err();
        assert!(
            matches!(err, Error::MalformedDocument { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("bad.jsonl:2"), "{err}");
    }

    #[test]
    fn rejects_empty_text_bad_address_duplicates_and_non_utf8() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: [(&str, &[u8], &str); 5] = [
            (
                "notext.jsonl",
                b"{\"_id\":\"1\",\"txet\":\"a\"}\n",
                "missing \"text\"",
            ),
            (
                "empty.jsonl",
                b"{\"_id\":\"1\",\"text\":\"   \"}\n",
                "empty text",
            ),
            (
                "addr.jsonl",
                b"{\"_id\":\"1\",\"text\":\"a\",\"contributor\":\"0x12\"}\n",
                "invalid contributor",
            ),
            (
                "dup.jsonl",
                b"{\"_id\":\"1\",\"text\":\"a\"}\n{\"_id\":\"1\",\"text\":\"b\"}\n",
                "duplicate id",
            ),
            (
                "bin.jsonl",
                b"{\"_id\":\"1\",\"text\":\"a\xff\"}\n",
                "UTF-8",
            ),
        ];
        for (name, content, needle) in cases {
            let p = write(dir.path(), name, content);
            let err = load_file(&p, &LoadOptions::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{name}: {err}");
            assert!(err.contains(name), "{name}: {err}");
        }
        let p = write(dir.path(), "bin.txt", b"abc\xff\xfe");
        assert!(matches!(
            load_file(&p, &LoadOptions::default()),
            Err(Error::NotUtf8 { valid_up_to: 3, .. })
        ));
        let p = write(dir.path(), "empty.md", b"\n\n");
        assert!(matches!(
            load_file(&p, &LoadOptions::default()),
            Err(Error::InvalidDocument { .. })
        ));
        let p = write(dir.path(), "x.xlsx", b"PK");
        assert!(matches!(
            load_file(&p, &LoadOptions::default()),
            Err(Error::UnsupportedFile { .. })
        ));
        #[cfg(not(feature = "documents"))]
        {
            let p = write(dir.path(), "x.pdf", b"%PDF");
            assert!(matches!(
                load_file(&p, &LoadOptions::default()),
                Err(Error::FormatNotBuilt { format: "PDF", .. })
            ));
        }
    }

    #[test]
    fn locators_give_pages_headings_and_character_spans() {
        let text = "Ça va.\n\nDeux.\n\nTrois.";
        let layout = Layout {
            page_starts: vec![0, 9, 9, 16],
            sections: vec![Section {
                start: 9,
                headings: vec!["H".into()],
            }],
        };
        let spans = [
            Span {
                start: 0,
                end: 7,
                tokens: 2,
            },
            Span {
                start: 0,
                end: text.len(),
                tokens: 4,
            },
        ];
        let l = layout.locate(text, &spans);
        assert_eq!(l[0].pages, [1]);
        assert!(l[0].headings.is_empty());
        // "Ça va." is 7 bytes but 6 characters.
        assert_eq!((l[0].char_start, l[0].char_end), (0, 6));
        // Page 2 is empty: a chunk over pages 1-4 still lists it.
        assert_eq!(l[1].pages, [1, 2, 3, 4]);
        assert_eq!(l[1].char_end, text.chars().count());
    }

    #[test]
    fn markdown_title_from_heading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(dir.path(), "guide.md", b"\n# Zephyr guide\n\nBody.\n");
        let d = load_file(&p, &LoadOptions::default()).expect("loads");
        assert_eq!(d[0].id.as_str(), "guide");
        assert_eq!(d[0].title, "Zephyr guide");
    }
}
