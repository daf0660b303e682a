//! A crash-safe, append-only journal of signed receipts and their settlement state.
//!
//! A serving node signs (or receives) a [`SignedReceipt`] for every answer and must not
//! lose it before it is settled on chain. The journal keeps every receipt and walks it
//! through [`ReceiptState`]: `pending → batched → submitted → confirmed`.
//!
//! # Guarantees
//!
//! - **Acknowledged means durable.** [`Journal::append`], [`Journal::append_batch`] and
//!   [`Journal::set_state`] write their records, call `fdatasync` on the log and only then
//!   return `Ok`. A receipt whose append returned `Ok` survives a crash of the process (and,
//!   as far as the disk honours `fdatasync`, of the machine).
//! - **Group commit.** [`Journal::append_batch`] writes any number of receipts with one
//!   write and one `fdatasync`; they are acknowledged together when it returns. Nothing is
//!   buffered behind the caller's back: every call that returns `Ok` has synced.
//! - **Torn tails are cut, nothing else is.** A crash can leave the last record half
//!   written. On [`Journal::open`] the log is scanned; a bad frame (short header, length
//!   past the end of the file, CRC mismatch) with no valid record anywhere after it is a
//!   torn tail: the file is truncated at the start of that record, synced, and the cut is
//!   reported in [`Journal::recovery`] (and logged with `tracing`). Such a record was never
//!   acknowledged, because its `fdatasync` never returned. A bad frame *followed by* a valid
//!   record, or a frame whose CRC matches but whose content does not parse, is corruption
//!   and [`Journal::open`] fails with [`JournalError::Corrupt`]: acknowledged data is never
//!   dropped silently. (A bit flip inside the very last record cannot be told apart from a
//!   torn write and is cut like one; that is media corruption, which a checksum can detect
//!   but a single copy cannot repair.)
//! - **Idempotent.** Appending a receipt that is already in the journal with the same
//!   content writes nothing and returns [`Appended::AlreadyPresent`]; the same receipt id
//!   with different content is [`JournalError::Duplicate`]. Setting a receipt to the state it
//!   already has writes nothing.
//! - **Forward only.** A state may move forward (steps may be skipped), never back; once a
//!   receipt has a batch id (or a transaction hash) later states must carry the same one.
//!   The one way back undoes a reorg: a confirmed receipt returns to `batched` in its own
//!   batch, or is confirmed again in another transaction of it
//!   ([`ReceiptState::can_become`]). Anything else is [`JournalError::Transition`]. The
//!   same rules are re-checked on recovery.
//! - **One writer.** [`Journal::open`] takes an exclusive lock on `journal.lock` in the
//!   directory; a second open (in this or another process) fails with
//!   [`JournalError::Locked`] after waiting up to [`LOCK_WAIT`] (a process that spawns a
//!   child shares its open files, and so the lock, until the child's `exec`). The lock is
//!   released when the journal is dropped or the process dies.
//! - **Receipts are checked.** Receipts are validated ([`UsageReceipt::validate`]) before
//!   they are written and parsed and validated again on recovery. Signatures are not checked
//!   here (the journal does not know the ledger): call [`SignedReceipt::verify`] first.
//!
//! [`UsageReceipt::validate`]: crate::receipt::UsageReceipt::validate
//!
//! # Format
//!
//! One file, `journal.log` (created with its header under a temporary name and renamed into
//! place): the 8-byte magic `TRIBJNL1`, then records
//!
//! ```text
//! [len: u32 LE][crc: u32 LE][payload: len bytes]     crc = CRC-32 (IEEE) of len ‖ payload
//! payload = b'R' ‖ canonical receipt JSON  (SignedReceipt::to_json)
//!         | b'S' ‖ {"ids":[receipt ids],"state":{"state":"batched","batchId":"0x…"}}
//! ```
//!
//! A state record names several receipts and is applied atomically (all or none). The
//! whole log is read into memory on open and an index is rebuilt; there is no rotation or
//! compaction yet.
//!
//! # Backends
//!
//! [`Journal`] is the local directory journal: one process writes it. [`JournalBackend`]
//! is the interface settlement, the engine and the CLI use, implemented by [`Journal`] and
//! (feature `postgres`) by [`PgJournal`], a journal in PostgreSQL that many processes share;
//! [`open`] picks one from a directory or a `postgres://` URL.

