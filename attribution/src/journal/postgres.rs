//! The receipt journal in PostgreSQL (feature `postgres`): one table that every serving
//! process journals into and every settler claims work from.
//!
//! # Schema (version 1), created on first open
//! - `tribute_journal_schema_version(version)`: the migrations applied (apart from the
//!   knowledge base's `tribute_schema_version`, so both may share a database);
//! - `tribute_receipts`: one row per receipt in journal order (`seq`): its id (unique), payer,
//!   nonce, canonical JSON (byte-exact, so a repeated append is recognised), its state as
//!   columns (`state`, `batch_id`, `tx_hash`, `block`, checked to agree with each other) and
//!   the settler's claim (`claimed_by`, `claim_expires`);
//! - `tribute_attribution_records(hash, record)`: attribution records by content hash.
//!
//! Migrations run inside one transaction under an advisory lock, so many processes may
//! open a new database at once; a schema newer than this build is refused
//! ([`JournalError::SchemaTooNew`]).
//!
//! # Semantics
//! The same as the directory journal ([`super::Journal`]): an append returns once its
//! transaction has committed (with `synchronous_commit = on` for the session, whatever the
//! server's default); the same receipt again writes nothing, the same id with other content
//! is refused; state changes take row locks (`FOR UPDATE`, in `seq` order) and are checked
//! against [`ReceiptState::can_become`] before they commit, so of two settlers racing to
//! batch a receipt one wins and the other's whole call is refused. Claims use
//! `FOR UPDATE SKIP LOCKED` and a lease (`claim_expires`); see
//! [`JournalBackend`](super::JournalBackend). A lost connection is re-established on the
//! next call (a failover); the call it broke failed and wrote nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use alloy_primitives::{Address, B256, keccak256};
use postgres::{Client, NoTls, Row};

use super::backend::{DEFAULT_LEASE, JournalBackend, redact_url};
use super::{JournalError, ReceiptState, Recovery, StateKind, Stats};
use crate::receipt::SignedReceipt;
use crate::record::{AttributionRecord, RecordError};

type Result<T, E = JournalError> = std::result::Result<T, E>;

/// The newest journal schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = 1;

/// Serialises first opens and migrations across processes (the index uses another key).
const MIGRATION_LOCK: i64 = 7_215_046_311;

const SCHEMA_V1: &str = "
    CREATE TABLE tribute_receipts (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        receipt_id bytea NOT NULL UNIQUE CHECK (length(receipt_id) = 32),
        payer bytea NOT NULL,
        nonce numeric(20, 0) NOT NULL,
        receipt text NOT NULL,
        state text NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'batched', 'submitted', 'confirmed')),
        batch_id bytea,
        tx_hash bytea,
        block bigint,
        claimed_by text,
        claim_expires timestamptz,
        journaled_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        CHECK ((state = 'pending') = (batch_id IS NULL)),
        CHECK ((state IN ('submitted', 'confirmed')) = (tx_hash IS NOT NULL)),
        CHECK ((state = 'confirmed') = (block IS NOT NULL)));
    CREATE INDEX tribute_receipts_pending ON tribute_receipts (payer, seq)
        WHERE state = 'pending';
    CREATE INDEX tribute_receipts_unfinished ON tribute_receipts (payer, batch_id)
        WHERE state IN ('batched', 'submitted');
    CREATE INDEX tribute_receipts_state ON tribute_receipts (state);
    CREATE TABLE tribute_attribution_records (
        hash bytea PRIMARY KEY CHECK (length(hash) = 32),
        record text NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now());
    INSERT INTO tribute_journal_schema_version VALUES (1);";

/// Columns [`PgJournal::entry_from_row`] reads.
const ENTRY: &str = "seq, receipt, state, batch_id, tx_hash, block";

/// Whether a row's claim is live (held by someone until a later time).
const CLAIM_LIVE: &str = "(claim_expires IS NOT NULL AND claim_expires >= now())";

/// The shared receipt journal in PostgreSQL; see the [module docs](self).
///
/// Its driver is blocking and cannot be called on a thread that drives a tokio runtime;
/// [`super::open`] wraps it so that it can (async settlers, servers): prefer it to
/// [`PgJournal::connect`] in async code.
pub struct PgJournal {
    url: String,
    config: postgres::Config,
    client: Mutex<Client>,
    /// This journal's name in `claimed_by` (process id and a random tag).
    settler: String,
    lease: Duration,
    recovery: Recovery,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal")
            .field("url", &self.url)
            .field("settler", &self.settler)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// The driver's message and its causes ("error connecting to server: Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

fn kind_name(state: &ReceiptState) -> &'static str {
    state.kind().as_str()
}

