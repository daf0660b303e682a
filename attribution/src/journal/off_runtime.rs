//! [`OffRuntime`]: the Postgres journal behind [`super::open`], usable from async code.
//!
//! The `postgres` driver is blocking: each call runs its own small tokio runtime, and tokio
//! refuses to start a runtime on a thread that is already driving one. A settler is async
//! (`settle_journal` awaits the chain between journal writes), so every call into the
//! journal from it — and dropping the connection, which closes it the same way — would
//! panic. Inside a runtime, `OffRuntime` runs each call on a scoped thread of its own (tens
//! of microseconds against a database round trip); outside one it calls straight through.

use std::time::Duration;

use alloy_primitives::{Address, B256};

use super::{JournalBackend, ReceiptState, Recovery, Result, SignedReceipt, StateKind, Stats};
use crate::record::{AttributionRecord, RecordError};

/// Whether this thread is driving a tokio runtime.
fn on_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// Runs `f` where a blocking driver may start its runtime: here, or on a scoped thread.
pub(crate) fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if !on_runtime() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A journal whose every call, and its drop, leaves the async runtime's thread first.
#[derive(Debug)]
pub(crate) struct OffRuntime<J: JournalBackend + Sync> {
    /// `None` only while it is being dropped.
    inner: Option<J>,
}

impl<J: JournalBackend + Sync> OffRuntime<J> {
    pub(crate) fn new(inner: J) -> Self {
        OffRuntime { inner: Some(inner) }
    }

    fn get(&self) -> &J {
        match &self.inner {
            Some(j) => j,
            None => unreachable!("the journal is only taken out when it is dropped"),
        }
    }

    fn get_mut(&mut self) -> &mut J {
        match &mut self.inner {
            Some(j) => j,
            None => unreachable!("the journal is only taken out when it is dropped"),
        }
    }
}

impl<J: JournalBackend + Sync> Drop for OffRuntime<J> {
    fn drop(&mut self) {
        if let Some(j) = self.inner.take() {
            off_runtime(move || drop(j));
        }
    }
}

impl<J: JournalBackend + Sync> JournalBackend for OffRuntime<J> {
    fn location(&self) -> String {
        self.get().location()
    }

    fn append_batch(&mut self, receipts: &[SignedReceipt]) -> Result<usize> {
        let j = self.get_mut();
        off_runtime(|| j.append_batch(receipts))
    }

    fn set_state(&mut self, ids: &[B256], state: ReceiptState) -> Result<usize> {
        let j = self.get_mut();
        off_runtime(|| j.set_state(ids, state))
    }

    fn receipt(&self, id: &B256) -> Result<Option<(SignedReceipt, ReceiptState)>> {
        let j = self.get();
        off_runtime(|| j.receipt(id))
    }

    fn list(&self, kind: Option<StateKind>) -> Result<Vec<(SignedReceipt, ReceiptState)>> {
        let j = self.get();
        off_runtime(|| j.list(kind))
    }

    fn summary(&self) -> Result<Stats> {
        let j = self.get();
        off_runtime(|| j.summary())
    }

    fn recovered(&self) -> Recovery {
        self.get().recovered()
    }

    fn max_nonce(&self) -> Result<Option<u64>> {
        let j = self.get();
        off_runtime(|| j.max_nonce())
    }

    fn claim_pending(&mut self, payer: Address, limit: usize) -> Result<Vec<SignedReceipt>> {
        let j = self.get_mut();
        off_runtime(|| j.claim_pending(payer, limit))
    }

    fn claim_unfinished(&mut self, payer: Address) -> Result<Vec<(B256, Vec<SignedReceipt>)>> {
        let j = self.get_mut();
        off_runtime(|| j.claim_unfinished(payer))
    }

    fn release(&mut self, ids: &[B256]) -> Result<()> {
        let j = self.get_mut();
        off_runtime(|| j.release(ids))
    }

    fn set_lease(&mut self, lease: Duration) {
        self.get_mut().set_lease(lease);
    }

    fn put_record(&mut self, record: &AttributionRecord) -> Result<B256, RecordError> {
        let j = self.get_mut();
        off_runtime(|| j.put_record(record))
    }

    fn get_record(&self, hash: &B256) -> Result<AttributionRecord, RecordError> {
        let j = self.get();
        off_runtime(|| j.get_record(hash))
    }
}