mod backend;
mod error;
#[cfg(feature = "postgres")]
mod off_runtime;
#[cfg(feature = "postgres")]
mod postgres;
mod resync;
mod state;

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

use crate::receipt::SignedReceipt;

pub use backend::{DEFAULT_LEASE, JournalBackend, is_postgres_url, open, redact_url};
pub use error::JournalError;
#[cfg(feature = "postgres")]
pub use postgres::{PgJournal, SCHEMA_VERSION};
pub use state::{ReceiptState, StateKind};

/// The first bytes of every journal file.
const MAGIC: &[u8; 8] = b"TRIBJNL1";
/// File name of the log inside the journal directory.
pub const LOG_FILE: &str = "journal.log";
/// File name of the lock inside the journal directory.
pub const LOCK_FILE: &str = "journal.lock";
/// The largest record payload the journal writes or accepts (64 MiB).
pub const MAX_RECORD: usize = 64 << 20;
/// How long [`Journal::open`] waits for a lock that looks held before it reports
/// [`JournalError::Locked`].
pub const LOCK_WAIT: Duration = Duration::from_millis(250);
const HEADER: usize = 8;
const TAG_RECEIPT: u8 = b'R';
const TAG_STATE: u8 = b'S';

type Result<T, E = JournalError> = std::result::Result<T, E>;

/// What [`Journal::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The receipt was written and synced.
    Written,
    /// The same receipt was already journaled; nothing was written.
    AlreadyPresent,
}

/// What [`Journal::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Valid records read.
    pub records: u64,
    /// Where a torn tail was cut, if one was.
    pub truncated_at: Option<u64>,
    /// How many bytes of torn tail were cut (never acknowledged).
    pub truncated_bytes: u64,
}

/// Counts of receipts by state, and the size of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// All receipts.
    pub receipts: usize,
    /// Pending receipts.
    pub pending: usize,
    /// Batched receipts.
    pub batched: usize,
    /// Submitted receipts.
    pub submitted: usize,
    /// Confirmed receipts.
    pub confirmed: usize,
    /// Records in the log.
    pub records: u64,
    /// Bytes in the log.
    pub bytes: u64,
}

#[derive(Debug)]
struct Entry {
    receipt: SignedReceipt,
    json: String,
    state: ReceiptState,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateRecord {
    ids: Vec<B256>,
    state: ReceiptState,
}

/// The journal: an open, locked directory and an in-memory index of its receipts.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    log_path: PathBuf,
    file: File,
    _lock: File,
    entries: Vec<Entry>,
    index: HashMap<B256, usize>,
    len: u64,
    records: u64,
    recovery: Recovery,
    poisoned: bool,
    /// Settlers' claims on receipts (in memory: one process owns the directory), with when
    /// each runs out; see [`JournalBackend::claim_pending`].
    claims: HashMap<B256, Instant>,
    lease: Duration,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Appends one framed record to `buf`.
fn frame(payload: &[u8], buf: &mut Vec<u8>) -> Result<()> {
    if payload.len() > MAX_RECORD {
        return Err(JournalError::TooLarge(payload.len()));
    }
    // Fits: MAX_RECORD < u32::MAX.
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&h.finalize().to_le_bytes());
    buf.extend_from_slice(payload);
    Ok(())
}

/// The payload of a well-framed record at `pos`, and where the next record starts.
fn frame_at(data: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let head = data.get(pos..pos.checked_add(HEADER)?)?;
    let len_bytes: [u8; 4] = head[..4].try_into().ok()?;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let end = pos + HEADER + len;
    let payload = data.get(pos + HEADER..end)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&len_bytes);
    h.update(payload);
    (h.finalize() == crc).then_some((payload, end))
}

