//! The one error type of `tribute-index`.

use std::path::PathBuf;

/// Everything that can go wrong while ingesting, indexing or searching.
///
/// Each variant says what the caller can do about it; the `Display` text is
/// meant to be shown to a user as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A line of a JSONL file is not a valid document.
    #[error("{path}:{line}: {message}")]
    MalformedDocument {
        /// The file that holds the bad line.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },

    /// A document (from any source) is unusable; nothing of it was ingested.
    #[error("document {id:?}: {message}")]
    InvalidDocument {
        /// The document id (may be empty when the id itself is missing).
        id: String,
        /// What is wrong with it.
        message: String,
    },

    /// A file is not valid UTF-8 text.
    #[error("{path}: not valid UTF-8 text (byte {valid_up_to} is the first invalid one)")]
    NotUtf8 {
        /// The offending file.
        path: PathBuf,
        /// Number of valid bytes before the first invalid one.
        valid_up_to: usize,
    },

    /// A contributor is not a valid EVM address.
    #[error("invalid contributor address {input:?}: {reason}")]
    InvalidAddress {
        /// What was given.
        input: String,
        /// Why it was rejected.
        reason: String,
    },

    /// An unsupported input file type.
    #[error(
        "{path}: unsupported file type (expected .jsonl, .txt, .md, .pdf, .html, .htm or .docx)"
    )]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
    },

    /// A `.pdf`, `.html` or `.docx` file was given to a build without the `documents`
    /// feature.
    #[error(
        "{path}: this build cannot read {format} files: rebuild with the `documents` feature (cargo feature `tribute-index/documents`)"
    )]
    FormatNotBuilt {
        /// The file.
        path: PathBuf,
        /// The format ("PDF", "HTML", "DOCX").
        format: &'static str,
    },

    /// A file is larger than [`LoadOptions::max_file_bytes`](crate::LoadOptions::max_file_bytes);
    /// it was not read.
    #[error(
        "{path}: {bytes} bytes is over the {limit}-byte limit for one file (nothing was read): split it, or raise the limit"
    )]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },

    /// A document is over one of [`IndexConfig`](crate::IndexConfig)'s per-document limits
    /// (text bytes, chunk count); nothing of its batch was ingested.
    #[error(
        "document {id:?}: {value} {what} is over the limit of {limit} for one document (nothing was ingested): split it, or raise IndexConfig::{setting}"
    )]
    DocumentTooLarge {
        /// The document id.
        id: String,
        /// What was counted: "bytes" (title and text) or "chunks".
        what: &'static str,
        /// How many the document has.
        value: usize,
        /// The limit.
        limit: usize,
        /// The `IndexConfig` field that sets the limit.
        setting: &'static str,
    },

    /// A file of a known format could not be parsed (corrupt, truncated, or another
    /// format under this extension); nothing of it was ingested.
    #[error("{path}: not a readable {format} file: {reason}")]
    UnreadableDocument {
        /// The file.
        path: PathBuf,
        /// The format it was read as ("PDF", "HTML", "DOCX").
        format: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A document's elements nest deeper than the loader reads (a hostile or broken file:
    /// parsing such nesting costs time quadratic in the depth); nothing of it was ingested.
    #[error(
        "{path}: {format} elements nested more than {limit} levels deep (nothing was ingested): flatten the document"
    )]
    NestedTooDeep {
        /// The file.
        path: PathBuf,
        /// The format it was read as ("HTML").
        format: &'static str,
        /// The deepest nesting read.
        limit: usize,
    },

    /// A PDF is encrypted with a password; nothing of it was ingested.
    #[error(
        "{path}: the PDF is encrypted with a password: decrypt it first (e.g. `qpdf --decrypt`)"
    )]
    EncryptedDocument {
        /// The file.
        path: PathBuf,
    },

    /// A PDF has pages but no text layer (a scan, or text drawn as shapes). OCR is not
    /// attempted.
    #[error(
        "{path}: none of its {pages} page(s) has a text layer (a scan?); OCR is not attempted: run an OCR tool (e.g. `ocrmypdf`) first"
    )]
    NoTextLayer {
        /// The file.
        path: PathBuf,
        /// Its number of pages.
        pages: usize,
    },

    /// An HTML file declares a character encoding Tribute does not know, or declares none
    /// and is not UTF-8.
    #[error(
        "{path}: unknown character encoding ({encoding}): declare a standard charset (UTF-8, windows-1252, …) or convert the file to UTF-8"
    )]
    UnknownEncoding {
        /// The file.
        path: PathBuf,
        /// The declared label, or why none applies.
        encoding: String,
    },

    /// A glob pattern matched no file.
    #[error("no file matches {pattern:?}")]
    NoMatch {
        /// The pattern.
        pattern: String,
    },

    /// An unknown search mode or fusion name.
    #[error("unknown {what} {input:?} (expected one of: {expected})")]
    UnknownVariant {
        /// What kind of value ("mode", "fusion").
        what: &'static str,
        /// What was given.
        input: String,
        /// The accepted values.
        expected: &'static str,
    },

    /// A configuration value is out of range.
    #[error("invalid setting: {0}")]
    InvalidConfig(String),

    /// The ONNX Runtime shared library could not be found or loaded (the message says
    /// where it was looked for and how to install it).
    #[error(transparent)]
    OrtLibrary(#[from] tribute_common::OrtLibraryError),

    /// An embedding model directory is missing or incomplete.
    #[error(
        "embedding model at {path}: {reason}. Fix: run `make setup`, or pass a directory holding model.onnx and tokenizer.json"
    )]
    ModelDirectory {
        /// The model directory.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },

    /// Running the embedding model failed.
    #[error("embedding failed: {0}")]
    Embedding(String),

    /// The index on disk was written with another embedder than the one given.
    #[error(
        "index at {path} was built with embedder {stored} ({stored_dim} dims) but {given} ({given_dim} dims) was given"
    )]
    EmbedderMismatch {
        /// The index directory.
        path: PathBuf,
        /// Model id recorded in the index.
        stored: String,
        /// Dimension recorded in the index.
        stored_dim: usize,
        /// Model id of the given embedder.
        given: String,
        /// Dimension of the given embedder.
        given_dim: usize,
    },

    /// A document's whole text was asked for, but the knowledge base does not keep it.
    #[error("the text of document {id:?} is not available: {reason}")]
    TextNotKept {
        /// The document.
        id: String,
        /// Why (an index built before texts were kept, a backend that keeps only chunks).
        reason: &'static str,
    },

    /// The index directory is damaged beyond what recovery can fix.
    #[error("index at {path} is corrupt: {reason}")]
    Corrupt {
        /// The index directory.
        path: PathBuf,
        /// What is damaged.
        reason: String,
    },

    /// A search query is empty or only whitespace.
    #[error("the query is empty: give some text to search for")]
    EmptyQuery,

    /// More queries are waiting for the query session than its bound allows
    /// ([`QueryOptions::max_waiting`](crate::embedder::QueryOptions::max_waiting)); nothing
    /// was done with this one.
    #[error(
        "too many queries waiting to be embedded ({limit}): retry shortly, or raise QueryOptions::max_waiting"
    )]
    QueryQueueFull {
        /// The bound on waiting queries.
        limit: usize,
    },

    /// Dense search was asked of an index that has no embedder.
    #[error(
        "this index has no embedder: dense and hybrid search need one (open it with an embedder)"
    )]
    NoEmbedder,

    /// An error of the full-text engine.
    #[error(transparent)]
    Tantivy(#[from] tantivy::TantivyError),

    /// A `postgres://` knowledge base was asked of a build without the `postgres` feature.
    #[error(
        "{url}: this build has no Postgres support: rebuild with the `postgres` feature (cargo feature `tribute-index/postgres`)"
    )]
    PostgresNotBuilt {
        /// The URL (password hidden).
        url: String,
    },

    /// The Postgres server could not be reached or refused the connection.
    #[error(
        "could not connect to Postgres at {url}: {reason}. Fix: start the server, or check the host, port, database name and credentials in the URL"
    )]
    PostgresUnreachable {
        /// The URL (password hidden).
        url: String,
        /// What the driver said.
        reason: String,
    },

    /// The database lacks the pgvector extension and it could not be created.
    #[error(
        "{url}: the pgvector extension is missing ({reason}). Fix: install pgvector ≥ 0.8 on the server and run `CREATE EXTENSION vector` as a user allowed to (or grant this user CREATE on the database)"
    )]
    PgvectorMissing {
        /// The URL (password hidden).
        url: String,
        /// What the server said.
        reason: String,
    },

    /// The database holds a schema written by a newer Tribute.
    #[error(
        "{url}: the knowledge base schema is version {found}, this build reads up to {supported}: upgrade Tribute (nothing was changed)"
    )]
    SchemaTooNew {
        /// The URL (password hidden).
        url: String,
        /// The schema version found.
        found: i32,
        /// The newest version this build knows.
        supported: i32,
    },

    /// An error of the Postgres driver or server.
    #[cfg(feature = "postgres")]
    #[error("Postgres: {0}")]
    Postgres(#[from] postgres::Error),

    /// A folder could not be watched for changes, or its watcher stopped
    /// ([`SyncRequest::watch`](crate::sync::SyncRequest::watch)).
    #[error(
        "watching {path}: {reason}. Fix: check that the folder exists and is readable; on Linux, a very large tree may need a higher fs.inotify.max_user_watches"
    )]
    Watch {
        /// The folder.
        path: PathBuf,
        /// What the watcher said.
        reason: String,
    },

    /// An I/O error, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// A connection URL with its password replaced by `***`, for messages and logs (anything
/// that is not a URL with a password comes back unchanged).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            super::redact_url("postgres://app:s3cret@db:5432/kb"),
            "postgres://app:***@db:5432/kb"
        );
        assert_eq!(
            super::redact_url("postgres://app@db/kb"),
            "postgres://app@db/kb"
        );
    }
}
