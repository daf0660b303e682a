//! The exception hierarchy and the one place Rust errors become Python exceptions.
//!
//! Every exception carries the Rust error's message unchanged. Domains, not Rust types,
//! pick the class: a missing embedding model is a `ModelError` whether the index or the
//! engine loaded it.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use tribute::ErrorKind;

create_exception!(
    tribute,
    TributeError,
    PyException,
    "Base class of every error Tribute raises; the message is the Rust library's."
);
create_exception!(
    tribute,
    KnowledgeBaseError,
    TributeError,
    "The knowledge base failed: a malformed document, an unreadable file, a corrupt or\nmismatched index directory, or an operation on a closed index."
);
create_exception!(
    tribute,
    ModelError,
    TributeError,
    "A model (the generator or the embedder) could not be loaded or run: a missing or\nincomplete model directory, ONNX Runtime not found, a tokenizer or prompt failure."
);
create_exception!(
    tribute,
    AdapterError,
    TributeError,
    "A LoRA adapter was refused: missing or malformed files, trained for another model,\nnot registered, or over the memory budget."
);
create_exception!(
    tribute,
    AttributionError,
    TributeError,
    "Citation weights could not be computed."
);
create_exception!(
    tribute,
    ReceiptError,
    TributeError,
    "A receipt or signing key was refused (bad key, bad signature, wrong signer), or the\nreceipt journal failed (locked by another writer, unwritable, corrupt)."
);
create_exception!(
    tribute,
    ChainError,
    TributeError,
    "Settlement on chain failed or is not configured."
);
create_exception!(
    tribute,
    ConfigError,
    TributeError,
    "The configuration is invalid or unreadable (a TOML file, a ledger, a fee)."
);
create_exception!(
    tribute,
    RequestError,
    TributeError,
    "The request is invalid: an empty question, `top_k=0`, an unknown mode, method or\nstate, or an operation this handle does not offer."
);

create_exception!(
    tribute,
    OverloadedError,
    TributeError,
    "Too much work is in flight (a bounded queue is full); nothing was done: retry later\nor raise the limit."
);

/// Maps any error of the Tribute crates to its Python exception: the class of its
/// domain ([`tribute::Error::kind`]); a cancelled ask or an internal failure is the base
/// `TributeError`.
pub(crate) fn py_err(e: impl Into<tribute::Error>) -> PyErr {
    let e = e.into();
    let msg = e.to_string();
    match e.kind() {
        ErrorKind::KnowledgeBase => KnowledgeBaseError::new_err(msg),
        ErrorKind::Model => ModelError::new_err(msg),
        ErrorKind::Adapter => AdapterError::new_err(msg),
        ErrorKind::Attribution => AttributionError::new_err(msg),
        ErrorKind::Receipt => ReceiptError::new_err(msg),
        ErrorKind::Chain => ChainError::new_err(msg),
        ErrorKind::Config => ConfigError::new_err(msg),
        ErrorKind::Request => RequestError::new_err(msg),
        ErrorKind::Overloaded => OverloadedError::new_err(msg),
        _ => TributeError::new_err(msg),
    }
}

/// A [`RequestError`] with this message.
pub(crate) fn request(msg: impl Into<String>) -> PyErr {
    RequestError::new_err(msg.into())
}
