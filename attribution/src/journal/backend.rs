//! One interface over every receipt journal, so that signing, listing and settlement work
//! the same on the local directory and on the shared Postgres journal.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256};

use super::{Appended, Journal, JournalError, ReceiptState, Recovery, StateKind, Stats};
use crate::receipt::SignedReceipt;
use crate::record::{AttributionRecord, RecordError, RecordStore};

type Result<T, E = JournalError> = std::result::Result<T, E>;

/// How long a settler's claim on receipts lasts unless it moves them on
/// ([`JournalBackend::set_lease`]): long enough for one batch's simulation, transaction
/// and confirmation. A settler that dies holds its receipts at most this long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(600);

/// A receipt journal: the local directory ([`Journal`]) or (feature `postgres`) a database
/// that many processes share (`PgJournal`). Every method that returns `Ok` after a write
/// has made it durable; every failed call leaves the journal as it was.
///
/// # Claims
///
/// A settler takes work with [`claim_pending`](Self::claim_pending) (receipts not yet in a
/// batch) and [`claim_unfinished`](Self::claim_unfinished) (batches an earlier or crashed
/// settler left behind). A claim is a lease: nobody else gets the same receipts until it
/// runs out ([`set_lease`](Self::set_lease), default [`DEFAULT_LEASE`]), is
/// [released](Self::release), or the receipts are confirmed; each state change a claimant
/// makes renews it. A settler that dies simply lets its lease run out. Claims only share the
/// work out: that no receipt ever lands in two batches is the state machine's guarantee
/// (a batched receipt cannot be batched again under another id), checked atomically on
/// every [`set_state`](Self::set_state).
pub trait JournalBackend: Send + std::fmt::Debug {
    /// Where the journal is: its directory, or its URL with any password hidden.
    fn location(&self) -> String;

    /// Validates and journals receipts in one durable write (a synced record, a committed
    /// transaction); returns how many were new. All are acknowledged when it returns `Ok`;
    /// if it fails, none is. A receipt already journaled with the same content is skipped;
    /// with different content it is [`JournalError::Duplicate`].
    fn append_batch(&mut self, receipts: &[SignedReceipt]) -> Result<usize>;

    /// Validates and journals one receipt; idempotent (see [`append_batch`](Self::append_batch)).
    fn append(&mut self, receipt: &SignedReceipt) -> Result<Appended> {
        let written = self.append_batch(std::slice::from_ref(receipt))?;
        Ok(if written == 1 {
            Appended::Written
        } else {
            Appended::AlreadyPresent
        })
    }

    /// Moves receipts to `state` atomically; returns how many changed. Receipts already in
    /// `state` are left alone; an unknown id or a move the state machine refuses
    /// ([`ReceiptState::can_become`]) refuses the whole call.
    fn set_state(&mut self, ids: &[B256], state: ReceiptState) -> Result<usize>;

    /// The receipt with this id and its state.
    fn receipt(&self, id: &B256) -> Result<Option<(SignedReceipt, ReceiptState)>>;

    /// Receipts and their states in the order they were journaled, all or one kind.
    fn list(&self, kind: Option<StateKind>) -> Result<Vec<(SignedReceipt, ReceiptState)>>;

    /// Counts by state, and the storage's size (records and bytes of the log, or rows and
    /// bytes of the table).
    fn summary(&self) -> Result<Stats>;

    /// What opening the journal found and repaired.
    fn recovered(&self) -> Recovery;

    /// The highest receipt nonce journaled, if any.
    fn max_nonce(&self) -> Result<Option<u64>>;

    /// Claims up to `limit` pending receipts of `payer` that nobody holds, oldest first.
    fn claim_pending(&mut self, payer: Address, limit: usize) -> Result<Vec<SignedReceipt>>;

    /// Claims `payer`'s batched or submitted batches that nobody holds (left by an earlier
    /// run or a settler that died), whole, by batch id.
    fn claim_unfinished(&mut self, payer: Address) -> Result<Vec<(B256, Vec<SignedReceipt>)>>;

    /// Gives back this settler's claims on these receipts.
    fn release(&mut self, ids: &[B256]) -> Result<()>;

    /// How long this settler's claims last from now on.
    fn set_lease(&mut self, lease: Duration);

    /// Stores an attribution record durably (beside the directory journal, or in the
    /// database); returns its hash. Storing one that is there writes nothing.
    fn put_record(&mut self, record: &AttributionRecord) -> Result<B256, RecordError>;

    /// Loads the attribution record with this hash, checking its content hashes to it.
    fn get_record(&self, hash: &B256) -> Result<AttributionRecord, RecordError>;
}

/// Whether `location` is a `postgres://` or `postgresql://` URL rather than a directory.
pub fn is_postgres_url(location: &Path) -> bool {
    location
        .to_str()
        .is_some_and(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// `url` with its password hidden (`postgres://app:***@db/x`, `password=***`), for errors
/// and logs.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => head.to_owned(),
            },
            None => head.to_owned(),
        },
        None => head.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Opens the journal at `location`: a directory ([`Journal::open`], created if missing) or
