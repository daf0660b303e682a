//! A knowledge base in PostgreSQL with pgvector (feature `postgres`), shared by every
//! process that opens the same URL.
//!
//! # Schema (version 3), created on first open
//! - `tribute_schema_version(version)`: the migrations applied;
//! - `tribute_meta(key, value jsonb)`: the embedder (model id, dimension) and chunker
//!   settings the knowledge base was created with;
//! - `tribute_documents`: one row per live document (exact duplicates included), in
//!   ingest order (`seq`), with every attribution field; `datanet`, `contributor` and
//!   `content_hash` are indexed;
//! - `tribute_chunks`: one row per live chunk: text, byte span, content hash, the
//!   document's datanet and contributor (copied so filters need no join), the embedding
//!   (`vector(dim)` with an HNSW cosine index), a generated `tsvector` (GIN index) and its
//!   token count `dl` (for BM25's length normalisation), and (version 2) its
//!   [`Locator`](crate::Locator) as `locator jsonb` (null for chunks written by version 1);
//! - (version 3) `tribute_terms(lexeme, df, max_tf, min_dl)` and `tribute_corpus(chunks,
//!   tokens)`: BM25's document frequencies and mean length, kept exact by triggers on
//!   `tribute_chunks`, and per-term bounds for pruning the lexical leg.
//!
//! # Read replicas
//! [`PgBackend::connect_with_replica`] sends searches to a streaming replica (a standby
//! made with `pg_basebackup -R`, or a managed read replica) and everything else (ingest,
//! deletes, counts, document lookups, migrations) to the primary. A replica applies the
//! primary's WAL asynchronously, so a search right after a write may not see it yet (for
//! as long as the replica lags: usually milliseconds, longer under load or after a network
//! fault); an app that must read its own writes searches without a replica. A replica that
//! cannot be reached fails the open ([`Error::PostgresUnreachable`]). A search that finds
//! the replica connection lost (a restart, a failover) connects again and runs once more;
//! a replica still down is [`Error::PostgresUnreachable`].
//!
//! Migrations run on open inside one transaction under an advisory lock, so many
//! processes may open a new database at once. A schema newer than this build is refused
//! ([`Error::SchemaTooNew`]) without touching it.
//!
//! # Search
//! One SQL statement runs both legs and the same fusion as the local index
//! ([`crate::Fusion`], tie-broken by ingest order), with the same filters. Dense search
//! uses the HNSW index with `hnsw.iterative_scan = relaxed_order`, so a filtered search
//! still returns `k` rows. The lexical leg is BM25 computed in SQL over Postgres full text
//! (English stemming, the query's terms OR-ed, the local index's IDF and saturation formula
//! with its `k1`/`b`; document frequencies and the mean length from the statistics tables,
//! term frequencies from the `tsvector`, document lengths from a stored token count). It differs from tantivy's only
//! in tokenisation (Postgres's English parser and stop words vs tantivy's) and in exact
//! rather than quantised document lengths (see `docs/SCALING.md`).
//!
//! # Writes
//! An ingest plans and embeds outside the database, then writes each group of chunks in
//! one transaction with binary `COPY`; a failure leaves nothing half-written. Writers
//! take a transaction-scoped advisory lock, and a document id written by two processes
//! at once ends with the last writer's version. Near-duplicate detection is local-only.

mod ingest;
mod schema;
mod search;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use postgres::Client;

use crate::backend::{Backend, SearchSpec};
use crate::chunker::ChunkerConfig;
use crate::document::Document;
use crate::embedder::Embedder;
use crate::error::{Error, Result};
use crate::index::{Chunk, DocumentRecord, Hit, IndexConfig, IngestProgress, IngestReport};
use crate::types::DocId;

/// What [`Backend::verify`] counts: documents whose chunk count is off, chunks without a
/// vector (`$1`: the knowledge base has an embedder), terms whose stored document
/// frequency differs from a recount (or whose bounds no longer hold), and whether the
/// corpus counts are right.
const VERIFY: &str = "SELECT
    (SELECT count(*) FROM tribute_documents d WHERE d.chunks <>
        (SELECT count(*) FROM tribute_chunks c WHERE c.doc_id = d.doc_id)),
    (SELECT count(*) FROM tribute_chunks WHERE embedding IS NULL AND $1),
    (SELECT count(*) FROM
        (SELECT u.lexeme, count(*) AS df, max(coalesce(array_length(u.positions, 1), 1)) AS max_tf,
                min(c.dl) AS min_dl
         FROM tribute_chunks c, unnest(c.tsv) u GROUP BY 1) e
        FULL JOIN tribute_terms t USING (lexeme)
        WHERE e.df IS DISTINCT FROM t.df OR t.max_tf < e.max_tf OR t.min_dl > e.min_dl),
    (SELECT coalesce(bool_and(s.chunks = a.chunks AND s.tokens = a.tokens) AND count(*) = 1, false)
     FROM tribute_corpus s, (SELECT count(*) AS chunks, coalesce(sum(dl), 0) AS tokens
                             FROM tribute_chunks) a)";

/// The newest schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = 3;

/// A knowledge base stored in PostgreSQL + pgvector: the [`Backend`] behind
/// `Index::open("postgres://…")`.
pub struct PgBackend {
    url: String,
    client: Mutex<Client>,
    /// Where searches go when a replica is configured: its URL as given (to reconnect),
    /// as shown, and the connection.
    replica: Option<Replica>,
    embedder: Option<Arc<dyn Embedder>>,
    config: IndexConfig,
    /// Dimension of the stored vectors (0: a BM25-only knowledge base).
    dim: usize,
    chunker: ChunkerConfig,
    /// Counts as of the last open or write.
    counts: (usize, usize),
}

