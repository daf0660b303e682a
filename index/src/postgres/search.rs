//! Hybrid search as one SQL statement: both legs, the fusion of [`crate::Fusion`], the
//! filters and the attribution fields.

use postgres::types::ToSql;
use postgres::{Client, Row};

use super::PgBackend;
use super::schema::{EF_SEARCH, chunk_from_row};
use crate::backend::SearchSpec;
use crate::error::{Error, Result};
use crate::fusion::{Fusion, Mode};
use crate::index::{Hit, RetrieverScore};

/// Lexical leg: BM25 over Postgres full text, in the local index's formula: the query's
/// stemmed terms OR-ed, `idf = ln(1 + (N − df + ½)/(df + ½))` per term (times its count in
/// the query), term frequencies from the `tsvector`, document length `dl` (tokens, stop
/// words dropped) against the mean; best first, ties by ingest order. `$8` k1, `$9` b.
const LEXICAL: &str = "qterms AS MATERIALIZED (
        SELECT t.lexeme, coalesce(array_length(t.positions, 1), 1)::float8 AS qtf
        FROM unnest(to_tsvector('english', $1)) t),
    corpus AS MATERIALIZED (
        SELECT count(*)::float8 AS n, greatest(coalesce(avg(dl), 1), 1)::float8 AS avgdl
        FROM tribute_chunks),
    idf AS MATERIALIZED (
        SELECT q.lexeme, q.qtf * ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5)) AS w
        FROM qterms q, corpus s, LATERAL (
            SELECT count(*)::float8 AS df FROM tribute_chunks c
            WHERE c.tsv @@ quote_literal(q.lexeme)::tsquery) d),
    lex AS (
    SELECT id, score, row_number() OVER (ORDER BY score DESC, id) AS rank FROM (
        SELECT c.id, coalesce((SELECT sum(i.w * x.tf * ($8::float8 + 1) / (x.tf + $8::float8 * (1 - $9::float8 + $9::float8 * c.dl / s.avgdl)))
                      FROM (SELECT u.lexeme, coalesce(array_length(u.positions, 1), 1)::float8 AS tf
                            FROM unnest(c.tsv) u) x
                      JOIN idf i ON i.lexeme = x.lexeme), 0)::real AS score
        FROM tribute_chunks c, corpus s,
             (SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery AS q FROM qterms) q
        WHERE c.tsv @@ q.q AND {filter}
        ORDER BY score DESC, c.id LIMIT $5) l)";

/// Dense leg: HNSW cosine search (iterative scan keeps filtered searches full), re-sorted
/// because `relaxed_order` may return rows slightly out of order.
const DENSE: &str = "sem_raw AS MATERIALIZED (
        SELECT c.id, c.embedding <=> $2 AS dist FROM tribute_chunks c
        WHERE {filter} ORDER BY c.embedding <=> $2 LIMIT $5),
    sem AS (
        SELECT id, (1 - dist)::real AS score, row_number() OVER (ORDER BY dist, id) AS rank
        FROM sem_raw)";

const FILTER: &str = "(cardinality($3::text[]) = 0 OR c.datanet = ANY($3)) \
     AND (cardinality($4::text[]) = 0 OR c.contributor = ANY($4))";

/// The fused list of a hybrid search, in the arithmetic of [`Fusion::fuse`].
fn fused(fusion: Fusion) -> String {
    let norm = |list: &str, how: &str| -> String {
        match how {
            "minmax" => format!(
                "{list}_n AS (SELECT id, CASE WHEN hi - lo > 0 THEN (score - lo) / (hi - lo) ELSE 1 END AS norm
                 FROM {list}, (SELECT min(score) AS lo, max(score) AS hi FROM {list}) m)"
            ),
            _ => format!(
                "{list}_n AS (SELECT id, CASE WHEN sd > 0
                    THEN least(greatest((score - (mu - 3 * sd)) / (6 * sd), 0), 1) ELSE 1 END AS norm
                 FROM {list}, (SELECT avg(score) AS mu, stddev_pop(score) AS sd FROM {list}) m)"
            ),
        }
    };
    match fusion {
        Fusion::Rrf { k } => format!(
            "fused AS (SELECT id, sum(1.0 / ({k}::float8 + rank)) AS score FROM
                (SELECT id, rank FROM lex UNION ALL SELECT id, rank FROM sem) r GROUP BY id)"
        ),
        Fusion::Weighted { alpha } | Fusion::Dbsf { alpha } => {
            let how = if matches!(fusion, Fusion::Weighted { .. }) {
                "minmax"
            } else {
                "dbsf"
            };
            format!(
                "{}, {}, fused AS (SELECT id, sum(w * norm) AS score FROM (
                    SELECT id, (1 - {alpha}::float8) AS w, norm FROM lex_n
                    UNION ALL SELECT id, {alpha}::float8 AS w, norm FROM sem_n) r GROUP BY id)",
                norm("lex", how),
                norm("sem", how)
            )
        }
    }
}