fn ids_bytes(ids: &[B256]) -> Vec<Vec<u8>> {
    ids.iter().map(|id| id.to_vec()).collect()
}

impl PgJournal {
    /// Connects to `url` (10 s timeout unless the URL sets one) and applies pending
    /// migrations.
    pub fn connect(url: &str) -> Result<Self> {
        let shown = redact_url(url);
        let mut config: postgres::Config = url.parse().map_err(|e| JournalError::InvalidUrl {
            url: shown.clone(),
            reason: error_chain(&e),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let client = Self::open_session(&config, &shown)?;
        static TAG: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let tag = keccak256(format!(
            "{}-{nanos}-{}",
            std::process::id(),
            TAG.fetch_add(1, Ordering::Relaxed)
        ));
        let mut journal = PgJournal {
            settler: format!(
                "pid{}-{}",
                std::process::id(),
                tag[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
            url: shown,
            config,
            client: Mutex::new(client),
            lease: DEFAULT_LEASE,
            recovery: Recovery::default(),
        };
        journal.migrate()?;
        let row = journal
            .client()?
            .query_one("SELECT count(*) FROM tribute_receipts", &[])
            .map_err(journal.db())?;
        journal.recovery.records = row.get::<_, i64>(0) as u64;
        Ok(journal)
    }

    fn open_session(config: &postgres::Config, shown: &str) -> Result<Client> {
        let mut client = config
            .connect(NoTls)
            .map_err(|e| JournalError::PostgresUnreachable {
                url: shown.to_owned(),
                reason: error_chain(&e),
            })?;
        // Acknowledged means durable, whatever the server's default.
        client
            .batch_execute("SET synchronous_commit = on")
            .map_err(|e| JournalError::Database {
                url: shown.to_owned(),
                reason: error_chain(&e),
            })?;
        Ok(client)
    }

    /// This journal's settler name, as written into `claimed_by`.
    pub fn settler(&self) -> &str {
        &self.settler
    }

    /// Maps a driver error to [`JournalError::Database`] (the URL without its password).
    fn db(&self) -> impl Fn(postgres::Error) -> JournalError + '_ {
        move |e| JournalError::Database {
            url: self.url.clone(),
            reason: error_chain(&e),
        }
    }

    /// The connection, re-established first if the last one was lost.
    fn client(&self) -> Result<MutexGuard<'_, Client>> {
        // A panic while holding the connection leaves no half-done write (transactions).
        let mut client = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if client.is_closed() {
            tracing::warn!(url = %self.url, "journal: reconnecting to Postgres");
            *client = Self::open_session(&self.config, &self.url)?;
        }
        Ok(client)
    }

    fn migrate(&self) -> Result<()> {
        let db = self.db();
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(&db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(&db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS tribute_journal_schema_version (version int NOT NULL)",
        )
        .map_err(&db)?;
        let found: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM tribute_journal_schema_version",
                &[],
            )
            .map_err(&db)?
            .get(0);
        if found > SCHEMA_VERSION {
            return Err(JournalError::SchemaTooNew {
                url: self.url.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < 1 {
            tx.batch_execute(SCHEMA_V1).map_err(&db)?;
        }
        tx.commit().map_err(&db)
    }

    fn corrupt(&self, seq: i64, reason: impl Into<String>) -> JournalError {
        JournalError::Corrupt {
            path: format!("{} (tribute_receipts, seq)", self.url).into(),
            offset: seq as u64,
            reason: reason.into(),
        }
    }

    fn hash_col(&self, seq: i64, what: &str, bytes: Option<Vec<u8>>) -> Result<Option<B256>> {
        bytes
            .map(|b| {
                B256::try_from(b.as_slice())
                    .map_err(|_| self.corrupt(seq, format!("{what} of {} bytes", b.len())))
            })
            .transpose()
    }

    /// The state from its columns (`state`, `batch_id`, `tx_hash`, `block` at `at..`).
    fn state_from_row(&self, row: &Row, at: usize, seq: i64) -> Result<ReceiptState> {
        let db = self.db();
        let kind: String = row.try_get(at).map_err(&db)?;
        let batch = self.hash_col(seq, "batch_id", row.try_get(at + 1).map_err(&db)?)?;
        let tx = self.hash_col(seq, "tx_hash", row.try_get(at + 2).map_err(&db)?)?;
        let block: Option<i64> = row.try_get(at + 3).map_err(&db)?;
        let kind: StateKind = kind.parse().map_err(|_| self.corrupt(seq, "bad state"))?;
        let missing = || self.corrupt(seq, format!("a {kind} receipt lacks its batch or tx"));
        Ok(match kind {
            StateKind::Pending => ReceiptState::Pending,
            StateKind::Batched => ReceiptState::Batched {
                batch_id: batch.ok_or_else(missing)?,
            },
            StateKind::Submitted => ReceiptState::Submitted {
                batch_id: batch.ok_or_else(missing)?,
                tx_hash: tx.ok_or_else(missing)?,
            },
            StateKind::Confirmed => ReceiptState::Confirmed {
                batch_id: batch.ok_or_else(missing)?,
                tx_hash: tx.ok_or_else(missing)?,
                block: block
                    .and_then(|b| u64::try_from(b).ok())
                    .ok_or_else(missing)?,
            },
        })
    }

    fn receipt_from_json(&self, seq: i64, json: &str) -> Result<SignedReceipt> {
        SignedReceipt::from_json(json).map_err(|e| self.corrupt(seq, e.to_string()))
    }

    /// A receipt and its state from the columns of [`ENTRY`].
    fn entry_from_row(&self, row: &Row) -> Result<(SignedReceipt, ReceiptState)> {
        let db = self.db();
        let seq: i64 = row.try_get(0).map_err(&db)?;
        let json: String = row.try_get(1).map_err(&db)?;
        Ok((
            self.receipt_from_json(seq, &json)?,
            self.state_from_row(row, 2, seq)?,
        ))
    }

    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    fn records_place(&self) -> std::path::PathBuf {
        format!("{} (tribute_attribution_records)", self.url).into()
    }

    fn record_db(&self) -> impl Fn(postgres::Error) -> RecordError + '_ {
        move |e| RecordError::Database {
            url: self.url.clone(),
            reason: error_chain(&e),
        }
    }

    fn record_client(&self) -> Result<MutexGuard<'_, Client>, RecordError> {
        self.client().map_err(|e| RecordError::Database {
            url: self.url.clone(),
            reason: e.to_string(),
        })
    }
}

impl JournalBackend for PgJournal {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn append_batch(&mut self, receipts: &[SignedReceipt]) -> Result<usize> {
        // The same checks as the directory journal, before anything is sent.
        let mut seen: HashMap<B256, String> = HashMap::new();
        let (mut ids, mut payers, mut nonces, mut jsons) = (vec![], vec![], vec![], vec![]);
        for r in receipts {
            r.receipt.validate()?;
            let id = r.receipt.receiptId;
            let json = r.to_json();
            match seen.get(&id) {
                Some(j) if *j == json => continue,
                Some(_) => return Err(JournalError::Duplicate { receipt_id: id }),
                None => {}
            }
            seen.insert(id, json.clone());
            ids.push(id.to_vec());
            payers.push(r.receipt.payer.to_vec());
            nonces.push(r.receipt.nonce.to_string());
            jsons.push(json);
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let db = self.db();
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(&db)?;
        let inserted: HashSet<Vec<u8>> = tx
            .query(
                "INSERT INTO tribute_receipts (receipt_id, payer, nonce, receipt)
                 SELECT id, payer, nonce::numeric, receipt
                 FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::text[])
                      WITH ORDINALITY AS t(id, payer, nonce, receipt, n)
                 ORDER BY n
                 ON CONFLICT (receipt_id) DO NOTHING RETURNING receipt_id",
                &[&ids, &payers, &nonces, &jsons],
            )
            .map_err(&db)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if inserted.len() < ids.len() {
            // Already journaled: the same content is a no-op, other content a refusal
            // (the transaction rolls back, so none of this call is written).
            let rows = tx
                .query(
                    "SELECT receipt_id, receipt FROM tribute_receipts WHERE receipt_id = ANY($1)",
                    &[&ids],
                )
                .map_err(&db)?;
            for row in rows {
                let id: Vec<u8> = row.get(0);
                let stored: String = row.get(1);
                let id = B256::try_from(id.as_slice()).unwrap_or_default();
                if !inserted.contains(id.as_slice()) && seen.get(&id) != Some(&stored) {
                    return Err(JournalError::Duplicate { receipt_id: id });
                }
            }
        }
        tx.commit().map_err(&db)?;
        Ok(inserted.len())
    }

    fn set_state(&mut self, ids: &[B256], state: ReceiptState) -> Result<usize> {
        let db = self.db();
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(&db)?;
        // Locks in `seq` order, as every writer does, so two settlers never deadlock.
        let rows = tx
            .query(
                &format!(
                    "SELECT {ENTRY}, receipt_id FROM tribute_receipts
                     WHERE receipt_id = ANY($1) ORDER BY seq FOR UPDATE"
                ),
                &[&ids_bytes(ids)],
            )
            .map_err(&db)?;
        let mut current: HashMap<B256, ReceiptState> = HashMap::new();
        for row in &rows {
            let seq: i64 = row.get(0);
            let id: Vec<u8> = row.get(6);
            let id = self
                .hash_col(seq, "receipt_id", Some(id))?
                .unwrap_or_default();
            current.insert(id, self.state_from_row(row, 2, seq)?);
        }
        let mut change: Vec<B256> = Vec::new();
        for id in ids {
            let from = current.get(id).ok_or(JournalError::UnknownReceipt(*id))?;
            if !from.can_become(&state) {
                return Err(JournalError::Transition {
                    receipt_id: *id,
                    from: Box::new(*from),
                    to: Box::new(state),
                });
            }
            if *from != state && !change.contains(id) {
                change.push(*id);
            }
        }
        if change.is_empty() {
            return Ok(0);
        }
        let block = match state {
            ReceiptState::Confirmed { block, .. } => {
                Some(i64::try_from(block).map_err(|_| JournalError::Database {
                    url: self.url.clone(),
                    reason: format!("block number {block} does not fit a bigint"),
                })?)
            }
            _ => None,
        };
        // A confirmed receipt needs no settler any more; any other move renews the mover's
        // claim.
        tx.execute(
            "UPDATE tribute_receipts SET state = $2, batch_id = $3, tx_hash = $4, block = $5,
                 updated_at = now(),
                 claim_expires = CASE WHEN $2 = 'confirmed' THEN NULL
                     WHEN claimed_by = $6 THEN now() + make_interval(secs => $7)
                     ELSE claim_expires END,
                 claimed_by = CASE WHEN $2 = 'confirmed' THEN NULL ELSE claimed_by END
             WHERE receipt_id = ANY($1)",
            &[
                &ids_bytes(&change),
                &kind_name(&state),
                &state.batch_id().map(|b| b.to_vec()),
                &state.tx_hash().map(|t| t.to_vec()),
                &block,
                &self.settler,
                &self.lease_secs(),
            ],
        )
        .map_err(&db)?;
        tx.commit().map_err(&db)?;
        Ok(change.len())
    }

    fn receipt(&self, id: &B256) -> Result<Option<(SignedReceipt, ReceiptState)>> {
        let rows = self
            .client()?
            .query(
                &format!("SELECT {ENTRY} FROM tribute_receipts WHERE receipt_id = $1"),
                &[&id.as_slice()],
            )
            .map_err(self.db())?;
        rows.first().map(|r| self.entry_from_row(r)).transpose()
    }

    fn list(&self, kind: Option<StateKind>) -> Result<Vec<(SignedReceipt, ReceiptState)>> {
        let rows = self
            .client()?
            .query(
                &format!(
                    "SELECT {ENTRY} FROM tribute_receipts
                     WHERE $1::text IS NULL OR state = $1 ORDER BY seq"
                ),
                &[&kind.map(StateKind::as_str)],
            )
            .map_err(self.db())?;
        rows.iter().map(|r| self.entry_from_row(r)).collect()
    }

    fn summary(&self) -> Result<Stats> {
        let row = self
            .client()?
            .query_one(
                "SELECT count(*),
                    count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'batched'),
                    count(*) FILTER (WHERE state = 'submitted'),
                    count(*) FILTER (WHERE state = 'confirmed'),
                    pg_total_relation_size('tribute_receipts')
                 FROM tribute_receipts",
                &[],
            )
            .map_err(self.db())?;
        let n = |i: usize| row.get::<_, i64>(i) as usize;
        Ok(Stats {
            receipts: n(0),
            pending: n(1),
            batched: n(2),
            submitted: n(3),
            confirmed: n(4),
            records: n(0) as u64,
            bytes: n(5) as u64,
        })
    }

    fn recovered(&self) -> Recovery {
        self.recovery
    }

    fn max_nonce(&self) -> Result<Option<u64>> {
        let row = self
            .client()?
            .query_one("SELECT max(nonce)::text FROM tribute_receipts", &[])
            .map_err(self.db())?;
        let max: Option<String> = row.get(0);
        max.map(|m| m.parse().map_err(|_| self.corrupt(0, format!("nonce {m}"))))
            .transpose()
    }

    fn claim_pending(&mut self, payer: Address, limit: usize) -> Result<Vec<SignedReceipt>> {
        // The work queue: rows another settler is claiming right now are skipped, not
        // waited for, and rows with a live lease are left to their holder.
        let rows = self
            .client()?
            .query(
                &format!(
                    "WITH c AS (
                         SELECT seq FROM tribute_receipts
                         WHERE state = 'pending' AND payer = $1 AND NOT {CLAIM_LIVE}
                         ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)
                     UPDATE tribute_receipts r
                     SET claimed_by = $3, claim_expires = now() + make_interval(secs => $4)
                     FROM c WHERE r.seq = c.seq RETURNING r.seq, r.receipt"
                ),
                &[
                    &payer.as_slice(),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                    &self.settler,
                    &self.lease_secs(),
                ],
            )
            .map_err(self.db())?;
        let mut claimed: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        claimed.sort_by_key(|(seq, _)| *seq);
        claimed
            .iter()
            .map(|(seq, json)| self.receipt_from_json(*seq, json))
            .collect()
    }

    fn claim_unfinished(&mut self, payer: Address) -> Result<Vec<(B256, Vec<SignedReceipt>)>> {
        let db = self.db();
        let mut client = self.client()?;
        let candidates: Vec<Vec<u8>> = client
            .query(
                &format!(
                    "SELECT DISTINCT batch_id FROM tribute_receipts
                     WHERE payer = $1 AND state IN ('batched', 'submitted') AND NOT {CLAIM_LIVE}
                     ORDER BY batch_id"
                ),
                &[&payer.as_slice()],
            )
            .map_err(&db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut batches = Vec::new();
        for batch in candidates {
            // A batch is claimed whole or not at all: lock all its rows, and leave it if
            // any of them is held.
            let mut tx = client.transaction().map_err(&db)?;
            let rows = tx
                .query(
                    &format!(
                        "SELECT seq, receipt, {CLAIM_LIVE} FROM tribute_receipts
                         WHERE batch_id = $1 AND payer = $2 AND state IN ('batched', 'submitted')
                         ORDER BY seq FOR UPDATE"
                    ),
                    &[&batch, &payer.as_slice()],
                )
                .map_err(&db)?;
            if rows.is_empty() || rows.iter().any(|r| r.get::<_, bool>(2)) {
                continue;
            }
            let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            tx.execute(
                "UPDATE tribute_receipts
                 SET claimed_by = $2, claim_expires = now() + make_interval(secs => $3)
                 WHERE seq = ANY($1)",
                &[&seqs, &self.settler, &self.lease_secs()],
            )
            .map_err(&db)?;
            tx.commit().map_err(&db)?;
            let receipts = rows
                .iter()
                .map(|r| self.receipt_from_json(r.get(0), r.get(1)))
                .collect::<Result<Vec<_>>>()?;
            let seq = seqs.first().copied().unwrap_or_default();
            let batch = self
                .hash_col(seq, "batch_id", Some(batch))?
                .unwrap_or_default();
            batches.push((batch, receipts));
        }
        Ok(batches)
    }

    fn release(&mut self, ids: &[B256]) -> Result<()> {
        self.client()?
            .execute(
                "UPDATE tribute_receipts SET claimed_by = NULL, claim_expires = NULL
                 WHERE receipt_id = ANY($1) AND claimed_by = $2",
                &[&ids_bytes(ids), &self.settler],
            )
            .map_err(self.db())?;
        Ok(())
    }

    fn set_lease(&mut self, lease: Duration) {
        self.lease = lease;
    }

    fn put_record(&mut self, record: &AttributionRecord) -> Result<B256, RecordError> {
        let json = record.to_json();
        let hash = keccak256(json.as_bytes());
        self.record_client()?
            .execute(
                "INSERT INTO tribute_attribution_records (hash, record) VALUES ($1, $2)
                 ON CONFLICT (hash) DO NOTHING",
                &[&hash.as_slice(), &json],
            )
            .map_err(self.record_db())?;
        Ok(hash)
    }

    fn get_record(&self, hash: &B256) -> Result<AttributionRecord, RecordError> {
        let rows = self
            .record_client()?
            .query(
                "SELECT record FROM tribute_attribution_records WHERE hash = $1",
                &[&hash.as_slice()],
            )
            .map_err(self.record_db())?;
        let Some(row) = rows.first() else {
            return Err(RecordError::Missing {
                hash: *hash,
                path: self.records_place(),
            });
        };
        let json: String = row.get(0);
        let actual = keccak256(json.as_bytes());
        if actual != *hash {
            return Err(RecordError::Altered {
                expected: *hash,
                actual,
                path: self.records_place(),
            });
        }
        AttributionRecord::from_json(*hash, json.as_bytes())
    }
}
