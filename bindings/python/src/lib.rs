//! Python bindings of Tribute: the native module `tribute._native` of the `tribute`
//! package (`bindings/python/python/tribute`, which re-exports everything here).
//!
//! Thin by design: each method converts its arguments, calls the `tribute` facade with
//! the GIL released (`Python::detach`), and maps errors in one place ([`error`]). Locks
//! that a released call may hold are only ever taken with the GIL released, so a Python
//! callback re-entering from Rust (ingest progress) cannot deadlock against another thread.

mod answer;
mod engine;
mod error;
mod finetune;
mod generator;
mod hub;
mod index;
mod locator;
mod receipt;
mod runtime;
mod session;

use pyo3::prelude::*;

/// Tribute's native module: retrieval, generation, attribution and receipts in Rust.
/// Import the `tribute` package instead; it re-exports all of this.
#[pymodule]
mod _native {
    #[pymodule_export]
    use crate::answer::{Answer, AskStream, Citation, Retrieval, Sentence, Usage};
    #[pymodule_export]
    use crate::engine::Engine;
    #[pymodule_export]
    use crate::error::{
        AdapterError, AttributionError, ChainError, ConfigError, KnowledgeBaseError, ModelError,
        OverloadedError, ReceiptError, RequestError, TributeError,
    };
    #[pymodule_export]
    use crate::finetune::finetune;
    #[pymodule_export]
    use crate::generator::Generator;
    #[pymodule_export]
    use crate::hub::pull_model;
    #[pymodule_export]
    use crate::index::{Hit, Index, IngestProgress, IngestReport, SyncReport};
    #[pymodule_export]
    use crate::locator::Locator;
    #[pymodule_export]
    use crate::receipt::{Receipt, SettleReport, SettledBatch, Signer};
    #[pymodule_export]
    use crate::session::Session;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}

/// `Mutex::lock` that ignores poisoning: a panic cannot cross into Python (pyo3 turns it
/// into `PanicException`), and the guarded values stay consistent between statements.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Python-style quoted string for `repr`s.
pub(crate) fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}
