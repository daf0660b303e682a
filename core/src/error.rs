//! The facade's error type, and the one place errors are sorted into the domains the
//! bindings expose ([`Error::kind`]).

use tribute_attribution::Error as AttributionError;
use tribute_attribution::journal::JournalError;
use tribute_index::Error as IndexError;
use tribute_inference::Error as InferenceError;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine. The domain errors of the wired crates are
/// kept whole, so callers can match on them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid or unreadable.
    #[error("config: {0}")]
    Config(String),
    /// The knowledge base failed.
    #[error(transparent)]
    Index(#[from] tribute_index::Error),
    /// The model or an adapter failed to load or run.
    #[error(transparent)]
    Inference(tribute_inference::Error),
    /// Attribution failed (citation weights or a reward split). Receipt, journal and
    /// settlement errors of `tribute-attribution` are [`Error::Receipt`],
    /// [`Error::Journal`] and [`Error::Settle`], never this.
    #[error(transparent)]
    Attribution(tribute_attribution::Error),
    /// A receipt or signing key was refused.
    #[error(transparent)]
    Receipt(#[from] tribute_attribution::receipt::ReceiptError),
    /// The receipt journal failed (unwritable directory, locked by another process, …).
    #[error(transparent)]
    Journal(#[from] tribute_attribution::journal::JournalError),
    /// Settling receipts failed; they stay in the journal.
    #[error(transparent)]
    Settle(#[from] tribute_attribution::settle::SettleError),
    /// A model could not be pulled from the hub (see [`crate::hub`]).
    #[error(transparent)]
    Pull(#[from] crate::hub::PullError),
    /// An attribution record could not be stored or loaded (missing, altered, malformed).
    #[error(transparent)]
    Record(#[from] tribute_attribution::record::RecordError),
    /// A provenance manifest could not be built, written or verified.
    #[error(transparent)]
    Provenance(#[from] tribute_attribution::provenance::ProvenanceError),
    /// The receipt commits to no attribution record, so it cannot be audited.
    #[error("receipt {receipt_id} cannot be audited: {reason}")]
    NoAttributionRecord {
        /// The receipt.
        receipt_id: alloy_primitives::B256,
        /// Why it has no record.
        reason: String,
    },
    /// The knowledge base no longer holds chunks the receipt's record cites: the audit
    /// cannot decide (re-ingest them, or audit against the knowledge base that answered).
    #[error(
        "the knowledge base no longer holds {} chunk(s) that receipt {receipt_id} used ({}); the audit cannot decide",
        missing.len(),
        missing.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ")
    )]
    ChunksMissing {
        /// The receipt.
        receipt_id: alloy_primitives::B256,
        /// Content hashes of the chunks not found, in prompt order.
        missing: Vec<alloy_primitives::B256>,
    },
    /// The model, tokenizer or an adapter given to the audit is not the one the receipt's
    /// record names.
    #[error(
        "the {what} given hashes to {given}, the receipt's record names {recorded}; audit with the files that answered"
    )]
    ModelMismatch {
        /// `model`, `tokenizer` or `adapter NAME`.
        what: String,
        /// The hash in the record.
        recorded: alloy_primitives::B256,
        /// The hash of what was given.
        given: alloy_primitives::B256,
    },
    /// Model or adapter files could not be read to hash them.
    #[error("reading {}: {source}", path.display())]
    ModelFiles {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The prompt could not be built.
    #[error(transparent)]
    Prompt(#[from] crate::rag::PromptError),
    /// The request is invalid (an unknown adapter, a zero `top_k`, …).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request asks for more than the engine's [`crate::config::LimitsConfig`]
    /// allows; nothing was done.
    #[error("invalid request: {what} {value} is over the limit of {limit} (limits.{setting})")]
    OverLimit {
        /// The request field ("top_k", "max_tokens").
        what: &'static str,
        /// The value asked for.
        value: u64,
        /// The limit.
        limit: u64,
        /// The `[limits]` setting that sets it.
        setting: &'static str,
    },
    /// A question-answering data file (see [`crate::qa`]) is unreadable or malformed.
    #[error("{}:{line}: {message}", path.display())]
    QaData {
        /// The file.
        path: std::path::PathBuf,
        /// The 1-based line at fault (0: the file as a whole).
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// Settling needs a chain: configure `[chain]` and a receipt ledger.
    #[error("no chain configured: {0}")]
    NoChain(String),
    /// The ask was cancelled through its [`CancelToken`](tribute_inference::CancelToken)
    /// before it finished; nothing was signed or journaled.
    #[error("the ask was cancelled")]
    Cancelled,
    /// The async task running a blocking call panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
    /// The [`IndexHandle`](crate::IndexHandle) was closed.
    #[error("the index is closed")]
    IndexClosed,
    /// Building an engine over an [`IndexHandle`](crate::IndexHandle) failed, and so did
    /// reopening the handle's own index: the handle is closed.
    #[error("{cause} (and reopening the index failed, so it is closed: {reopen})")]
    IndexLost {
        /// Why the engine could not be built.
        cause: Box<Error>,
        /// Why the index could not be reopened.
        reopen: tribute_index::Error,
    },
    /// A call panicked while it held the engine's index or journal: what it guards may be
    /// half-updated, so the engine refuses to use it (rebuild the engine).
    #[error("the engine's {0} is unusable: a call panicked while it held it")]
    Poisoned(&'static str),
}

/// The domain of an [`Error`]: what the bindings turn into one exception class (Python)
/// or one error variant (Kotlin, Swift). Sorted by what the user can do about it, not by
/// which crate failed: a missing embedding model is [`ErrorKind::Model`] whether the index
/// or the engine loaded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The knowledge base failed: a malformed document, an unreadable file, a corrupt or
    /// mismatched index directory, or an operation on a closed index.
    KnowledgeBase,
    /// A model (the generator or the embedder) could not be loaded or run: a missing or
    /// incomplete model directory, ONNX Runtime not found, a tokenizer or prompt failure.
    Model,
    /// A LoRA adapter was refused: missing or malformed files, trained for another model,
    /// not registered, or over the memory budget.
    Adapter,
    /// Citation weights could not be computed.
    Attribution,
    /// A receipt or signing key was refused, or the receipt journal failed.
    Receipt,
    /// Settlement on chain failed or is not configured.
    Chain,
    /// The configuration is invalid or unreadable (a TOML file, a ledger, a fee).
    Config,
    /// The request is invalid: an empty question, `top_k = 0`, an unknown mode or method,
    /// or an operation the handle does not offer (a closed engine, an index that already
    /// serves an engine).
    Request,
    /// Too much work is in flight: a bounded queue (queries waiting to be embedded,
    /// requests waiting for the generator) is full. Nothing was done; retry later or raise
    /// the limit.
    Overloaded,
    /// The ask was cancelled before it finished; nothing was signed.
    Cancelled,
    /// A bug: a failed background task or an inconsistent internal value.
    Internal,
}

impl Error {
    /// The domain of this error (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::Config,
            Error::Index(e) => index_kind(e),
            Error::Inference(e) => inference_kind(e),
            Error::Attribution(e) => attribution_kind(e),
            Error::Journal(JournalError::UnknownState(_)) => ErrorKind::Request,
            Error::Receipt(_) | Error::Journal(_) => ErrorKind::Receipt,
            Error::Settle(_) | Error::NoChain(_) => ErrorKind::Chain,
            Error::Prompt(crate::rag::PromptError::Inference(e)) => inference_kind(e),
            Error::Prompt(_) => ErrorKind::Model,
            Error::Record(_) | Error::NoAttributionRecord { .. } => ErrorKind::Receipt,
            Error::Provenance(_) => ErrorKind::Adapter,
            Error::ChunksMissing { .. } => ErrorKind::KnowledgeBase,
            Error::ModelMismatch { .. } | Error::ModelFiles { .. } => ErrorKind::Model,
            Error::Pull(crate::hub::PullError::InvalidSpec { .. }) => ErrorKind::Request,
            Error::Pull(_) => ErrorKind::Model,
            Error::InvalidRequest(_) | Error::QaData { .. } | Error::OverLimit { .. } => {
                ErrorKind::Request
            }
            Error::Cancelled => ErrorKind::Cancelled,
            Error::IndexClosed | Error::IndexLost { .. } => ErrorKind::KnowledgeBase,
            Error::Task(_) | Error::Poisoned(_) => ErrorKind::Internal,
        }
    }
}

fn index_kind(e: &IndexError) -> ErrorKind {
    match e {
        IndexError::ModelDirectory { .. }
        | IndexError::OrtLibrary { .. }
        | IndexError::Embedding(_) => ErrorKind::Model,
        IndexError::UnknownVariant { .. } | IndexError::EmptyQuery => ErrorKind::Request,
        IndexError::QueryQueueFull { .. } => ErrorKind::Overloaded,
        _ => ErrorKind::KnowledgeBase,
    }
}

fn inference_kind(e: &InferenceError) -> ErrorKind {
    match e {
        InferenceError::Adapter(_) => ErrorKind::Adapter,
        InferenceError::InvalidRequest(_) => ErrorKind::Request,
        InferenceError::Cancelled => ErrorKind::Cancelled,
        InferenceError::Overloaded { .. } => ErrorKind::Overloaded,
        _ => ErrorKind::Model,
    }
}

fn attribution_kind(e: &AttributionError) -> ErrorKind {
    match e {
        AttributionError::UnknownMethod(_) => ErrorKind::Request,
        _ => ErrorKind::Attribution,
    }
}

impl From<AttributionError> for Error {
    /// One variant per failure: the receipt, journal and settlement errors that
    /// `tribute-attribution` wraps become [`Error::Receipt`], [`Error::Journal`] and
    /// [`Error::Settle`] (a chain error is a failed settlement).
    fn from(e: AttributionError) -> Self {
        match e {
            AttributionError::Receipt(e) => Error::Receipt(e),
            AttributionError::Journal(e) => Error::Journal(e),
            AttributionError::Settle(e) => Error::Settle(e),
            #[cfg(feature = "onchain")]
            AttributionError::Chain(e) => Error::Settle(e.into()),
            e => Error::Attribution(e),
        }
    }
}

impl From<tribute_inference::Error> for Error {
    /// A cancelled generation is the ask's [`Error::Cancelled`]; the rest is kept whole.
    fn from(e: tribute_inference::Error) -> Self {
        match e {
            tribute_inference::Error::Cancelled => Error::Cancelled,
            e => Error::Inference(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_sort_into_domains() {
        assert_eq!(Error::Config("x".into()).kind(), ErrorKind::Config);
        assert_eq!(Error::InvalidRequest("x".into()).kind(), ErrorKind::Request);
        assert_eq!(Error::NoChain("x".into()).kind(), ErrorKind::Chain);
        assert_eq!(Error::Task("x".into()).kind(), ErrorKind::Internal);
        assert_eq!(Error::Cancelled.kind(), ErrorKind::Cancelled);
        let bad_method = "fancy".parse::<tribute_attribution::Method>().unwrap_err();
        assert_eq!(Error::from(bad_method).kind(), ErrorKind::Request);
        let bad_mode = "fancy".parse::<tribute_index::Mode>().unwrap_err();
        assert_eq!(Error::from(bad_mode).kind(), ErrorKind::Request);
        let bad_state = "paid"
            .parse::<tribute_attribution::journal::StateKind>()
            .unwrap_err();
        assert_eq!(Error::from(bad_state).kind(), ErrorKind::Request);
        let bad_key = tribute_attribution::receipt::PayerKey::from_hex("0x12").unwrap_err();
        assert_eq!(Error::from(bad_key).kind(), ErrorKind::Receipt);
        assert_eq!(
            Error::from(tribute_inference::Error::Tokenizer("x".into())).kind(),
            ErrorKind::Model
        );
        let busy = tribute_inference::Error::Overloaded {
            in_flight: 32,
            queued: 1024,
        };
        assert_eq!(Error::from(busy).kind(), ErrorKind::Overloaded);
        let full = tribute_index::Error::QueryQueueFull { limit: 256 };
        assert_eq!(Error::from(full).kind(), ErrorKind::Overloaded);
        assert_eq!(
            Error::from(tribute_index::Error::EmptyQuery).kind(),
            ErrorKind::Request
        );
    }
}
