//! Connecting, migrating, and turning rows back into records.

use std::time::Duration;

use alloy_primitives::B256;
use postgres::error::SqlState;
use postgres::{Client, NoTls, Row};
use serde::{Deserialize, Serialize};

use super::SCHEMA_VERSION;
use crate::chunker::ChunkerConfig;
use crate::embedder::Embedder;
use crate::error::{Error, Result};
use crate::index::{Chunk, DocumentRecord};
use crate::types::{ChunkId, ContentHash, Contributor, DatanetId, DocId};

/// Session settings every connection gets: iterative HNSW scans so filtered searches
/// still fill `k` rows, and a search list long enough for fusion's candidate depth.
const SESSION_SETTINGS: &str = "SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = 200";

/// The candidate depth `SESSION_SETTINGS` covers; deeper searches raise `ef_search` first.
pub(super) const EF_SEARCH: usize = 200;

/// What the knowledge base was created with (row `config` of `tribute_meta`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Meta {
    pub model_id: Option<String>,
    pub dim: usize,
    pub chunker: ChunkerConfig,
}

/// Connects (10 s timeout unless the URL sets one).
pub(super) fn connect(url: &str, shown: &str) -> Result<Client> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| Error::InvalidConfig(format!("Postgres URL {shown}: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config
        .connect(NoTls)
        .map_err(|e| Error::PostgresUnreachable {
            url: shown.to_owned(),
            reason: error_chain(&e),
        })
}

/// Connects to a read replica: no migrations (a standby is read-only and follows the
/// primary's schema), the search session settings only.
pub(super) fn connect_replica(url: &str, shown: &str) -> Result<Client> {
    let mut client = connect(url, shown)?;
    client.batch_execute(SESSION_SETTINGS)?;
    Ok(client)
}

/// The driver's message and its causes ("error connecting to server: Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Applies pending migrations in one transaction and returns the recorded settings,
/// checked against `embedder`.
pub(super) fn migrate(
    client: &mut Client,
    shown: &str,
    embedder: Option<&dyn Embedder>,
    chunker: ChunkerConfig,
) -> Result<Meta> {
    let mut tx = client.transaction()?;
    // Serialises concurrent first opens (and migrations) across processes.
    tx.execute("SELECT pg_advisory_xact_lock(7215046301)", &[])?;
    if let Err(e) = tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector") {
        let missing = matches!(
            e.code(),
            Some(c) if *c == SqlState::UNDEFINED_FILE || *c == SqlState::INSUFFICIENT_PRIVILEGE
                || *c == SqlState::FEATURE_NOT_SUPPORTED
        );
        return Err(if missing || e.code().is_none() {
            Error::PgvectorMissing {
                url: shown.to_owned(),
                reason: error_chain(&e),
            }
        } else {
            e.into()
        });
    }
    tx.batch_execute("CREATE TABLE IF NOT EXISTS tribute_schema_version (version int NOT NULL)")?;
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM tribute_schema_version",
            &[],
        )?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            url: shown.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 1 {
        let meta = Meta {
            model_id: embedder.map(|e| e.model_id().to_owned()),
            dim: embedder.map_or(0, Embedder::dim),
            chunker,
        };
        tx.batch_execute(&schema_v1(meta.dim))?;
        let value = serde_json::to_value(&meta).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        tx.execute(
            "INSERT INTO tribute_meta (key, value) VALUES ('config', $1)",
            &[&value],
        )?;
        tx.execute("INSERT INTO tribute_schema_version VALUES (1)", &[])?;
    }
    if found < 2 {
        // Version 2: where each chunk lies in its document.
        tx.batch_execute("ALTER TABLE tribute_chunks ADD COLUMN locator jsonb")?;
        tx.execute("INSERT INTO tribute_schema_version VALUES (2)", &[])?;
    }
    if found < 3 {
        // Version 3: BM25's corpus statistics kept at write time, so a search reads them
        // instead of counting the whole table.
        tx.batch_execute(SCHEMA_V3)?;
        tx.execute("INSERT INTO tribute_schema_version VALUES (3)", &[])?;
    }
    let value: serde_json::Value = tx
        .query_one("SELECT value FROM tribute_meta WHERE key = 'config'", &[])?
        .get(0);
    let meta: Meta = serde_json::from_value(value).map_err(|e| Error::Corrupt {
        path: shown.into(),
        reason: format!("tribute_meta config: {e}"),
    })?;
    tx.commit()?;
    if let Some(e) = embedder
        && (meta.model_id.as_deref() != Some(e.model_id()) || meta.dim != e.dim())
    {
        return Err(Error::EmbedderMismatch {
            path: shown.into(),
            stored: meta
                .model_id
                .clone()
                .unwrap_or_else(|| "none (BM25-only index)".to_owned()),
            stored_dim: meta.dim,
            given: e.model_id().to_owned(),
            given_dim: e.dim(),
        });
    }
    client.batch_execute(SESSION_SETTINGS)?;
    Ok(meta)
}

