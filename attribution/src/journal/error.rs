//! Why a journal (directory or Postgres) refused an operation.

use std::path::PathBuf;

use alloy_primitives::B256;

use super::{MAX_RECORD, ReceiptState};
use crate::receipt::ReceiptError;

/// Why the journal refused an operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Reading, writing, syncing or locking a journal file failed.
    #[error("journal I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another journal (in this or another process) has the directory open.
    #[error("journal {path} is locked by another writer; stop it or use another directory")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The log is damaged somewhere other than a torn tail; nothing was changed on disk.
    #[error(
        "journal {path} is corrupt at byte {offset}: {reason}; restore it from a backup or inspect it by hand"
    )]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A receipt with this id is already journaled with different content.
    #[error("receipt {receipt_id} is already journaled with different content")]
    Duplicate {
        /// The receipt id.
        receipt_id: B256,
    },
    /// The receipt is not in the journal.
    #[error("receipt {0} is not in the journal")]
    UnknownReceipt(B256),
    /// A state change that would move backwards or change a batch or transaction.
    #[error("receipt {receipt_id} cannot go from {from} to {to}")]
    Transition {
        /// The receipt id.
        receipt_id: B256,
        /// Its current state.
        from: Box<ReceiptState>,
        /// The refused state.
        to: Box<ReceiptState>,
    },
    /// The receipt does not validate.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// A record would exceed [`MAX_RECORD`]; split the call.
    #[error("journal record of {0} bytes exceeds the {MAX_RECORD}-byte limit; write fewer at once")]
    TooLarge(usize),
    /// An earlier write or sync failed and the log could not be restored; reopen the journal.
    #[error("an earlier write to the journal failed; drop it and reopen the directory")]
    Poisoned,
    /// A name that is not a [`StateKind`] (see [`StateKind::as_str`]).
    #[error("unknown receipt state {0:?} (pending, batched, submitted, confirmed)")]
    UnknownState(String),
    /// A `postgres://` journal was asked of a build without the `postgres` feature.
    #[error(
        "{url}: this build has no Postgres support: rebuild with the `postgres` feature (cargo feature `tribute-attribution/postgres`, or `tribute/postgres`)"
    )]
    PostgresNotBuilt {
        /// The URL, password hidden.
        url: String,
    },
    /// The URL does not parse as a Postgres connection string.
    #[error("invalid Postgres URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password hidden.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The Postgres server could not be reached or refused the connection.
    #[error(
        "could not connect to the Postgres journal at {url}: {reason}. Fix: start the server, or check the host, port, database name and credentials in the URL"
    )]
    PostgresUnreachable {
        /// The URL, password hidden.
        url: String,
        /// The driver's message.
        reason: String,
    },
    /// The database holds a journal schema newer than this build understands.
    #[error(
        "the receipt journal at {url} has schema version {found}, newer than this build's {supported}: upgrade Tribute"
    )]
    SchemaTooNew {
        /// The URL, password hidden.
        url: String,
        /// The version found.
        found: i32,
        /// The newest version this build reads.
        supported: i32,
    },
    /// A statement of the shared journal failed (connection lost, server error); the
    /// transaction was rolled back, so nothing of the call was written.
    #[error("Postgres journal at {url}: {reason}")]
    Database {
        /// The URL, password hidden.
        url: String,
        /// The driver's message and its causes.
        reason: String,
    },
}
