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
    #[error("{path}: unsupported file type (expected .jsonl, .txt or .md)")]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
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

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
