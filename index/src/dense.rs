//! Dense vectors: an HNSW graph (hnsw_rs) over unit vectors, kept on disk as a raw
//! vector log plus graph snapshots.
//!
//! `vectors.f32` is the source of truth (little-endian f32, one row per chunk slot,
//! appended and fsynced before each commit). A snapshot of the graph is dumped after an
//! ingest that grew it by a quarter, and when the index closes; on open the newest
//! snapshot is loaded and the rows written after it are inserted again, so a crash never
//! loses a vector and never needs a full rebuild.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;
use serde::{Deserialize, Serialize};

use crate::bm25::{Scored, sort_top};
use crate::error::{Error, Result};

/// Cosine distance for unit vectors: `1 - a·b`, clamped at 0. Never panics.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitCosine;

/// Dot product with sixteen independent accumulators, so the compiler vectorises it;
/// compiled for AVX-512, AVX2+FMA and NEON and picked at run time.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "aarch64+neon"
))]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, ra) = a.as_chunks::<16>();
    let (cb, rb) = b.as_chunks::<16>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

impl Distance<f32> for UnitCosine {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (1.0 - dot(va, vb)).max(0.0)
    }
}

/// Scales a vector to unit length (zero vectors stay zero).
pub fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// HNSW construction and search settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HnswConfig {
    /// Links per node (M).
    pub max_connections: usize,
    /// Candidate list size while building.
    pub ef_construction: usize,
    /// Smallest candidate list size while searching (raised to the number of results asked).
    pub ef_search: usize,
    /// Below this many allowed vectors, a filtered search scans them exactly instead.
    pub exact_below: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            ef_construction: 200,
            ef_search: 128,
            exact_below: 10_000,
        }
    }
}

type Graph<'a> = Hnsw<'a, f32, UnitCosine>;

/// Fewest new rows worth a graph snapshot during ingest (closing the index dumps any).
const SNAPSHOT_MIN_ROWS: usize = 256;

self_cell::self_cell!(
    struct LoadedGraph {
        owner: HnswIo,
        #[not_covariant]
        dependent: Graph,
    }
);

enum GraphHolder {
    Built(Graph<'static>),
    Loaded(LoadedGraph),
}

impl GraphHolder {
    fn with<R>(&self, f: impl FnOnce(&Graph<'_>) -> R) -> R {
        match self {
            GraphHolder::Built(g) => f(g),
            GraphHolder::Loaded(l) => l.with_dependent(|_, g| f(g)),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotPointer {
    dir: String,
    points: usize,
}

pub(crate) struct DenseIndex {
    dir: PathBuf,
    dim: usize,
    config: HnswConfig,
    /// All vectors, row = slot.
    vectors: Vec<f32>,
    /// Always `Some` (taken only when dropped, see `Drop`).
    graph: Option<GraphHolder>,
    /// A compact copy of the graph for searching (rebuilt after every change).
    csr: Csr,
    /// Rows covered by the newest snapshot on disk.
    snapshot_points: usize,
    /// Rows covered by the index's last commit: only a graph of exactly these is worth
    /// a snapshot when the index closes.
    committed_rows: usize,
    log: BufWriter<File>,
}

fn new_graph(config: &HnswConfig, capacity: usize) -> Graph<'static> {
    let mut g = Hnsw::new(
        config.max_connections,
        capacity.max(1024),
        16,
        config.ef_construction,
        UnitCosine,
    );
    g.set_searching_mode(true);
    g
}

/// The rayon pool that runs hnsw_rs's parallel work (inserting, and dropping a graph),
/// instead of rayon's global pool: that one is created once per process, so a child
/// forked after the parent used it would wait forever for its threads. This pool is
/// re-created in a forked child (the parent's is leaked there, never dropped).
fn rayon_pool() -> std::sync::Arc<rayon::ThreadPool> {
    static POOL: tribute_common::PerProcess<rayon::ThreadPool> = tribute_common::PerProcess::new();
    let pool = POOL.get_or_try_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tribute-hnsw-{i}"))
            .build()
            // Only fails when threads cannot be spawned; then work runs on the caller.
            .or_else(|_| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .use_current_thread()
                    .build()
            })
    });
    #[allow(clippy::expect_used)]
    pool.expect("a rayon pool, at least one on the current thread")
}

impl Drop for DenseIndex {
    fn drop(&mut self) {
        // Closing with committed rows past the snapshot: dump them, so the next open loads
        // the graph searched now instead of inserting those rows into a differently shaped
        // one. Not after a failed ingest (the graph then holds uncommitted rows), nor while
        // unwinding from a panic.
        if !std::thread::panicking()
            && self.unsnapshotted() > 0
            && self.rows() == self.committed_rows
            && self.graph.is_some()
            && let Err(e) = self.snapshot()
        {
            tracing::warn!(
                "HNSW snapshot at close failed ({e}); the next open inserts the rows after the last snapshot again"
            );
        }
        // hnsw_rs drops its points with rayon: in our pool (see `rayon_pool`).
        if let Some(graph) = self.graph.take() {
            rayon_pool().install(move || drop(graph));
        }
    }
}

impl DenseIndex {
    /// The graph (present until the index is dropped).
    fn graph(&self) -> &GraphHolder {
        #[allow(clippy::expect_used)]
        self.graph
            .as_ref()
            .expect("the graph is present until drop")
    }

