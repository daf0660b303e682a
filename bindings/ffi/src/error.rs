//! The one error type of the bindings, and the one place Rust errors and panics become it.
//!
//! Flat and stable: Kotlin sees `TributeException.Model(message)`, Swift
//! `TributeError.Model(message:)`. Domains, not Rust types, pick the variant (a missing
//! embedding model is a `Model` error whether the index or the engine loaded it): the
//! domain is [`tribute::Error::kind`], the same one that picks the Python package's
//! exception classes.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tribute::ErrorKind;

/// Everything the Tribute bindings throw. Each variant carries the Rust library's message
/// unchanged; the variants are stable, the messages are for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum TributeError {
    /// The knowledge base failed: a malformed document, an unreadable file, a corrupt or
    /// mismatched index directory, or an operation on a closed index.
    #[error("{0}")]
    KnowledgeBase(String),
    /// A model (the generator or the embedder) could not be loaded or run: a missing or
    /// incomplete model directory, ONNX Runtime not found, a tokenizer or prompt failure.
    #[error("{0}")]
    Model(String),
    /// A LoRA adapter was refused: missing or malformed files, trained for another model,
    /// not registered, or over the memory budget.
    #[error("{0}")]
    Adapter(String),
    /// Citation weights could not be computed.
    #[error("{0}")]
    Attribution(String),
    /// A receipt or signing key was refused (bad key, bad signature, wrong signer), or the
    /// receipt journal failed (locked by another writer, unwritable, corrupt).
    #[error("{0}")]
    Receipt(String),
    /// Settlement on chain failed, is not configured, or the library was built without it.
    #[error("{0}")]
    Chain(String),
    /// The configuration is invalid or unreadable (a TOML file, a ledger, a fee).
    #[error("{0}")]
    Config(String),
    /// The request is invalid: an empty question, `top_k = 0`, an unknown adapter, or an
    /// operation this handle does not offer (a closed engine, an index served by an engine).
    #[error("{0}")]
    Request(String),
    /// Too much work is in flight (a bounded queue of queries or generation requests is
    /// full); nothing was done: retry later or raise the limit.
    #[error("{0}")]
    Overloaded(String),
    /// The ask was cancelled (a listener returned `false`, a coroutine or stop flag
    /// cancelled it) before it finished; nothing was signed.
    #[error("{0}")]
    Cancelled(String),
    /// A bug: a panic inside the library (caught; it never crosses into Kotlin or Swift),
    /// an exception thrown by a listener, or a failed background task.
    #[error("{0}")]
    Internal(String),
}

/// `Result` with [`TributeError`].
pub type Result<T, E = TributeError> = std::result::Result<T, E>;

impl From<tribute::Error> for TributeError {
    fn from(e: tribute::Error) -> Self {
        let msg = e.to_string();
        match e.kind() {
            ErrorKind::KnowledgeBase => TributeError::KnowledgeBase(msg),
            ErrorKind::Model => TributeError::Model(msg),
            ErrorKind::Adapter => TributeError::Adapter(msg),
            ErrorKind::Attribution => TributeError::Attribution(msg),
            ErrorKind::Receipt => TributeError::Receipt(msg),
            ErrorKind::Chain => TributeError::Chain(msg),
            ErrorKind::Config => TributeError::Config(msg),
            ErrorKind::Request => TributeError::Request(msg),
            ErrorKind::Overloaded => TributeError::Overloaded(msg),
            ErrorKind::Cancelled => TributeError::Cancelled(msg),
            _ => TributeError::Internal(msg),
        }
    }
}

impl From<tribute::index::Error> for TributeError {
    fn from(e: tribute::index::Error) -> Self {
        tribute::Error::from(e).into()
    }
}

impl From<tribute::inference::Error> for TributeError {
    fn from(e: tribute::inference::Error) -> Self {
        tribute::Error::from(e).into()
    }
}

impl From<tribute::attribution::receipt::ReceiptError> for TributeError {
    fn from(e: tribute::attribution::receipt::ReceiptError) -> Self {
        tribute::Error::from(e).into()
    }
}

impl From<tribute::attribution::Error> for TributeError {
    fn from(e: tribute::attribution::Error) -> Self {
        tribute::Error::from(e).into()
    }
}

/// A listener (a Kotlin or Swift callback) failed in a way uniffi could not map.
impl From<uniffi::UnexpectedUniFFICallbackError> for TributeError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        TributeError::Internal(format!("a listener failed: {}", e.reason))
    }
}

/// A [`TributeError::Request`].
pub(crate) fn request(msg: impl Into<String>) -> TributeError {
    TributeError::Request(msg.into())
}

/// Runs `f`, turning a panic into [`TributeError::Internal`] (with the panic's message).
///
/// uniffi's scaffolding also catches panics, but reports them as an untyped internal
/// error (`InternalException` in Kotlin); every fallible export goes through this guard
/// so callers handle one error type. Locks are taken poison-tolerantly ([`crate::lock`]),
/// so a caught panic leaves the handles usable.
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(panic_error(payload.as_ref())))
}

/// The [`TributeError::Internal`] for a panic payload.
pub(crate) fn panic_error(payload: &(dyn std::any::Any + Send)) -> TributeError {
    let what = panic_message(payload);
    TributeError::Internal(format!("internal error (a panic was caught): {what}"))
}

/// A panic payload's message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_panics_into_internal_errors() {
        let r: Result<()> = guard(|| panic!("boom {}", 42));
        match r {
            Err(TributeError::Internal(m)) => assert!(m.contains("boom 42"), "{m}"),
            other => panic!("expected Internal, got {other:?}"),
        }
        let r: Result<u8> = guard(|| std::panic::panic_any(7u32));
        assert!(matches!(r, Err(TributeError::Internal(m)) if m.contains("no message")));
        assert_eq!(guard(|| Ok(5)), Ok(5));
        assert_eq!(
            guard::<()>(|| Err(request("nope"))),
            Err(TributeError::Request("nope".into()))
        );
    }

    #[test]
    fn errors_map_by_domain() {
        let e: TributeError = tribute::Error::Config("bad".into()).into();
        assert_eq!(e, TributeError::Config("config: bad".into()));
        let e: TributeError = tribute::Error::InvalidRequest("empty".into()).into();
        assert_eq!(e, TributeError::Request("invalid request: empty".into()));
        let e: TributeError = tribute::Error::NoChain("x".into()).into();
        assert!(matches!(e, TributeError::Chain(_)));
        let e: TributeError = tribute::Error::Task("x".into()).into();
        assert!(matches!(e, TributeError::Internal(_)));
        let e: TributeError = tribute::Error::Cancelled.into();
        assert_eq!(e, TributeError::Cancelled("the ask was cancelled".into()));
        let e: TributeError = tribute::attribution::receipt::PayerKey::from_hex("0x12")
            .expect_err("a short key")
            .into();
        assert!(
            matches!(&e, TributeError::Receipt(m) if m.contains("signing key")),
            "{e:?}"
        );
        let e: TributeError = "gpu:x"
            .parse::<tribute::inference::Device>()
            .expect_err("a bad device")
            .into();
        assert!(matches!(
            e,
            TributeError::Request(_) | TributeError::Model(_)
        ));
        let e: TributeError = "fancy"
            .parse::<tribute::attribution::Method>()
            .expect_err("a bad method")
            .into();
        assert!(matches!(e, TributeError::Request(_)));
    }

    #[test]
    fn callback_failures_are_internal() {
        let e: TributeError = uniffi::UnexpectedUniFFICallbackError::new("listener threw").into();
        assert!(matches!(&e, TributeError::Internal(m) if m.contains("listener threw")));
    }
}
