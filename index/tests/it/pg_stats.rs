//! BM25's corpus statistics in Postgres (`tribute_terms`, `tribute_corpus`): exact after
//! every kind of write, backfilled when an older knowledge base is migrated, and checked
//! by `verify`.

use tribute_index::{Document, Error, Index, IndexConfig, Mode};

use crate::backends::pg::fresh_database;
use crate::backends::pg_url;

/// Terms whose stored document frequency differs from a recount (or whose count and
/// length bounds do not hold), and whether the corpus row matches the chunks (computed
/// here, independently of `verify`).
fn drift(db: &str) -> (i64, bool) {
    let mut client = postgres::Client::connect(db, postgres::NoTls).expect("connects");
    let row = client
        .query_one(
            "SELECT
               (SELECT count(*) FROM
                  (SELECT u.lexeme, count(*) AS df,
                          max(coalesce(array_length(u.positions, 1), 1)) AS max_tf, min(c.dl) AS min_dl
                   FROM tribute_chunks c, unnest(c.tsv) u GROUP BY 1) e
                  FULL JOIN tribute_terms t USING (lexeme)
                  WHERE e.df IS DISTINCT FROM t.df OR t.max_tf < e.max_tf OR t.min_dl > e.min_dl),
               (SELECT s.chunks = (SELECT count(*) FROM tribute_chunks)
                   AND s.tokens = (SELECT coalesce(sum(dl), 0) FROM tribute_chunks)
                FROM tribute_corpus s)",
            &[],
        )
        .expect("recount");
    (row.get(0), row.get(1))
}

fn exact(db: &str, index: &Index, after: &str) {
    assert_eq!(drift(db), (0, true), "statistics drifted after {after}");
    index
        .verify()
        .unwrap_or_else(|e| panic!("verify after {after}: {e}"));
}

fn bm25(index: &Index, query: &str) -> Vec<(String, f32)> {
    let hits = index
        .search(query)
        .k(10)
        .mode(Mode::Bm25)
        .execute()
        .expect("search");
    hits.into_iter()
        .map(|h| (h.chunk_id.to_string(), h.score))
        .collect()
}

#[test]
fn statistics_stay_exact_through_every_kind_of_write() {
    let Some(url) = pg_url() else { return };
    let db = fresh_database(&url);
    let mut index = Index::open(&db, None, IndexConfig::default()).expect("opens");
    exact(&db, &index, "creation");
    index.add_documents(crate::corpus(), None).expect("ingest");
    exact(&db, &index, "ingest");

    // Replace-on-change: the old chunks' terms go, the new ones come.
    let changed = Document::new(
        "tides",
        "Neap tides come at the quarter moons, when the sun and moon pull at right angles.",
    )
    .with_title("Why tides change")
    .with_datanet("baking")
    .with_contributor(crate::addr(crate::BOB));
    index.add_documents(vec![changed], None).expect("replace");
    exact(&db, &index, "a replaced document");
    assert_eq!(bm25(&index, "spring tides")[0].0, "tides#0");
    let mut client = postgres::Client::connect(&db, postgres::NoTls).expect("connects");
    let spring: i64 = client
        .query_one(
            "SELECT coalesce(max(df), 0) FROM tribute_terms WHERE lexeme = 'spring'",
            &[],
        )
        .expect("df")
        .get(0);
    assert_eq!(spring, 0, "a term no chunk holds any more is gone");

    index
        .delete(&"sourdough".into())
        .expect("delete")
        .then_some(())
        .expect("was there");
    exact(&db, &index, "a delete");
    assert!(bm25(&index, "sourdough starter").is_empty());

    // A chunk's text changed in place (no ingest does this, but nothing stops SQL).
    client
        .batch_execute(
            "UPDATE tribute_chunks SET text = 'Kites fly best in steady sea breezes.' \
             WHERE chunk_id = 'gust-notes#0'",
        )
        .expect("update");
    exact(&db, &index, "an update");
    assert_eq!(bm25(&index, "kites breezes")[0].0, "gust-notes#0");

    // A statistic that drifts is caught.
    client
        .batch_execute("UPDATE tribute_terms SET df = df + 1 WHERE lexeme = 'zephyr'")
        .expect("corrupt");
    let err = index.verify().expect_err("drift is corruption");
    assert!(
        matches!(&err, Error::Corrupt { reason, .. } if reason.contains("1 terms")),
        "{err:?}"
    );
}

#[test]
fn a_version_2_knowledge_base_gets_its_statistics_on_open() {
    let Some(url) = pg_url() else { return };
    let db = fresh_database(&url);
    let mut index = Index::open(&db, None, IndexConfig::default()).expect("opens");
    index.add_documents(crate::corpus(), None).expect("ingest");
    let before = bm25(&index, "zephyr drones gusts");
    drop(index);
    // Back to version 2: no statistics tables, no triggers.
    let mut client = postgres::Client::connect(&db, postgres::NoTls).expect("connects");
    client
        .batch_execute(
            "DROP TRIGGER tribute_terms_insert ON tribute_chunks;
             DROP TRIGGER tribute_terms_update ON tribute_chunks;
             DROP TRIGGER tribute_terms_delete ON tribute_chunks;
             DROP FUNCTION tribute_count_terms();
             DROP TABLE tribute_terms, tribute_corpus;
             DELETE FROM tribute_schema_version WHERE version = 3;",
        )
        .expect("downgrade");
    let index = Index::open(&db, None, IndexConfig::default()).expect("migrates");
    exact(&db, &index, "the migration");
    assert_eq!(bm25(&index, "zephyr drones gusts"), before);
    assert_eq!(before[0].0, "zephyr-intro#0");
}

