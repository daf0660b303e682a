//! The facade's error type.

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
    /// Attribution failed.
    #[error(transparent)]
    Attribution(#[from] tribute_attribution::Error),
    /// A receipt or signing key was refused.
    #[error(transparent)]
    Receipt(#[from] tribute_attribution::receipt::ReceiptError),
    /// The receipt journal failed (unwritable directory, locked by another process, …).
    #[error(transparent)]
    Journal(#[from] tribute_attribution::journal::JournalError),
    /// Settling receipts failed; they stay in the journal.
    #[error(transparent)]
    Settle(#[from] tribute_attribution::settle::SettleError),
    /// The prompt could not be built.
    #[error(transparent)]
    Prompt(#[from] crate::rag::PromptError),
    /// The request is invalid (an unknown adapter, a zero `top_k`, …).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
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
