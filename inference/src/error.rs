//! The crate's error type.

use std::path::PathBuf;
use std::sync::Arc;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an adapter was refused or could not be used.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// An adapter's files are over an [`AdapterLimits`](crate::AdapterLimits) bound (its
    /// rank, or the bytes of its files); it was not loaded.
    #[error(
        "adapter {path}: {what} {value} is over the limit of {limit} (nothing was loaded): raise AdapterLimits::{setting} if the adapter is trusted"
    )]
    OverLimit {
        /// The adapter directory or file.
        path: PathBuf,
        /// What was measured: "rank" or "bytes".
        what: &'static str,
        /// The adapter's value.
        value: u64,
        /// The limit.
        limit: u64,
        /// The `AdapterLimits` field that sets the limit.
        setting: &'static str,
    },
}

/// Everything that can go wrong in `tribute-inference`.
///
/// `Clone`, so that one failed batch can answer each of its requests with the same error:
/// foreign errors that are not `Clone` are shared behind an [`Arc`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ONNX Runtime shared library could not be found or loaded.
    #[error(transparent)]
    OrtLibrary(#[from] tribute_common::OrtLibraryError),

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

    /// The generator's wait queue is full (`GeneratorOptions::max_queue`): the request was
    /// refused rather than queued.
    #[error(
        "the generator is overloaded: {in_flight} requests are being decoded and {queued} are waiting, the most the queue holds; retry later, or raise GeneratorOptions::max_queue (queue), max_batch (rows per session) or sessions"
    )]
    Overloaded {
        /// Requests being decoded (rows of running batches).
        in_flight: usize,
        /// Requests waiting for a place (the queue's limit).
        queued: usize,
    },

    /// The generation was cancelled.
    #[error("generation cancelled")]
    Cancelled,

    /// ONNX Runtime failed while loading or running the model (for a batch: the same
    /// error for every request of the batch).
    #[error("ONNX Runtime: {0}")]
    Ort(Arc<ort::Error>),

    /// Fine-tuning cannot start or go on: bad training data or options, base weights that
    /// cannot be read, a target module the model lacks.
    #[cfg(feature = "finetune")]
    #[error("fine-tuning: {0}")]
    Finetune(String),

    /// The training loss stopped being a finite number (learning rate too high, or bad data).
    #[cfg(feature = "finetune")]
    #[error(
        "fine-tuning: the loss is {loss} at step {step}; lower the learning rate or check the data"
    )]
    NonFiniteLoss {
        /// The optimizer step (1-based).
        step: usize,
        /// The loss seen.
        loss: f32,
    },

    /// A line of a training-data file is not a training example.
    #[cfg(feature = "finetune")]
    #[error("{path} line {line}: {reason}")]
    TrainingData {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// Too few training examples to train (and hold some out) on.
    #[cfg(feature = "finetune")]
    #[error(
        "fine-tuning needs at least {needed} examples with tokens to learn, the data has {found}; add data, or lower the held-out split"
    )]
    NotEnoughData {
        /// Usable examples found.
        found: usize,
        /// The fewest the run needs.
        needed: usize,
    },

    /// The checkpoint a model directory was exported from cannot be found.
    #[cfg(feature = "finetune")]
    #[error(
        "the base model's source checkpoint {checkpoint:?} was not found (looked in {looked:?}); run scripts/setup.sh, or export the model again from its checkpoint"
    )]
    SourceCheckpointMissing {
        /// The checkpoint the model directory names (`tribute.json` `source.path`), or `""`
        /// when it names none.
        checkpoint: String,
        /// Where it was looked for.
        looked: Vec<PathBuf>,
    },

    /// A LoRA target module the architecture lacks.
    #[cfg(feature = "finetune")]
    #[error("target module {name:?} is not a linear module of a llama layer (one of {known})")]
    UnknownTargetModule {
        /// The name given.
        name: String,
        /// The modules there are.
        known: String,
    },

    /// A checkpoint directory to resume from does not belong to this run.
    #[cfg(feature = "finetune")]
    #[error("cannot resume from {dir}: {reason}")]
    ResumeMismatch {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What differs.
        reason: String,
    },

    /// A tensor operation of the trainer failed (candle).
    #[cfg(feature = "finetune")]
    #[error("tensor computation: {0}")]
    Candle(Arc<candle_core::Error>),

    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
}

impl From<ort::Error> for Error {
    fn from(e: ort::Error) -> Self {
        Error::Ort(Arc::new(e))
    }
}

#[cfg(feature = "finetune")]
impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(Arc::new(e))
    }
}

impl Error {
    /// A broken invariant of the generator's own bookkeeping (a bug, not bad input), as an
    /// `InvalidRequest` that says so.
    pub(crate) fn internal(what: &str) -> Self {
        Error::InvalidRequest(format!("internal: {what}"))
    }

    pub(crate) fn model_dir(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::ModelDirectory {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AdapterError, Error};

    #[test]
    fn a_clone_keeps_the_variant_and_the_message() {
        let over = Error::Adapter(AdapterError::OverBudget {
            id: "a".into(),
            bytes: 2,
            budget: 1,
        });
        assert!(matches!(
            over.clone(),
            Error::Adapter(AdapterError::OverBudget { bytes: 2, .. })
        ));
        let io = Error::io("f", std::io::Error::other("gone"));
        assert_eq!(io.clone().to_string(), "f: gone");
    }
}
