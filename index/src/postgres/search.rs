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
/// the query; `N` and `df` from the statistics tables the write triggers keep), term
/// frequencies from the `tsvector`, document length `dl` (tokens, stop words dropped)
/// against the mean; best first, ties by ingest order. `$8` k1, `$9` b.
///
/// Exact top-`$5` without scoring every chunk that holds a common word (MaxScore, in at
/// most two passes). A chunk holding only terms of a set `C` scores at most `bound(C)`:
/// per term, its IDF times the saturation at the term's highest count in one chunk and the
/// shortest chunk holding it (`tribute_terms.max_tf`, `min_dl`; the saturation rises with
/// the count and falls with the length, for `k1 ≥ 0` and `b` in [0, 1]; other settings
/// are scored without pruning).
/// 1. The query's terms are taken rarest first until their document frequencies add up to
///    [`RARE_TERM_ROWS`] × `$5`; only chunks holding one of these are scored (with every
///    term). If that fills `$5` rows whose lowest score `θ` is above the bound of the
///    other terms, no other chunk can enter: done.
/// 2. Otherwise the commonest terms whose bounds add up to less than `θ` are left out, and
///    the chunks holding any other term are scored. They include the first pass's, so
///    their `$5`-th score is at least `θ`, above what the left-out terms alone can reach:
///    exact. When the first pass found fewer than `$5` rows, the second scores every match.
const LEXICAL: &str = "qterms AS MATERIALIZED (
        SELECT t.lexeme, coalesce(array_length(t.positions, 1), 1)::float8 AS qtf
        FROM unnest(to_tsvector('english', $1)) t),
    corpus AS MATERIALIZED (
        SELECT chunks::float8 AS n,
               greatest(coalesce(tokens::float8 / nullif(chunks, 0), 1), 1) AS avgdl
        FROM tribute_corpus),
    idf AS MATERIALIZED (
        SELECT lexeme, w, bound,
               sum(df) OVER (ORDER BY df, lexeme) - df >= {rare_rows} * $5::bigint
                   AND $8::float8 >= 0 AND $9::float8 BETWEEN 0 AND 1 AS common,
               sum(bound) OVER (ORDER BY df DESC, lexeme DESC) AS bound_upward
        FROM (SELECT lexeme, w, df,
                     w * max_tf * ($8::float8 + 1)
                       / (max_tf + $8::float8 * (1 - $9::float8 + $9::float8 * min_dl / avgdl)) AS bound
              FROM (SELECT q.lexeme, q.qtf * ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5)) AS w, d.df,
                           d.max_tf, d.min_dl, s.avgdl
                    FROM qterms q, corpus s, LATERAL (
                        SELECT coalesce(max(t.df), 0)::float8 AS df,
                               coalesce(max(t.max_tf), 1)::float8 AS max_tf,
                               coalesce(max(t.min_dl), 0)::float8 AS min_dl
                        FROM tribute_terms t WHERE t.lexeme = q.lexeme) d) t) t),
    plan AS MATERIALIZED (
        SELECT (SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery FROM idf WHERE NOT common) AS q_rare,
               (SELECT coalesce(sum(bound), 0) FROM idf WHERE common) AS common_bound),
    lex_first AS MATERIALIZED ({score} WHERE c.tsv @@ p.q_rare AND {filter} ORDER BY score DESC, c.id LIMIT $5),
    second AS MATERIALIZED (
        SELECT f.needed, (SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery FROM idf
                          WHERE NOT (f.filled AND bound_upward * (1 + 1e-6) < f.theta)) AS q
        FROM (SELECT (SELECT bool_or(common) FROM idf) AND NOT (count(*) >= $5
                         AND min(score)::float8 > (SELECT common_bound FROM plan) * (1 + 1e-6)) AS needed,
                     count(*) >= $5 AS filled, min(score)::float8 AS theta
              FROM lex_first) f),
    lex_second AS MATERIALIZED ({score} WHERE (SELECT needed FROM second)
        AND c.tsv @@ (SELECT q FROM second) AND {filter}
        ORDER BY score DESC, c.id LIMIT $5),
    lex AS (
    SELECT id, doc_id, score, row_number() OVER (ORDER BY score DESC, id) AS rank FROM (
        SELECT id, doc_id, score FROM lex_second
        UNION ALL SELECT id, doc_id, score FROM lex_first WHERE NOT (SELECT needed FROM second)) l)";

