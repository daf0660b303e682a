//! The crate's error type.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an adapter was refused or could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The adapter files are missing, unreadable or malformed.
    #[error("adapter {path}: {reason}")]
    Files {
        /// The adapter directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The adapter was trained for another base model or does not fit this model's LoRA inputs.
    #[error("adapter {id} does not fit model {model}: {reason}")]
    Mismatch {
        /// The adapter id.
        id: String,
        /// The model's name.
        model: String,
        /// Which module, shape or base model differs.
        reason: String,
    },
    /// No adapter is registered under this id.
    #[error("no adapter registered as {0:?}")]
    Unknown(String),
    /// The adapter alone is larger than the registry's memory budget.
    #[error("adapter {id} needs {bytes} bytes, more than the registry's budget of {budget} bytes")]
    OverBudget {
        /// The adapter id.
        id: String,
        /// Its resident size.
        bytes: usize,
        /// The registry's budget.
        budget: usize,
    },
    /// A merge weight is not a finite number, or the request is otherwise unusable.
    #[error("adapter request: {0}")]
    Request(String),
}

/// Everything that can go wrong in `tribute-inference`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error(transparent)]
    OrtLibrary(#[from] tribute_runtime::OrtLibraryError),

    /// A model directory is missing files or holds files that do not describe a usable model.
    #[error(
        "model directory {path}: {reason}. Fix: run `make setup` (exports SmolLM2-135M-Instruct), or export a model with `python -m tribute_export`"
    )]
    ModelDirectory {
        /// The model directory.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },

    /// The tokenizer cannot be loaded, does not fit the model, or failed on the input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The chat template could not be parsed or rendered.
    #[error("chat template: {0}")]
    ChatTemplate(String),

    /// The prompt does not fit the model's context window.
    #[error(
        "prompt has {tokens} tokens but the model's context holds {context}; shorten it or set truncation"
    )]
    PromptTooLong {
        /// Prompt length in tokens.
        tokens: usize,
        /// The model's context length.
        context: usize,
    },

    /// A generation request is invalid (bad sampling setting, empty prompt, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// The model produced non-finite logits.
    #[error(
        "the model produced non-finite logits at step {step} (row {row}); the model file may be corrupt"
    )]
    NonFiniteLogits {
        /// Decode step (0 = prefill).
        step: usize,
        /// Batch row.
        row: usize,
    },

    /// An adapter could not be loaded or used.
    #[error(transparent)]
    Adapter(#[from] AdapterError),

    /// The generation was cancelled.
    #[error("generation cancelled")]
    Cancelled,

    /// ONNX Runtime failed while loading or running the model.
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),

    /// ONNX Runtime failed while running a batch this request was part of (the message of
    /// the original error, shared by every request of the batch).
    #[error("ONNX Runtime (batch): {0}")]
    Runtime(String),

    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// A copy of this error for every request of a failed batch (foreign errors keep
    /// their message).
    pub(crate) fn share(&self) -> Error {
        match self {
            Error::ModelDirectory { path, reason } => Error::ModelDirectory {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::Tokenizer(m) => Error::Tokenizer(m.clone()),
            Error::ChatTemplate(m) => Error::ChatTemplate(m.clone()),
            Error::PromptTooLong { tokens, context } => Error::PromptTooLong {
                tokens: *tokens,
                context: *context,
            },
            Error::NonFiniteLogits { step, row } => Error::NonFiniteLogits {
                step: *step,
                row: *row,
            },
            Error::Cancelled => Error::Cancelled,
            Error::Adapter(AdapterError::Unknown(id)) => {
                Error::Adapter(AdapterError::Unknown(id.clone()))
            }
            Error::Adapter(AdapterError::Mismatch { id, model, reason }) => {
                Error::Adapter(AdapterError::Mismatch {
                    id: id.clone(),
                    model: model.clone(),
                    reason: reason.clone(),
                })
            }
            Error::Adapter(AdapterError::Files { path, reason }) => {
                Error::Adapter(AdapterError::Files {
                    path: path.clone(),
                    reason: reason.clone(),
                })
            }
            Error::Ort(e) => Error::Runtime(e.to_string()),
            Error::Runtime(m) => Error::Runtime(m.clone()),
            other => Error::InvalidRequest(other.to_string()),
        }
    }

    pub(crate) fn model_dir(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::ModelDirectory {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