/// BM25 by brute force over every chunk, straight from the chunks (no statistics
/// tables, no pruning): the local index's formula with k1 0.9, b 0.4 (the defaults).
const BRUTE_FORCE_BM25: &str = "
    WITH q AS (SELECT lexeme, coalesce(array_length(positions, 1), 1)::float8 AS qtf
               FROM unnest(to_tsvector('english', $1))),
         n AS (SELECT count(*)::float8 AS n, greatest(avg(dl), 1)::float8 AS avgdl FROM tribute_chunks),
         df AS (SELECT q.lexeme, q.qtf, (SELECT count(*) FROM tribute_chunks c
                    WHERE c.tsv @@ quote_literal(q.lexeme)::tsquery)::float8 AS df FROM q),
         s AS (SELECT c.id, c.chunk_id,
                      sum(d.qtf * ln(1 + (n.n - d.df + 0.5) / (d.df + 0.5))
                          * u.tf * 1.9 / (u.tf + 0.9 * (0.6 + 0.4 * c.dl / n.avgdl))) AS score
               FROM tribute_chunks c, n,
                    LATERAL (SELECT lexeme, coalesce(array_length(positions, 1), 1)::float8 AS tf
                             FROM unnest(c.tsv)) u
                    JOIN df d ON d.lexeme = u.lexeme
               GROUP BY c.id, c.chunk_id)
    SELECT chunk_id, score::real FROM s ORDER BY score::real DESC, id LIMIT $2";

/// Deterministic pseudo-random numbers (no dependency for a test corpus).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
    /// A word index with Zipf-like frequencies: word `i` about `1/(i+1)` as often as word 0.
    fn zipf(&mut self, words: usize) -> usize {
        let total: f64 = (1..=words).map(|i| 1.0 / i as f64).sum();
        let mut x = self.below(1_000_000) as f64 / 1e6 * total;
        for i in 0..words {
            x -= 1.0 / (i + 1) as f64;
            if x <= 0.0 {
                return i;
            }
        }
        words - 1
    }
}

#[test]
fn the_pruned_lexical_leg_returns_exact_bm25() {
    let Some(url) = pg_url() else { return };
    let db = fresh_database(&url);
    let mut index = Index::open(&db, None, IndexConfig::default()).expect("opens");
    // Words from very common to rare, so queries mix terms the first pass skips with terms
    // it scores, and some need the full pass.
    let words: Vec<String> = (0..80).map(|i| format!("term{i}x")).collect();
    let mut rng = Lcg(7);
    let docs: Vec<Document> = (0..400)
        .map(|d| {
            let len = 3 + rng.below(40);
            let text: Vec<&str> = (0..len)
                .map(|_| words[rng.zipf(words.len())].as_str())
                .collect();
            Document::new(format!("d{d}"), text.join(" "))
        })
        .collect();
    index.add_documents(docs, None).expect("ingest");
    exact(&db, &index, "the corpus");
    let mut client = postgres::Client::connect(&db, postgres::NoTls).expect("connects");
    for n in 0..120 {
        let terms = 1 + rng.below(6);
        let query: Vec<&str> = (0..terms)
            .map(|_| words[rng.zipf(words.len())].as_str())
            .collect();
        let query = query.join(" ");
        let k = [1, 3, 10, 40][n % 4];
        let got: Vec<(String, f32)> = index
            .search(query.as_str())
            .k(k)
            .mode(Mode::Bm25)
            .execute()
            .expect("search")
            .into_iter()
            .map(|h| (h.chunk_id.to_string(), h.score))
            .collect();
        let want: Vec<(String, f32)> = client
            .query(BRUTE_FORCE_BM25, &[&query, &(k as i64)])
            .expect("brute force")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(got.len(), want.len(), "{query:?} k={k}");
        // Same scores rank by rank; the same chunks wherever the score is not tied (the
        // two sums add in different orders, so ties may break differently).
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * a.abs().max(1.0);
        for (g, w) in got.iter().zip(&want) {
            assert!(close(g.1, w.1), "{query:?} k={k}: {got:?} vs {want:?}");
        }
        let last = want.last().map_or(0.0, |w| w.1);
        let clear = |list: &[(String, f32)]| -> Vec<String> {
            let mut ids: Vec<String> = list
                .iter()
                .filter(|x| !close(x.1, last))
                .map(|x| x.0.clone())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(clear(&got), clear(&want), "{query:?} k={k}");
    }
}