/// The first schema. `dim` 0 (no embedder): no vector column type or index.
fn schema_v1(dim: usize) -> String {
    let (vector, hnsw) = if dim > 0 {
        (
            format!("vector({dim})"),
            "CREATE INDEX tribute_chunks_embedding ON tribute_chunks \
               USING hnsw (embedding vector_cosine_ops);",
        )
    } else {
        ("vector".to_owned(), "")
    };
    format!(
        "CREATE FUNCTION tribute_tsv_len(tsvector) RETURNS int LANGUAGE sql IMMUTABLE PARALLEL SAFE
             AS 'SELECT coalesce(sum(coalesce(array_length(positions, 1), 1)), 0)::int FROM unnest($1)';
         CREATE TABLE tribute_meta (key text PRIMARY KEY, value jsonb NOT NULL);
         CREATE TABLE tribute_documents (
             doc_id text PRIMARY KEY,
             seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
             title text NOT NULL,
             datanet text NOT NULL,
             contributor text NOT NULL,
             license text,
             metadata jsonb NOT NULL,
             content_hash bytea NOT NULL,
             chunks int NOT NULL,
             duplicate_of jsonb,
             near_duplicate_of jsonb);
         CREATE INDEX tribute_documents_datanet ON tribute_documents (datanet);
         CREATE INDEX tribute_documents_contributor ON tribute_documents (contributor);
         CREATE INDEX tribute_documents_hash ON tribute_documents (content_hash);
         CREATE TABLE tribute_chunks (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             chunk_id text NOT NULL UNIQUE,
             doc_id text NOT NULL REFERENCES tribute_documents (doc_id) ON DELETE CASCADE,
             n int NOT NULL,
             start_byte int NOT NULL,
             end_byte int NOT NULL,
             content_hash bytea NOT NULL,
             title text NOT NULL,
             text text NOT NULL,
             datanet text NOT NULL,
             contributor text NOT NULL,
             embedding {vector},
             tsv tsvector GENERATED ALWAYS AS
                 (to_tsvector('english'::regconfig, title || ' ' || text)) STORED,
             dl int GENERATED ALWAYS AS
                 (tribute_tsv_len(to_tsvector('english'::regconfig, title || ' ' || text))) STORED);
         CREATE INDEX tribute_chunks_doc ON tribute_chunks (doc_id);
         CREATE INDEX tribute_chunks_datanet ON tribute_chunks (datanet);
         CREATE INDEX tribute_chunks_contributor ON tribute_chunks (contributor);
         CREATE INDEX tribute_chunks_tsv ON tribute_chunks USING gin (tsv);
         {hnsw}"
    )
}

/// Version 3: `tribute_terms` (per stemmed term: its document frequency, the chunks whose
/// `tsvector` holds it; and for the lexical leg's upper bounds, its highest count in one
/// chunk and the shortest chunk holding it) and `tribute_corpus` (chunk and token counts,
/// for the mean length), backfilled from the chunks and kept by statement-level triggers on
/// every insert, update and delete of a chunk (cascaded deletes included): `df` and the
/// counts are exact at every commit; `max_tf` and `min_dl` are not lowered by deletes, so
/// they stay bounds. The triggers take the writers' advisory lock first: concurrent writers
/// update the shared counters one after the other instead of deadlocking on them.
const SCHEMA_V3: &str = "
    CREATE TABLE tribute_terms (
        lexeme text PRIMARY KEY,
        df bigint NOT NULL,
        max_tf int NOT NULL,
        min_dl int NOT NULL);
    CREATE TABLE tribute_corpus (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        chunks bigint NOT NULL,
        tokens bigint NOT NULL);
    INSERT INTO tribute_terms (lexeme, df, max_tf, min_dl)
        SELECT u.lexeme, count(*), max(coalesce(array_length(u.positions, 1), 1)), min(c.dl)
        FROM tribute_chunks c, unnest(c.tsv) u GROUP BY u.lexeme;
    INSERT INTO tribute_corpus (chunks, tokens)
        SELECT count(*), coalesce(sum(dl), 0) FROM tribute_chunks;
    CREATE FUNCTION tribute_count_terms() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock(7215046302);
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            UPDATE tribute_terms t SET df = t.df - d.n
            FROM (SELECT u.lexeme, count(*) AS n FROM old_rows c, unnest(c.tsv) u
                  GROUP BY u.lexeme ORDER BY u.lexeme) d
            WHERE t.lexeme = d.lexeme;
            DELETE FROM tribute_terms WHERE df <= 0 AND lexeme IN
                (SELECT u.lexeme FROM old_rows c, unnest(c.tsv) u);
            UPDATE tribute_corpus SET chunks = chunks - (SELECT count(*) FROM old_rows),
                tokens = tokens - (SELECT coalesce(sum(dl), 0) FROM old_rows);
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO tribute_terms AS t (lexeme, df, max_tf, min_dl)
                SELECT u.lexeme, count(*), max(coalesce(array_length(u.positions, 1), 1)), min(c.dl)
                FROM new_rows c, unnest(c.tsv) u
                GROUP BY u.lexeme ORDER BY u.lexeme
            ON CONFLICT (lexeme) DO UPDATE SET df = t.df + excluded.df,
                max_tf = greatest(t.max_tf, excluded.max_tf),
                min_dl = least(t.min_dl, excluded.min_dl);
            UPDATE tribute_corpus SET chunks = chunks + (SELECT count(*) FROM new_rows),
                tokens = tokens + (SELECT coalesce(sum(dl), 0) FROM new_rows);
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER tribute_terms_insert AFTER INSERT ON tribute_chunks
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION tribute_count_terms();
    CREATE TRIGGER tribute_terms_update AFTER UPDATE ON tribute_chunks
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION tribute_count_terms();
    CREATE TRIGGER tribute_terms_delete AFTER DELETE ON tribute_chunks
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION tribute_count_terms();";