    /// Opens the vector log (truncated to `committed_rows`) and the newest snapshot.
    pub(crate) fn open(
        dir: &Path,
        dim: usize,
        committed_rows: usize,
        config: HnswConfig,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let path = dir.join("vectors.f32");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        let row_bytes = (dim * 4) as u64;
        let want = committed_rows as u64 * row_bytes;
        let have = file.metadata().map_err(Error::io(&path))?.len();
        if have < want {
            return Err(Error::Corrupt {
                path: dir.to_owned(),
                reason: format!(
                    "vectors.f32 holds {have} bytes but the last commit recorded {want}"
                ),
            });
        }
        if have > want {
            // Rows written after the last commit: an interrupted ingest. Drop them.
            file.set_len(want).map_err(Error::io(&path))?;
            file.sync_all().map_err(Error::io(&path))?;
        }
        let mut bytes = Vec::with_capacity(want as usize);
        (&mut file)
            .take(want)
            .read_to_end(&mut bytes)
            .map_err(Error::io(&path))?;
        let vectors: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        drop(bytes);

        let (graph, snapshot_points) = match Self::load_snapshot(dir, committed_rows) {
            Some((g, n)) => (GraphHolder::Loaded(g), n),
            None => (GraphHolder::Built(new_graph(&config, committed_rows)), 0),
        };
        let mut this = Self {
            dir: dir.to_owned(),
            dim,
            config,
            vectors,
            graph: Some(graph),
            csr: Csr::default(),
            snapshot_points,
            committed_rows,
            log: BufWriter::new(file),
        };
        // Rows after the snapshot go into the graph again.
        this.index_rows(snapshot_points, committed_rows);
        this.csr = this.graph().with(|g| Csr::from_graph(g, committed_rows));
        Ok(this)
    }

    fn load_snapshot(dir: &Path, committed_rows: usize) -> Option<(LoadedGraph, usize)> {
        let pointer: SnapshotPointer =
            serde_json::from_slice(&std::fs::read(dir.join("hnsw.json")).ok()?).ok()?;
        if pointer.points > committed_rows || pointer.points == 0 {
            return None;
        }
        let snap_dir = dir.join(&pointer.dir);
        // hnsw_rs asserts on malformed files: contain that and rebuild instead.
        let loaded = std::panic::catch_unwind(|| {
            let io = HnswIo::new(&snap_dir, "graph");
            LoadedGraph::try_new(io, |io| {
                io.load_hnsw_with_dist::<f32, UnitCosine>(UnitCosine)
            })
        });
        match loaded {
            Ok(Ok(g)) if g.with_dependent(|_, g| g.get_nb_point()) == pointer.points => {
                Some((g, pointer.points))
            }
            _ => {
                tracing::warn!(
                    "HNSW snapshot {} unusable; rebuilding the graph from vectors.f32",
                    snap_dir.display()
                );
                None
            }
        }
    }

    fn index_rows(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        let dim = self.dim;
        let rows: Vec<(&[f32], usize)> = (from..to)
            .map(|r| (&self.vectors[r * dim..(r + 1) * dim], r))
            .collect();
        self.graph().with(|g| {
            if rows.len() > 64 {
                rayon_pool().install(|| g.parallel_insert_slice(&rows));
            } else {
                for r in rows {
                    g.insert_slice(r);
                }
            }
        });
    }

    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    pub(crate) fn rows(&self) -> usize {
        self.vectors.len() / self.dim
    }

    pub(crate) fn vector(&self, slot: u32) -> &[f32] {
        let s = slot as usize * self.dim;
        &self.vectors[s..s + self.dim]
    }

    /// Appends vectors for the next slots (not yet in the graph, not yet durable).
    pub(crate) fn append(&mut self, vectors: &[Vec<f32>]) -> Result<()> {
        for v in vectors {
            if v.len() != self.dim {
                return Err(Error::Embedding(format!(
                    "vector of {} dims, index has {}",
                    v.len(),
                    self.dim
                )));
            }
            for x in v {
                self.log
                    .write_all(&x.to_le_bytes())
                    .map_err(Error::io(&self.dir))?;
            }
            self.vectors.extend_from_slice(v);
        }
        Ok(())
    }