/// A read replica's connection; see the module's "Read replicas".
struct Replica {
    url: String,
    shown: String,
    client: Mutex<Client>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("url", &self.url)
            .field("replica", &self.replica.as_ref().map(|r| &r.shown))
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

impl PgBackend {
    /// Connects to `url`, applies pending migrations and checks the embedder against the
    /// one the knowledge base was created with.
    pub fn connect(
        url: &str,
        embedder: Option<Arc<dyn Embedder>>,
        config: IndexConfig,
    ) -> Result<Self> {
        config.chunker.validate()?;
        let shown = crate::error::redact_url(url);
        let mut client = schema::connect(url, &shown)?;
        let meta = schema::migrate(&mut client, &shown, embedder.as_deref(), config.chunker)?;
        let mut backend = Self {
            url: shown,
            client: Mutex::new(client),
            replica: None,
            embedder,
            config,
            dim: meta.dim,
            chunker: meta.chunker,
            counts: (0, 0),
        };
        backend.refresh_counts()?;
        Ok(backend)
    }

    /// [`connect`](Self::connect) to the primary at `url`, with searches sent to the
    /// streaming replica at `replica_url` (see the module's "Read replicas": a search may
    /// not yet see the latest writes).
    pub fn connect_with_replica(
        url: &str,
        replica_url: &str,
        embedder: Option<Arc<dyn Embedder>>,
        config: IndexConfig,
    ) -> Result<Self> {
        let mut backend = Self::connect(url, embedder, config)?;
        let shown = crate::error::redact_url(replica_url);
        let client = schema::connect_replica(replica_url, &shown)?;
        backend.replica = Some(Replica {
            url: replica_url.to_owned(),
            shown,
            client: Mutex::new(client),
        });
        Ok(backend)
    }

    fn client(&self) -> MutexGuard<'_, Client> {
        // A panic while holding the connection leaves no half-done write (transactions).
        self.client.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection searches use: the replica's when there is one (re-established first
    /// if it was lost), else the primary's.
    fn read_client(&self) -> Result<MutexGuard<'_, Client>> {
        let Some(replica) = &self.replica else {
            return Ok(self.client());
        };
        let mut client = replica
            .client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if client.is_closed() {
            *client = schema::connect_replica(&replica.url, &replica.shown)?;
        }
        Ok(client)
    }

    /// The replica's URL (password hidden), when searches go to one.
    pub fn replica(&self) -> Option<&str> {
        self.replica.as_ref().map(|r| r.shown.as_str())
    }

    fn refresh_counts(&mut self) -> Result<()> {
        let row = self.client().query_one(
            "SELECT (SELECT count(*) FROM tribute_documents), (SELECT count(*) FROM tribute_chunks)",
            &[],
        )?;
        self.counts = (row.get::<_, i64>(0) as usize, row.get::<_, i64>(1) as usize);
        Ok(())
    }
}

impl Backend for PgBackend {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn document_count(&self) -> usize {
        self.counts.0
    }

    fn chunk_count(&self) -> usize {
        self.counts.1
    }

    fn document(&self, id: &DocId) -> Result<Option<DocumentRecord>> {
        let rows = self.client().query(
            &format!("{} WHERE doc_id = $1", schema::SELECT_DOCUMENT),
            &[&id.as_str()],
        )?;
        rows.first().map(schema::document_from_row).transpose()
    }

    fn documents(&self) -> Result<Vec<DocumentRecord>> {
        let rows = self
            .client()
            .query(&format!("{} ORDER BY seq", schema::SELECT_DOCUMENT), &[])?;
        rows.iter().map(schema::document_from_row).collect()
    }

    fn chunks(&self) -> Result<Vec<Chunk>> {
        let rows = self
            .client()
            .query(&format!("{} ORDER BY c.id", schema::SELECT_CHUNK), &[])?;
        rows.iter().map(schema::chunk_from_row).collect()
    }

    fn add_documents(
        &mut self,
        docs: Vec<Document>,
        progress: Option<&dyn Fn(&IngestProgress)>,
    ) -> Result<IngestReport> {
        let report = self.ingest(docs, progress)?;
        self.refresh_counts()?;
        Ok(report)
    }

    fn delete(&mut self, id: &DocId) -> Result<bool> {
        let n = self.client().execute(
            "DELETE FROM tribute_documents WHERE doc_id = $1",
            &[&id.as_str()],
        )?;
        self.refresh_counts()?;
        Ok(n > 0)
    }

    fn search(&self, spec: &SearchSpec<'_>) -> Result<Vec<Hit>> {
        self.search_sql(spec)
    }

    fn verify(&self) -> Result<()> {
        let row = self.client().query_one(VERIFY, &[&(self.dim > 0)])?;
        let (bad_docs, no_vector, bad_terms, corpus_ok): (i64, i64, i64, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if bad_docs + no_vector + bad_terms > 0 || !corpus_ok {
            return Err(Error::Corrupt {
                path: self.url.clone().into(),
                reason: format!(
                    "{bad_docs} documents disagree with their chunk count, {no_vector} chunks lack a vector, \
                     {bad_terms} terms have a wrong document frequency, corpus counts {}",
                    if corpus_ok { "right" } else { "wrong" }
                ),
            });
        }
        Ok(())
    }

    fn optimize(&mut self) -> Result<()> {
        self.client()
            .batch_execute("VACUUM ANALYZE tribute_documents; VACUUM ANALYZE tribute_chunks")?;
        Ok(())
    }
}