/// Columns [`document_from_row`] reads, from `tribute_documents`.
pub(super) const SELECT_DOCUMENT: &str = "SELECT doc_id, title, datanet, contributor, license, \
     metadata, content_hash, chunks, duplicate_of, near_duplicate_of FROM tribute_documents";

pub(super) fn document_from_row(row: &Row) -> Result<DocumentRecord> {
    let json = |i: usize| -> Result<Option<serde_json::Value>> { Ok(row.try_get(i)?) };
    let corrupt = |what: &str, e: String| Error::Corrupt {
        path: "tribute_documents".into(),
        reason: format!("{what}: {e}"),
    };
    fn from_json<T: serde::de::DeserializeOwned>(
        value: Option<serde_json::Value>,
    ) -> std::result::Result<Option<T>, String> {
        value
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| e.to_string())
    }
    let metadata = match json(5)? {
        Some(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    Ok(DocumentRecord {
        id: DocId::new(row.try_get::<_, String>(0)?),
        title: row.try_get(1)?,
        datanet: DatanetId::new(row.try_get::<_, String>(2)?),
        contributor: Contributor::parse(row.try_get(3)?)?,
        license: row.try_get(4)?,
        metadata,
        content_hash: hash_from(row.try_get(6)?)?,
        chunks: row.try_get::<_, i32>(7)? as u32,
        duplicate_of: from_json(json(8)?).map_err(|e| corrupt("duplicate_of", e))?,
        near_duplicate_of: from_json(json(9)?).map_err(|e| corrupt("near_duplicate_of", e))?,
    })
}

/// Columns [`chunk_from_row`] reads (first ten), from `tribute_chunks c`.
pub(super) const SELECT_CHUNK: &str = "SELECT c.chunk_id, c.doc_id, c.title, c.text, c.start_byte, \
     c.end_byte, c.contributor, c.datanet, c.content_hash, c.locator FROM tribute_chunks c";

pub(super) fn chunk_from_row(row: &Row) -> Result<Chunk> {
    Ok(Chunk {
        chunk_id: ChunkId::new(row.try_get::<_, String>(0)?),
        doc_id: DocId::new(row.try_get::<_, String>(1)?),
        title: row.try_get(2)?,
        text: row.try_get(3)?,
        start: row.try_get::<_, i32>(4)? as usize,
        end: row.try_get::<_, i32>(5)? as usize,
        contributor: Contributor::parse(row.try_get(6)?)?,
        datanet: DatanetId::new(row.try_get::<_, String>(7)?),
        content_hash: hash_from(row.try_get(8)?)?,
        locator: row
            .try_get::<_, Option<serde_json::Value>>(9)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::Corrupt {
                path: "tribute_chunks".into(),
                reason: format!("locator: {e}"),
            })?,
    })
}

pub(super) fn hash_from(bytes: &[u8]) -> Result<ContentHash> {
    let b = B256::try_from(bytes).map_err(|_| Error::Corrupt {
        path: "tribute_chunks".into(),
        reason: format!("content hash of {} bytes", bytes.len()),
    })?;
    Ok(ContentHash::from_b256(b))
}