    /// Puts rows `from..rows()` into the graph.
    pub(crate) fn index_pending(&mut self, from: usize) {
        let to = self.rows();
        self.index_rows(from, to);
        if to > self.config.exact_below {
            self.csr = self.graph().with(|g| Csr::from_graph(g, to));
        }
    }

    /// Makes appended vectors durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.log.flush().map_err(Error::io(&self.dir))?;
        self.log.get_ref().sync_data().map_err(Error::io(&self.dir))
    }

    /// Rows not covered by the on-disk snapshot.
    pub(crate) fn unsnapshotted(&self) -> usize {
        self.rows() - self.snapshot_points
    }

    /// Records that every row so far is covered by a commit of the index.
    pub(crate) fn mark_committed(&mut self) {
        self.committed_rows = self.rows();
    }

    /// Whether enough rows arrived since the last snapshot to dump the graph again.
    /// A dump writes the whole graph, so the next one waits until the rows grew by a
    /// quarter (at least [`SNAPSHOT_MIN_ROWS`]): writing stays a constant factor of the
    /// index size however small the ingests, and a crash re-inserts at most that share.
    pub(crate) fn snapshot_due(&self) -> bool {
        self.unsnapshotted() >= SNAPSHOT_MIN_ROWS.max(self.snapshot_points / 4)
    }