/// a `postgres://` URL (feature `postgres`; the schema is created on first use).
pub fn open(location: impl AsRef<Path>) -> Result<Box<dyn JournalBackend>> {
    let location = location.as_ref();
    if is_postgres_url(location) {
        let url = location.to_string_lossy();
        #[cfg(feature = "postgres")]
        return Ok(Box::new(super::off_runtime::OffRuntime::new(
            super::off_runtime::off_runtime(|| super::PgJournal::connect(&url))?,
        )));
        #[cfg(not(feature = "postgres"))]
        return Err(JournalError::PostgresNotBuilt {
            url: redact_url(&url),
        });
    }
    Ok(Box::new(Journal::open(location)?))
}

impl Journal {
    fn claim_is_live(&self, id: &B256, now: Instant) -> bool {
        self.claims.get(id).is_some_and(|&until| until > now)
    }
}

impl JournalBackend for Journal {
    fn location(&self) -> String {
        self.dir().display().to_string()
    }

    fn append_batch(&mut self, receipts: &[SignedReceipt]) -> Result<usize> {
        Journal::append_batch(self, receipts)
    }

    fn set_state(&mut self, ids: &[B256], state: ReceiptState) -> Result<usize> {
        let changed = Journal::set_state(self, ids, state)?;
        let until = Instant::now() + self.lease;
        for id in ids {
            if state.kind() == StateKind::Confirmed {
                self.claims.remove(id);
            } else if let Some(claim) = self.claims.get_mut(id) {
                *claim = until;
            }
        }
        Ok(changed)
    }

    fn receipt(&self, id: &B256) -> Result<Option<(SignedReceipt, ReceiptState)>> {
        Ok(self.get(id).cloned().zip(self.state(id).copied()))
    }

    fn list(&self, kind: Option<StateKind>) -> Result<Vec<(SignedReceipt, ReceiptState)>> {
        Ok(self.receipts(kind).map(|(r, s)| (r.clone(), *s)).collect())
    }

    fn summary(&self) -> Result<Stats> {
        Ok(self.stats())
    }

    fn recovered(&self) -> Recovery {
        self.recovery()
    }

    fn max_nonce(&self) -> Result<Option<u64>> {
        Ok(self.receipts(None).map(|(r, _)| r.receipt.nonce).max())
    }

    fn claim_pending(&mut self, payer: Address, limit: usize) -> Result<Vec<SignedReceipt>> {
        let now = Instant::now();
        let claimed: Vec<SignedReceipt> = self
            .entries
            .iter()
            .filter(|e| {
                e.state == ReceiptState::Pending
                    && e.receipt.receipt.payer == payer
                    && !self.claim_is_live(&e.receipt.receipt.receiptId, now)
            })
            .take(limit)
            .map(|e| e.receipt.clone())
            .collect();
        for r in &claimed {
            self.claims.insert(r.receipt.receiptId, now + self.lease);
        }
        Ok(claimed)
    }

    fn claim_unfinished(&mut self, payer: Address) -> Result<Vec<(B256, Vec<SignedReceipt>)>> {
        let now = Instant::now();
        let mut batches: BTreeMap<B256, Vec<SignedReceipt>> = BTreeMap::new();
        let mut held: HashSet<B256> = HashSet::new();
        for e in &self.entries {
            let (Some(batch), StateKind::Batched | StateKind::Submitted) =
                (e.state.batch_id(), e.state.kind())
            else {
                continue;
            };
            if e.receipt.receipt.payer != payer {
                continue;
            }
            if self.claim_is_live(&e.receipt.receipt.receiptId, now) {
                held.insert(batch);
            }
            batches.entry(batch).or_default().push(e.receipt.clone());
        }
        batches.retain(|batch, _| !held.contains(batch));
        for r in batches.values().flatten() {
            self.claims.insert(r.receipt.receiptId, now + self.lease);
        }
        Ok(batches.into_iter().collect())
    }

    fn release(&mut self, ids: &[B256]) -> Result<()> {
        for id in ids {
            self.claims.remove(id);
        }
        Ok(())
    }

    fn set_lease(&mut self, lease: Duration) {
        self.lease = lease;
    }

    fn put_record(&mut self, record: &AttributionRecord) -> Result<B256, RecordError> {
        RecordStore::beside_journal(self.dir()).put(record)
    }

    fn get_record(&self, hash: &B256) -> Result<AttributionRecord, RecordError> {
        RecordStore::beside_journal(self.dir()).get(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/j"),
            "postgres://app:***@db:5432/j"
        );
        assert_eq!(redact_url("postgres://app@db/j"), "postgres://app@db/j");
        assert_eq!(
            redact_url("postgresql://db/j?user=app&password=s3cret&sslmode=disable"),
            "postgresql://db/j?user=app&password=***&sslmode=disable"
        );
        assert!(is_postgres_url(Path::new("postgresql://db/j")));
        assert!(!is_postgres_url(Path::new("receipts")));
    }
}
