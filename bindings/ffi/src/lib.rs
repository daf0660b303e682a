#![doc = include_str!("../README.md")]

mod engine;
mod error;
mod generator;
mod index;
mod receipt;
mod session;
mod types;

pub use engine::{AskListener, Engine};
pub use error::{Result, TributeError};
pub use generator::Generator;
pub use index::{Index, IngestListener};
pub use receipt::{Receipt, ReceiptAdapter, ReceiptChunk, Signer};
pub use session::{QueryRewrite, Session, Turn, TurnRole};
pub use types::{
    AdapterWeight, AlertReason, Answer, AnswerSentence, AskOptions, AttributionMethod,
    ChainOptions, Citation, Document, Duplicate, EngineOptions, Hit, IngestProgress, IngestReport,
    JournaledReceipt, Ledger, Locator, ReceiptState, ReceiptStats, Retrieval, SearchMode,
    SettleReport, SettledBatch, SourceAlert, Usage, load_ledger,
};

uniffi::setup_scaffolding!();

/// The library's version (the `tribute-ffi` crate version).
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// `RwLock::read` that ignores poisoning: panics are caught at the boundary
/// ([`error::guard`]) and the guarded values stay consistent between statements.
pub(crate) fn read<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// `RwLock::write` that ignores poisoning (see [`read`]).
pub(crate) fn write<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