    /// Dumps the graph to a new snapshot directory and points `hnsw.json` at it.
    pub(crate) fn snapshot(&mut self) -> Result<()> {
        let points = self.graph().with(|g| g.get_nb_point());
        if points == 0 || points == self.snapshot_points {
            return Ok(());
        }
        let name = format!("hnsw-{points}");
        let tmp = self.dir.join(format!("{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(Error::io(&tmp))?;
        self.graph()
            .with(|g| g.file_dump(&tmp, "graph"))
            .map_err(|e| Error::Io {
                path: tmp.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let final_dir = self.dir.join(&name);
        let _ = std::fs::remove_dir_all(&final_dir);
        std::fs::rename(&tmp, &final_dir).map_err(Error::io(&final_dir))?;
        let pointer = serde_json::to_vec(&SnapshotPointer {
            dir: name.clone(),
            points,
        })
        .map_err(|e| Error::Io {
            path: self.dir.clone(),
            source: e.into(),
        })?;
        crate::store::write_atomic(&self.dir.join("hnsw.json"), &pointer)?;
        self.snapshot_points = points;
        // Older snapshots are no longer pointed at.
        for entry in std::fs::read_dir(&self.dir)
            .map_err(Error::io(&self.dir))?
            .flatten()
        {
            let n = entry.file_name().to_string_lossy().into_owned();
            if n.starts_with("hnsw-") && n != name {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// Exact top `k` by scanning every accepted row, keeping the `k` nearest in a heap
    /// whose top is the farthest kept.
    fn exact_top(&self, query: &[f32], k: usize, keep: &dyn Fn(u32) -> bool) -> Vec<Scored> {
        let mut heap = std::collections::BinaryHeap::with_capacity(k + 1);
        for (s, row) in self.vectors.chunks_exact(self.dim).enumerate() {
            let s = s as u32;
            if !keep(s) {
                continue;
            }
            let d = 1.0 - dot(query, row);
            if heap.len() < k {
                heap.push(ByDist(d, s));
            } else if heap.peek().is_some_and(|w| d < w.0) {
                heap.pop();
                heap.push(ByDist(d, s));
            }
        }
        let mut out: Vec<Scored> = heap.into_iter().map(|ByDist(d, s)| (s, 1.0 - d)).collect();
        sort_top(&mut out, k);
        out
    }

    /// Top `k` slots by cosine similarity, among slots `keep` accepts.
    /// `allowed` is how many slots `keep` accepts, when known: a small number means an exact scan.
    pub(crate) fn search(
        &self,
        query: &[f32],
        k: usize,
        keep: &dyn Fn(u32) -> bool,
        allowed: Option<usize>,
    ) -> Vec<Scored> {
        let rows = self.rows();
        if k == 0 || rows == 0 {
            return Vec::new();
        }
        if rows <= self.config.exact_below || allowed.is_some_and(|a| a <= self.config.exact_below)
        {
            return self.exact_top(query, k, keep);
        }
        let ef = self.config.ef_search.max(k);
        if self.csr.covers(rows) {
            return self.csr.search(query, k, ef, keep, |s| self.vector(s));
        }
        let filter = |id: &usize| keep(*id as u32);
        let found = self
            .graph()
            .with(|g| g.search_filter(query, k, ef, Some(&filter)));
        let mut out: Vec<Scored> = found
            .into_iter()
            .map(|n| (n.d_id as u32, 1.0 - n.distance))
            .collect();
        sort_top(&mut out, k);
        out
    }
}

/// The HNSW graph hnsw_rs built, copied into flat arrays indexed by slot, searched with a
/// visited bitset over our contiguous vectors: no hashing, locking or reference counting
/// per visited node (hnsw_rs's own search spends most of its time there).
#[derive(Default)]
struct Csr {
    /// Layer-0 neighbours of slot `s`: `nb0[off0[s]..off0[s + 1]]`.
    off0: Vec<u32>,
    nb0: Vec<u32>,
    /// Neighbours on layers 1.. of the few slots that reach them: `upper[s][layer - 1]`.
    upper: std::collections::HashMap<u32, Vec<Vec<u32>>>,
    entry: Option<(u32, usize)>,
}

/// A slot and its distance to the query, ordered by distance (then slot).
#[derive(PartialEq)]
struct ByDist(f32, u32);
impl Eq for ByDist {}
impl PartialOrd for ByDist {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByDist {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

impl Csr {
    fn from_graph(g: &Graph<'_>, rows: usize) -> Self {
        // hnsw_rs's point iterator panics on an empty graph.
        if g.get_nb_point() == 0 {
            return Self::default();
        }
        let mut layer0: Vec<Vec<u32>> = vec![Vec::new(); rows];
        let mut upper = std::collections::HashMap::new();
        let mut entry: Option<(u32, usize)> = None;
        for point in g.get_point_indexation() {
            let slot = point.get_origin_id();
            if slot >= rows {
                continue;
            }
            let level = point.get_point_id().0 as usize;
            let layers: Vec<Vec<u32>> = point
                .get_neighborhood_id()
                .iter()
                .map(|l| {
                    l.iter()
                        .map(|n| n.d_id as u32)
                        .filter(|&d| (d as usize) < rows)
                        .collect()
                })
                .collect();
            let mut layers = layers.into_iter();
            layer0[slot] = layers.next().unwrap_or_default();
            if level > 0 {
                upper.insert(slot as u32, layers.take(level).collect::<Vec<_>>());
            }
            if entry.is_none_or(|(_, l)| level > l) {
                entry = Some((slot as u32, level));
            }
        }
        let mut off0 = Vec::with_capacity(rows + 1);
        let mut nb0 = Vec::new();
        off0.push(0);
        for l in layer0 {
            nb0.extend(l);
            off0.push(nb0.len() as u32);
        }
        Self {
            off0,
            nb0,
            upper,
            entry,
        }
    }

    fn covers(&self, rows: usize) -> bool {
        self.entry.is_some() && self.off0.len() == rows + 1
    }

    fn search<'v>(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &dyn Fn(u32) -> bool,
        vector: impl Fn(u32) -> &'v [f32],
    ) -> Vec<Scored> {
        let Some((mut ep, top)) = self.entry else {
            return Vec::new();
        };
        let dist = |s: u32| 1.0 - dot(query, vector(s));
        let mut d_ep = dist(ep);
        // Greedy descent through the upper layers.
        for layer in (1..=top).rev() {
            loop {
                let mut moved = false;
                let nbs = self.upper.get(&ep).and_then(|l| l.get(layer - 1));
                for &nb in nbs.into_iter().flatten() {
                    let d = dist(nb);
                    if d < d_ep {
                        (ep, d_ep, moved) = (nb, d, true);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        // Best-first search on layer 0, keeping the `ef` best accepted nodes.
        let rows = self.off0.len() - 1;
        let mut visited = vec![0u64; rows.div_ceil(64)];
        let mut seen = |s: u32| {
            let (w, b) = (s as usize / 64, 1u64 << (s % 64));
            let was = visited[w] & b != 0;
            visited[w] |= b;
            was
        };
        let mut candidates = std::collections::BinaryHeap::new();
        let mut results: std::collections::BinaryHeap<ByDist> = std::collections::BinaryHeap::new();
        seen(ep);
        candidates.push(std::cmp::Reverse(ByDist(d_ep, ep)));
        if keep(ep) {
            results.push(ByDist(d_ep, ep));
        }
        while let Some(std::cmp::Reverse(ByDist(d, c))) = candidates.pop() {
            if results.len() >= ef && results.peek().is_some_and(|w| d > w.0) {
                break;
            }
            let (a, b) = (
                self.off0[c as usize] as usize,
                self.off0[c as usize + 1] as usize,
            );
            for &nb in &self.nb0[a..b] {
                if seen(nb) {
                    continue;
                }
                let dn = dist(nb);
                if results.len() < ef || results.peek().is_some_and(|w| dn < w.0) {
                    candidates.push(std::cmp::Reverse(ByDist(dn, nb)));
                    if keep(nb) {
                        results.push(ByDist(dn, nb));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        let mut out: Vec<Scored> = results
            .into_iter()
            .map(|ByDist(d, s)| (s, 1.0 - d))
            .collect();
        sort_top(&mut out, k);
        out
    }
}