enum Record {
    Receipt(Box<SignedReceipt>, String),
    State(StateRecord),
}

fn decode(payload: &[u8]) -> std::result::Result<Record, String> {
    let (tag, body) = payload.split_first().ok_or("empty record")?;
    let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
    match *tag {
        TAG_RECEIPT => {
            let r = SignedReceipt::from_json(text).map_err(|e| e.to_string())?;
            Ok(Record::Receipt(Box::new(r), text.to_owned()))
        }
        TAG_STATE => serde_json::from_str(text)
            .map(Record::State)
            .map_err(|e| format!("bad state record: {e}")),
        t => Err(format!("unknown record tag {t:#04x}")),
    }
}

impl Journal {
    /// Opens the journal in `dir` (created if missing), takes its lock, and recovers: reads
    /// every record, cuts a torn tail, and rebuilds the index. See the [module docs](self).
    pub fn open(dir: impl AsRef<Path>) -> Result<Journal> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;

        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // A lock can look held for a moment after its owner dropped it: a process that
        // forks (to spawn a child) shares the lock until the child's exec closes it. Retry
        // briefly before reporting a live writer.
        let deadline = Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(JournalError::Locked { path: lock_path });
                }
                Err(TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
            }
        }

        let log_path = dir.join(LOG_FILE);
        if !log_path.exists() {
            // Create the log with its magic under a temporary name and rename it into place,
            // so that `journal.log` never exists without its header; then make the rename
            // durable.
            let tmp = dir.join(format!("{LOG_FILE}.tmp"));
            File::create(&tmp)
                .and_then(|mut f| f.write_all(MAGIC).and_then(|()| f.sync_all()))
                .and_then(|()| std::fs::rename(&tmp, &log_path))
                .map_err(io_err(&log_path))?;
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&dir))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let data = std::fs::read(&log_path).map_err(io_err(&log_path))?;

        let mut journal = Journal {
            dir,
            log_path,
            file,
            _lock: lock,
            entries: Vec::new(),
            index: HashMap::new(),
            len: 0,
            records: 0,
            recovery: Recovery::default(),
            poisoned: false,
            claims: HashMap::new(),
            lease: DEFAULT_LEASE,
        };
        journal.recover(&data)?;
        Ok(journal)
    }

    fn corrupt(&self, offset: usize, reason: impl Into<String>) -> JournalError {
        JournalError::Corrupt {
            path: self.log_path.clone(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }

    fn recover(&mut self, data: &[u8]) -> Result<()> {
        if data.len() < HEADER {
            // Only a log written by hand or by an older writer can be this short.
            if !MAGIC.starts_with(data) {
                return Err(self.corrupt(0, "not a Tribute journal (bad magic)"));
            }
            self.file.set_len(0).map_err(io_err(&self.log_path))?;
            self.file
                .write_all(MAGIC)
                .and_then(|()| self.file.sync_all())
                .map_err(io_err(&self.log_path))?;
            self.len = HEADER as u64;
            return Ok(());
        }
        if &data[..HEADER] != MAGIC {
            return Err(self.corrupt(0, "not a Tribute journal (bad magic)"));
        }
        let mut pos = HEADER;
        while pos < data.len() {
            let Some((payload, next)) = frame_at(data, pos) else {
                let mut work = resync::ScanWork::default();
                if let Some(good) = resync::first_frame(data, pos + 1, &mut work) {
                    return Err(self.corrupt(
                        pos,
                        format!("bad record followed by a valid one at byte {good}"),
                    ));
                }
                let cut = (data.len() - pos) as u64;
                self.file
                    .set_len(pos as u64)
                    .and_then(|()| self.file.sync_all())
                    .map_err(io_err(&self.log_path))?;
                tracing::warn!(
                    path = %self.log_path.display(),
                    offset = pos,
                    bytes = cut,
                    "journal: cut a torn tail (an unacknowledged write)"
                );
                self.recovery.truncated_at = Some(pos as u64);
                self.recovery.truncated_bytes = cut;
                break;
            };
            let record = decode(payload).map_err(|r| self.corrupt(pos, r))?;
            self.apply(record)
                .map_err(|e| self.corrupt(pos, e.to_string()))?;
            self.records += 1;
            pos = next;
        }
        self.len = pos as u64;
        self.recovery.records = self.records;
        Ok(())
    }

    /// Applies a decoded record to the index (recovery; writes check first).
    fn apply(&mut self, record: Record) -> Result<()> {
        match record {
            Record::Receipt(receipt, json) => {
                let id = receipt.receipt.receiptId;
                if let Some(&i) = self.index.get(&id) {
                    if self.entries[i].json != json {
                        return Err(JournalError::Duplicate { receipt_id: id });
                    }
                    return Ok(());
                }
                self.index.insert(id, self.entries.len());
                self.entries.push(Entry {
                    receipt: *receipt,
                    json,
                    state: ReceiptState::Pending,
                });
            }
            Record::State(s) => {
                let idx = self.check_transition(&s.ids, &s.state)?;
                for i in idx {
                    self.entries[i].state = s.state;
                }
            }
        }
        Ok(())
    }

    /// Checks that every id exists and may move to `state`; returns the entries that change.
    fn check_transition(&self, ids: &[B256], state: &ReceiptState) -> Result<Vec<usize>> {
        let mut change = Vec::new();
        for id in ids {
            let &i = self
                .index
                .get(id)
                .ok_or(JournalError::UnknownReceipt(*id))?;
            let from = self.entries[i].state;
            if !from.can_become(state) {
                return Err(JournalError::Transition {
                    receipt_id: *id,
                    from: Box::new(from),
                    to: Box::new(*state),
                });
            }
            if from != *state && !change.contains(&i) {
                change.push(i);
            }
        }
        Ok(change)
    }

    /// Writes `buf` (framed records) and syncs; on failure restores the old end of the log or
    /// poisons the journal.
    fn write_synced(&mut self, buf: &[u8], records: u64) -> Result<()> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if let Err(e) = self.file.write_all(buf) {
            if self.file.set_len(self.len).is_err() {
                self.poisoned = true;
            }
            return Err(io_err(&self.log_path)(e));
        }
        if let Err(e) = self.file.sync_data() {
            // After a failed fsync the page cache can no longer be trusted.
            self.poisoned = true;
            return Err(io_err(&self.log_path)(e));
        }
        self.len += buf.len() as u64;
        self.records += records;
        Ok(())
    }

    /// Validates and journals one receipt; returns once it is on disk (acknowledged).
    /// Idempotent: the same receipt again writes nothing.
    pub fn append(&mut self, receipt: &SignedReceipt) -> Result<Appended> {
        let written = self.append_batch(std::slice::from_ref(receipt))?;
        Ok(if written == 1 {
            Appended::Written
        } else {
            Appended::AlreadyPresent
        })
    }

    /// Validates and journals receipts with one write and one `fdatasync` (group commit);
    /// returns how many were new. All are acknowledged when it returns `Ok`; if it fails,
    /// none is. Receipts already journaled (with the same content) are skipped.
    pub fn append_batch(&mut self, receipts: &[SignedReceipt]) -> Result<usize> {
        let mut buf = Vec::new();
        let mut new: Vec<(SignedReceipt, String)> = Vec::new();
        let mut seen: HashMap<B256, usize> = HashMap::new();
        for r in receipts {
            r.receipt.validate()?;
            let id = r.receipt.receiptId;
            let json = r.to_json();
            let existing = match self.index.get(&id) {
                Some(&i) => Some(self.entries[i].json.as_str()),
                None => seen.get(&id).map(|&k| new[k].1.as_str()),
            };
            match existing {
                Some(j) if j == json => continue,
                Some(_) => return Err(JournalError::Duplicate { receipt_id: id }),
                None => {}
            }
            let mut payload = Vec::with_capacity(json.len() + 1);
            payload.push(TAG_RECEIPT);
            payload.extend_from_slice(json.as_bytes());
            frame(&payload, &mut buf)?;
            seen.insert(id, new.len());
            new.push((r.clone(), json));
        }
        if new.is_empty() {
            return Ok(0);
        }
        self.write_synced(&buf, new.len() as u64)?;
        let n = new.len();
        for (receipt, json) in new {
            self.index
                .insert(receipt.receipt.receiptId, self.entries.len());
            self.entries.push(Entry {
                receipt,
                json,
                state: ReceiptState::Pending,
            });
        }
        Ok(n)
    }

    /// Moves receipts to `state` in one atomic, synced record; returns how many changed.
    /// Receipts already in `state` are left alone (nothing is written if none changes);
    /// an unknown id or a backward move refuses the whole call.
    pub fn set_state(&mut self, ids: &[B256], state: ReceiptState) -> Result<usize> {
        let change = self.check_transition(ids, &state)?;
        if change.is_empty() {
            return Ok(0);
        }
        let rec = StateRecord {
            ids: change
                .iter()
                .map(|&i| self.entries[i].receipt.receipt.receiptId)
                .collect(),
            state,
        };
        let mut payload = vec![TAG_STATE];
        // Serialising hashes and numbers cannot fail; map it anyway rather than panic.
        serde_json::to_writer(&mut payload, &rec)
            .map_err(|e| io_err(&self.log_path)(std::io::Error::other(e)))?;
        let mut buf = Vec::new();
        frame(&payload, &mut buf)?;
        self.write_synced(&buf, 1)?;
        for &i in &change {
            self.entries[i].state = state;
        }
        Ok(change.len())
    }

    /// The receipt with this id.
    pub fn get(&self, id: &B256) -> Option<&SignedReceipt> {
        self.index.get(id).map(|&i| &self.entries[i].receipt)
    }

    /// The state of the receipt with this id.
    pub fn state(&self, id: &B256) -> Option<&ReceiptState> {
        self.index.get(id).map(|&i| &self.entries[i].state)
    }

    /// Receipts and their states in the order they were journaled, all of them or those of
    /// one kind.
    pub fn receipts(
        &self,
        kind: Option<StateKind>,
    ) -> impl Iterator<Item = (&SignedReceipt, &ReceiptState)> {
        self.entries
            .iter()
            .filter(move |e| kind.is_none_or(|k| e.state.kind() == k))
            .map(|e| (&e.receipt, &e.state))
    }

    /// Pending receipts (not yet batched), oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &SignedReceipt> {
        self.receipts(Some(StateKind::Pending)).map(|(r, _)| r)
    }

    /// How many receipts the journal holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the journal holds no receipt.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counts by state and the log's size.
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            receipts: self.entries.len(),
            records: self.records,
            bytes: self.len,
            ..Stats::default()
        };
        for e in &self.entries {
            match e.state.kind() {
                StateKind::Pending => s.pending += 1,
                StateKind::Batched => s.batched += 1,
                StateKind::Submitted => s.submitted += 1,
                StateKind::Confirmed => s.confirmed += 1,
            }
        }
        s
    }

    /// What recovery found when the journal was opened.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_damage() {
        let mut buf = MAGIC.to_vec();
        frame(b"Shello", &mut buf).expect("small record");
        let (p, end) = frame_at(&buf, HEADER).expect("valid frame");
        assert_eq!((p, end), (&b"Shello"[..], buf.len()));
        for cut in HEADER..buf.len() {
            assert!(frame_at(&buf[..cut], HEADER).is_none());
        }
        let mut bad = buf.clone();
        bad[HEADER + 9] ^= 1;
        assert!(frame_at(&bad, HEADER).is_none());
        // An all-zero header (a preallocated, never-written tail) is not a record.
        assert!(frame_at(&[0u8; 16], 0).is_none());
    }
}
