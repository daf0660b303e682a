//! The crate's error type.

use crate::weights::Method;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `tribute-attribution`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// There is nothing to attribute to.
    #[error("no sources to attribute the answer to")]
    NoSources,
    /// A source has no text.
    #[error("source {0:?} has empty text")]
    EmptySource(String),
    /// The answer is empty.
    #[error("the answer is empty")]
    EmptyAnswer,
    /// Weights or scores cannot be normalised.
    #[error("weights do not sum: {0}")]
    WeightsDoNotSum(String),
    /// The method needs a model but no scorer was given.
    #[error("method `{0}` needs a model scorer")]
    MissingScorer(Method),
    /// The model scorer or embedder failed or returned something unusable.
    #[error("scorer: {0}")]
    Scorer(String),
    /// An unknown method name.
    #[error("unknown attribution method {0:?} (loo, ablation, shapley, similarity, retrieval)")]
    UnknownMethod(String),
    /// The pass budget is too small for the method with this many sources.
    #[error(
        "a pass budget of {budget} is too small for `{method}` here: it needs at least {minimum}"
    )]
    PassBudget {
        /// The method.
        method: Method,
        /// The budget given.
        budget: usize,
        /// The smallest budget that works.
        minimum: usize,
    },
    /// A setting is out of range.
    #[error("invalid attribution setting: {0}")]
    InvalidConfig(String),
    /// A receipt or signing key was refused.
    #[error(transparent)]
    Receipt(#[from] crate::receipt::ReceiptError),
    /// The receipt journal refused an operation or could not be recovered.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// A provenance manifest was refused.
    #[error(transparent)]
    Provenance(#[from] crate::provenance::ProvenanceError),
    /// A reward split was refused.
    #[error(transparent)]
    Split(#[from] crate::split::SplitError),
    /// Settling a batch of receipts failed.
    #[error(transparent)]
    Settle(#[from] crate::settle::SettleError),
    /// An on-chain settlement operation failed.
    #[cfg(feature = "onchain")]
    #[error(transparent)]
    Chain(#[from] crate::chain::ChainError),
}