/// BM25 of each chunk `c` (every query term), for the lexical leg's passes.
const SCORE: &str = "SELECT c.id, c.doc_id, coalesce((SELECT sum(i.w * x.tf * ($8::float8 + 1) / (x.tf + $8::float8 * (1 - $9::float8 + $9::float8 * c.dl / s.avgdl)))
                      FROM (SELECT u.lexeme, coalesce(array_length(u.positions, 1), 1)::float8 AS tf
                            FROM unnest(c.tsv) u) x
                      JOIN idf i ON i.lexeme = x.lexeme), 0)::real AS score
        FROM tribute_chunks c, corpus s, plan p";

/// How many candidate rows (times `$5`) the rare terms of the lexical leg's first pass
/// should cover (see [`LEXICAL`]); any value gives the same, exact results.
const RARE_TERM_ROWS: usize = 2;

/// Dense leg: HNSW cosine search (iterative scan keeps filtered searches full), re-sorted
/// because `relaxed_order` may return rows slightly out of order.
const DENSE: &str = "sem_raw AS MATERIALIZED (
        SELECT c.id, c.doc_id, c.embedding <=> $2 AS dist FROM tribute_chunks c
        WHERE {filter} ORDER BY c.embedding <=> $2 LIMIT $5),
    sem AS (
        SELECT id, doc_id, (1 - dist)::real AS score, row_number() OVER (ORDER BY dist, id) AS rank
        FROM sem_raw)";

const FILTER: &str = "(cardinality($3::text[]) = 0 OR c.datanet = ANY($3)) \
     AND (cardinality($4::text[]) = 0 OR c.contributor = ANY($4))";

/// The fused list of a hybrid search, in the arithmetic of [`Fusion::fuse`].
fn fused(fusion: Fusion) -> String {
    let norm = |list: &str, how: &str| -> String {
        match how {
            "minmax" => format!(
                "{list}_n AS (SELECT id, doc_id, CASE WHEN hi - lo > 0 THEN (score - lo) / (hi - lo) ELSE 1 END AS norm
                 FROM {list}, (SELECT min(score) AS lo, max(score) AS hi FROM {list}) m)"
            ),
            _ => format!(
                "{list}_n AS (SELECT id, doc_id, CASE WHEN sd > 0
                    THEN least(greatest((score - (mu - 3 * sd)) / (6 * sd), 0), 1) ELSE 1 END AS norm
                 FROM {list}, (SELECT avg(score) AS mu, stddev_pop(score) AS sd FROM {list}) m)"
            ),
        }
    };
    match fusion {
        Fusion::Rrf { k } => format!(
            "fused AS (SELECT id, doc_id, sum(1.0 / ({k}::float8 + rank)) AS score FROM
                (SELECT id, doc_id, rank FROM lex UNION ALL SELECT id, doc_id, rank FROM sem) r
                GROUP BY id, doc_id)"
        ),
        Fusion::Weighted { alpha } | Fusion::Dbsf { alpha } => {
            let how = if matches!(fusion, Fusion::Weighted { .. }) {
                "minmax"
            } else {
                "dbsf"
            };
            format!(
                "{}, {}, fused AS (SELECT id, doc_id, sum(w * norm) AS score FROM (
                    SELECT id, doc_id, (1 - {alpha}::float8) AS w, norm FROM lex_n
                    UNION ALL SELECT id, doc_id, {alpha}::float8 AS w, norm FROM sem_n) r
                    GROUP BY id, doc_id)",
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
    let lexical = LEXICAL
        .replace("{score}", SCORE)
        .replace("{filter}", FILTER)
        .replace("{rare_rows}", &RARE_TERM_ROWS.to_string());
    let dense = DENSE.replace("{filter}", FILTER);
    let (ctes, list) = match mode {
        Mode::Bm25 => (
            format!(
                "{lexical}, sem AS (SELECT 0::bigint AS id, ''::text AS doc_id, 0::real AS score, \
                 0::bigint AS rank WHERE false AND $2::vector IS NULL)"
            ),
            "fused AS (SELECT id, doc_id, score::float8 AS score FROM lex)".to_owned(),
        ),
        Mode::Dense => (
            format!(
                "lex AS (SELECT 0::bigint AS id, ''::text AS doc_id, 0::real AS score, 0::bigint AS rank \
                 WHERE false AND $1::text IS NULL AND $8::float8 IS NULL AND $9::float8 IS NULL), {dense}"
            ),
            "fused AS (SELECT id, doc_id, score::float8 AS score FROM sem)".to_owned(),
        ),
        Mode::Hybrid => (format!("{lexical}, {dense}"), fused(fusion)),
    };
    format!(
        "WITH {ctes}, {list},
         ranked AS (
            SELECT f.id, f.score,
                   row_number() OVER (PARTITION BY f.doc_id ORDER BY f.score DESC, f.id) AS in_doc
            FROM fused f)
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