/// The whole statement for a mode and fusion. Parameters: $1 query text, $2 query
/// vector, $3 datanets, $4 contributors, $5 candidates per leg, $6 hits, $7 per document,
/// $8 and $9 BM25's k1 and b.
fn statement(mode: Mode, fusion: Fusion) -> String {
    let lexical = LEXICAL.replace("{filter}", FILTER);
    let dense = DENSE.replace("{filter}", FILTER);
    let (ctes, list) = match mode {
        Mode::Bm25 => (
            format!(
                "{lexical}, sem AS (SELECT 0::bigint AS id, 0::real AS score, 0::bigint AS rank WHERE false AND $2::vector IS NULL)"
            ),
            "fused AS (SELECT id, score::float8 AS score FROM lex)".to_owned(),
        ),
        Mode::Dense => (
            format!(
                "lex AS (SELECT 0::bigint AS id, 0::real AS score, 0::bigint AS rank \
                 WHERE false AND $1::text IS NULL AND $8::float8 IS NULL AND $9::float8 IS NULL), {dense}"
            ),
            "fused AS (SELECT id, score::float8 AS score FROM sem)".to_owned(),
        ),
        Mode::Hybrid => (format!("{lexical}, {dense}"), fused(fusion)),
    };
    format!(
        "WITH {ctes}, {list},
         ranked AS (
            SELECT f.id, f.score, c.doc_id,
                   row_number() OVER (PARTITION BY c.doc_id ORDER BY f.score DESC, f.id) AS in_doc
            FROM fused f JOIN tribute_chunks c ON c.id = f.id)
         SELECT c.chunk_id, c.doc_id, c.title, c.text, c.start_byte, c.end_byte, c.contributor,
                c.datanet, c.content_hash, c.locator, r.score::real,
                lex.score, lex.rank, sem.score, sem.rank
         FROM ranked r JOIN tribute_chunks c ON c.id = r.id
              LEFT JOIN lex ON lex.id = r.id LEFT JOIN sem ON sem.id = r.id
         WHERE NOT $7 OR r.in_doc = 1
         ORDER BY r.score DESC, r.id LIMIT $6"
    )
}

impl PgBackend {
    pub(super) fn search_sql(&self, spec: &SearchSpec<'_>) -> Result<Vec<Hit>> {
        let vector = match (spec.mode, spec.vector) {
            (Mode::Bm25, _) => None,
            (_, None) => return Err(Error::NoEmbedder),
            (_, Some(v)) => {
                if self.dim == 0 {
                    return Err(Error::NoEmbedder);
                }
                if v.len() != self.dim {
                    return Err(Error::Embedding(format!(
                        "query vector has {} dims, the index {}",
                        v.len(),
                        self.dim
                    )));
                }
                Some(pgvector::Vector::from(v.to_vec()))
            }
        };
        let n = spec.candidates();
        let datanets: Vec<&str> = spec.datanets.iter().map(|d| d.as_str()).collect();
        let contributors: Vec<String> = spec.contributors.iter().map(|c| c.to_string()).collect();
        let (n_param, k_param) = (n as i64, spec.k as i64);
        let (k1, b) = (f64::from(spec.bm25.k1), f64::from(spec.bm25.b));
        let params: [&(dyn ToSql + Sync); 9] = [
            &spec.query,
            &vector,
            &datanets,
            &contributors,
            &n_param,
            &k_param,
            &spec.per_document,
            &k1,
            &b,
        ];
        let wide = vector.is_some() && n > EF_SEARCH;
        let query = |client: &mut Client| -> std::result::Result<Vec<Row>, postgres::Error> {
            if wide {
                client.batch_execute(&format!("SET hnsw.ef_search = {}", n.min(1000)))?;
            }
            let rows = client.query(&statement(spec.mode, spec.fusion), &params);
            if wide {
                client.batch_execute(&format!("SET hnsw.ef_search = {EF_SEARCH}"))?;
            }
            rows
        };
        let mut client = self.read_client()?;
        let rows = match query(&mut client) {
            Ok(rows) => rows,
            // The replica went away since the last search (a restart, a failover): connect
            // once more and search again; a replica still down is `PostgresUnreachable`.
            Err(_) if client.is_closed() && self.replica().is_some() => {
                drop(client);
                query(&mut *self.read_client()?)?
            }
            Err(e) => return Err(e.into()),
        };
        let retriever = |score: Option<f32>, rank: Option<i64>| {
            Some(RetrieverScore {
                score: score?,
                rank: rank? as usize,
            })
        };
        rows.iter()
            .map(|row| {
                Ok(Hit {
                    chunk: chunk_from_row(row)?,
                    score: row.try_get(10)?,
                    bm25: retriever(row.try_get(11)?, row.try_get(12)?),
                    dense: retriever(row.try_get(13)?, row.try_get(14)?),
                })
            })
            .collect()
    }
}
