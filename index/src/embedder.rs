//! Text embedders: the [`Embedder`] trait and its ONNX implementation on fastembed.
//!
//! [`OnnxEmbedder`] runs two kinds of sessions of one model: one single-threaded session
//! per core for bulk work (ingest spreads its batches over them), and one session that
//! uses every core for small requests such as a search query (see [`QueryOptions`]).

mod cache;
mod lane;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};

use crate::chunker::TokenCounter;
use crate::error::{Error, Result};
use cache::QueryCache;
use lane::QueryLane;

/// A batch's index and its vectors.
type BatchOutput = (usize, Vec<Vec<f32>>);

/// Name of the default embedding model's directory under `$TRIBUTE_HOME/models/`.
pub const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";

/// File name of the int8 query encoder beside a model's `model.onnx` (written by `make
/// setup`), which [`QueryModel::Auto`] runs queries on when it is there.
pub const INT8_QUERY_MODEL: &str = "model_query_int8.onnx";

/// Which ONNX file the query session runs.
///
/// Documents are always embedded by the model's own file (large requests never take the
/// query session), so an index stays valid whichever is chosen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum QueryModel {
    /// The int8 query encoder [`INT8_QUERY_MODEL`] when the model directory holds one, else
    /// the model's own file. Measured within 0.005 nDCG@10 of the model on the BEIR sets and
    /// 0.65–0.72× plain onnxruntime's time per long query (docs/RETRIEVAL.md).
    #[default]
    Auto,
    /// The model's own file: a query's vector equals the one its text gets as a document.
    Own,
    /// Another ONNX file (relative to the model directory, or absolute): a dynamically
    /// quantised copy of the same model. Dynamic quantisation scales each call's
    /// activations together, so on such a file every text runs in a call of its own and a
    /// query's vector never depends on what it was queued with.
    File(PathBuf),
}

impl QueryModel {
    /// The file the query session runs in `dir`, or `None` for the model's own.
    fn file_in(&self, dir: &Path) -> Option<PathBuf> {
        match self {
            QueryModel::Own => None,
            QueryModel::File(file) => Some(dir.join(file)),
            QueryModel::Auto => Some(dir.join(INT8_QUERY_MODEL)).filter(|p| p.is_file()),
        }
    }
}

/// Turns texts into unit-length vectors, and measures text in the model's tokens.
pub trait Embedder: TokenCounter {
    /// A stable name for the model; recorded in the index so a mismatch is caught on open.
    fn model_id(&self) -> &str;
    /// Vector dimension.
    fn dim(&self) -> usize;
    /// Embeds texts; each returned vector has unit L2 norm.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Most tokens of a text the model reads (special tokens not counted); the rest of a
    /// longer text is cut off. `None`: no limit, or unknown.
    fn max_text_tokens(&self) -> Option<usize> {
        None
    }
}

/// The directory of the default model: `$TRIBUTE_HOME/models/all-MiniLM-L6-v2`.
pub fn default_model_dir() -> PathBuf {
    tribute_common::tribute_home()
        .join("models")
        .join(DEFAULT_MODEL)
}

/// An ONNX sentence-embedding model run by ONNX Runtime through fastembed.
///
/// A model directory holds `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`,
/// `config.json`, `special_tokens_map.json` and `tokenizer_config.json`; pooling is read
/// from sentence-transformers' `1_Pooling/config.json` when present (mean otherwise).
pub struct OnnxEmbedder {
    model_id: String,
    dim: usize,
    /// Independent sessions, each single-threaded by default, so batches run in parallel
    /// without intra-op synchronisation.
    sessions: Vec<Mutex<TextEmbedding>>,
    /// The session for small requests, when there is one.
    query: Option<QueryPath>,
    /// Tokens of text the model reads (its window less the special tokens).
    max_text_tokens: usize,
    /// The model's tokenizer without truncation or padding, for counting tokens.
    counter: tokenizers::Tokenizer,
    batch_size: usize,
    batch_bytes: usize,
}

impl std::fmt::Debug for OnnxEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEmbedder")
            .field("model_id", &self.model_id)
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

/// How the embedder runs.
#[derive(Clone, Debug)]
pub struct EmbedderOptions {
    /// Longest input in tokens; longer texts are truncated.
    pub max_length: usize,
    /// Most texts per model call.
    pub batch_size: usize,
    /// Most bytes of text per model call (texts are sorted by length first, so a batch
    /// holds texts of about the same length). On CPU one long text per call is fastest —
    /// padding is wasted work — while short texts gain from sharing a call.
    pub batch_bytes: usize,
    /// Parallel model sessions (`None`: one per core). Ingest spreads batches over them.
    pub sessions: Option<usize>,
    /// ONNX Runtime intra-op threads per session.
    pub threads_per_session: usize,
    /// How small requests (a search query) run.
    pub query: QueryOptions,
}

/// How small requests — a search query, a handful of texts — run: on a session of their
/// own that uses every core, apart from the single-threaded ingest sessions.
///
/// Queries from several threads at once are batched: the first runs at once, and those
/// arriving while the session is busy run together as the next call (no timer: a lone
/// query never waits for company, and a queued one waits at most for the call in flight).
/// At most `max_waiting` requests queue; one more fails at once with
/// [`Error::QueryQueueFull`], so a burst turns into errors the caller can retry or shed,
/// not into ever longer waits.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// Intra-op threads of the query session. `None`: one per core. `Some(0)`: no query
    /// session; small requests share the ingest sessions (the behaviour before it).
    pub threads: Option<usize>,
    /// Let the query session's threads spin between operators rather than sleep (only
    /// while a call runs: they stop spinning when it returns, so no core burns while the
    /// generator runs after a search). On by default: a sleeping pool pays a wake-up per
    /// operator, ≈ 20 % of a query's time on 2 cores (docs/RETRIEVAL.md); turn it off
    /// where the cores are oversubscribed, since spinning threads then steal time from
    /// the ones doing work.
    pub spinning: bool,
    /// Requests of at most this many texts take the query session.
    pub max_texts: usize,
    /// Most texts per call when queued requests are batched.
    pub max_batch: usize,
    /// Most requests waiting for the query session.
    pub max_waiting: usize,
    /// Query vectors kept in a least-recently-used cache, keyed by the token ids the model
    /// reads; `0` turns the cache off.
    pub cache_entries: usize,
    /// The ONNX file the query session runs (default: the int8 query encoder when
    /// installed).
    pub model: QueryModel,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self {
            threads: None,
            spinning: true,
            max_texts: 4,
            max_batch: 16,
            max_waiting: 256,
            cache_entries: 1024,
            model: QueryModel::Auto,
        }
    }
}

/// The query session, the queue in front of it and the cache behind it.
struct QueryPath {
    lane: QueryLane,
    cache: QueryCache,
    /// The session's tokenizer (truncating), for cache keys.
    tokenizer: tokenizers::Tokenizer,
    max_texts: usize,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        Self {
            max_length: 256,
            batch_size: 32,
            batch_bytes: 1024,
            sessions: None,
            threads_per_session: 1,
            query: QueryOptions::default(),
        }
    }
}

impl OnnxEmbedder {
    /// Loads the default model from `$TRIBUTE_HOME/models/all-MiniLM-L6-v2`.
    pub fn default_model() -> Result<Self> {
        Self::from_dir(&default_model_dir(), EmbedderOptions::default())
    }

    /// Loads a model directory.
    pub fn from_dir(dir: &Path, options: EmbedderOptions) -> Result<Self> {
        let bad = |reason: String| Error::ModelDirectory {
            path: dir.to_owned(),
            reason,
        };
        if !dir.is_dir() {
            return Err(bad("directory does not exist".into()));
        }
        let onnx = ["model.onnx", "onnx/model.onnx"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| bad("no model.onnx (or onnx/model.onnx) in it".into()))?;
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| bad(format!("cannot read {name}: {e}")))
        };
        let tokenizer_files = TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        let pooling = match std::fs::read(dir.join("1_Pooling/config.json")) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| bad(format!("1_Pooling/config.json: {e}")))?;
                if v["pooling_mode_cls_token"].as_bool() == Some(true) {
                    Pooling::Cls
                } else {
                    Pooling::Mean
                }
            }
            Err(_) => Pooling::Mean,
        };
        let mut counter = tokenizers::Tokenizer::from_bytes(&tokenizer_files.tokenizer_file)
            .map_err(|e| bad(format!("tokenizer.json: {e}")))?;
        counter
            .with_truncation(None)
            .map_err(|e| bad(format!("tokenizer.json: {e}")))?
            .with_padding(None);
        let onnx_bytes = std::fs::read(&onnx)
            .map_err(|e| bad(format!("cannot read {}: {e}", onnx.display())))?;
        let env = tribute_common::environment()?;
        // Our sessions already run in parallel: tokenizing in parallel too only contends.
        tokenizers::utils::parallelism::set_parallelism(false);
        let n_sessions = options
            .sessions
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let model =
            UserDefinedEmbeddingModel::new(onnx_bytes, tokenizer_files).with_pooling(pooling);
        let load = |model: &UserDefinedEmbeddingModel, threads: usize, spinning: bool| {
            let init = InitOptionsUserDefined::new()
                .with_environment(env.clone())
                .with_max_length(options.max_length)
                .with_intra_threads(threads.max(1))
                .with_session_config(
                    "session.intra_op.allow_spinning",
                    if spinning { "1" } else { "0" },
                )
                // Spin between operators only while a call runs: no core burns after it
                // returns, when the generator usually needs both.
                .with_session_config("session.force_spinning_stop", "1");
            TextEmbedding::try_new_from_user_defined(model.clone(), init)
                .map_err(|e| bad(format!("cannot load the model: {e}")))
        };
        let mut sessions = Vec::with_capacity(n_sessions);
        for _ in 0..n_sessions {
            sessions.push(Mutex::new(load(
                &model,
                options.threads_per_session,
                false,
            )?));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut query_dim = None;
        let query = match options.query.threads.unwrap_or(cores) {
            0 => None,
            threads => {
                let query_model = match options.query.model.file_in(dir) {
                    None => None,
                    Some(path) => {
                        let onnx_file = std::fs::read(&path).map_err(|e| {
                            bad(format!(
                                "cannot read the query model {}: {e}",
                                path.display()
                            ))
                        })?;
                        Some(UserDefinedEmbeddingModel {
                            onnx_file,
                            ..model.clone()
                        })
                    }
                };
                let mut session = load(
                    query_model.as_ref().unwrap_or(&model),
                    threads,
                    options.query.spinning,
                )?;
                if query_model.is_some() {
                    let probe = session
                        .embed(["dimension probe"], None)
                        .map_err(|e| bad(format!("the query model does not run: {e}")))?;
                    query_dim = probe.first().map(Vec::len);
                }
                Some(QueryPath::new(
                    session,
                    &options.query,
                    query_model.is_some(),
                ))
            }
        };
        let probe = sessions[0]
            .get_mut()
            .map_err(|_| bad("session poisoned".into()))?
            .embed(["dimension probe"], None)
            .map_err(|e| bad(format!("the model does not run: {e}")))?;
        let dim = probe.first().map(Vec::len).unwrap_or(0);
        if dim == 0 {
            return Err(bad("the model returned an empty embedding".into()));
        }
        if let Some(query_dim) = query_dim.filter(|&d| d != dim) {
            return Err(bad(format!(
                "the query model gives {query_dim}-d vectors, the model {dim}-d: not a copy of the same model"
            )));
        }
        let max_text_tokens = match sessions[0].get_mut() {
            Ok(te) => window_text_tokens(&te.tokenizer),
            Err(_) => return Err(bad("session poisoned".into())),
        };
        let model_id = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        Ok(Self {
            model_id,
            dim,
            sessions,
            query,
            max_text_tokens,
            counter,
            batch_size: options.batch_size.max(1),
            batch_bytes: options.batch_bytes.max(1),
        })
    }

    /// Loads a fastembed model by name (e.g. `"BAAI/bge-small-en-v1.5"`), downloading it
    /// from the Hugging Face hub when online. Needs the `hf-hub` feature.
    #[cfg(feature = "hf-hub")]
    pub fn from_name(name: &str, options: EmbedderOptions) -> Result<Self> {
        let model: fastembed::EmbeddingModel = name.parse().map_err(|e: String| {
            Error::Embedding(format!("unknown fastembed model {name:?}: {e}"))
        })?;
        let env = tribute_common::environment()?;
        let init = fastembed::TextInitOptions::new(model)
            .with_max_length(options.max_length)
            .with_environment(env);
        let mut te = TextEmbedding::try_new(init).map_err(|e| Error::Embedding(e.to_string()))?;
        let counter = {
            let mut t = te.tokenizer.clone();
            t.with_truncation(None)
                .map_err(|e| Error::Embedding(e.to_string()))?
                .with_padding(None);
            t
        };
        let dim = te
            .embed(["dimension probe"], None)
            .map_err(|e| Error::Embedding(e.to_string()))?
            .first()
            .map(Vec::len)
            .unwrap_or(0);
        let max_text_tokens = window_text_tokens(&te.tokenizer);
        Ok(Self {
            model_id: name.to_owned(),
            dim,
            sessions: vec![Mutex::new(te)],
            query: None,
            max_text_tokens,
            counter,
            batch_size: options.batch_size.max(1),
            batch_bytes: options.batch_bytes.max(1),
        })
    }
}

/// Tokens of text a session reads: its window less the special tokens its tokenizer adds.
fn window_text_tokens(tokenizer: &tokenizers::Tokenizer) -> usize {
    let window = tokenizer
        .get_truncation()
        .map_or(usize::MAX, |t| t.max_length);
    let specials = tokenizer.encode("", true).map_or(0, |e| e.len());
    window.saturating_sub(specials)
}

impl QueryPath {
    /// `one_text_per_call`: run each text alone even when requests are batched (a
    /// dynamically quantised model, whose activation scales span the whole call).
    fn new(session: TextEmbedding, options: &QueryOptions, one_text_per_call: bool) -> Self {
        let tokenizer = session.tokenizer.clone();
        let session = Mutex::new(session);
        let run = move |texts: &[&str]| -> Result<Vec<Vec<f32>>> {
            let mut session = session
                .lock()
                .map_err(|_| Error::Embedding("embedder poisoned by an earlier panic".into()))?;
            let mut embed = |texts: &[&str]| {
                session
                    .embed(texts, Some(texts.len()))
                    .map_err(|e| Error::Embedding(e.to_string()))
            };
            if !one_text_per_call {
                return embed(texts);
            }
            let mut vectors = Vec::with_capacity(texts.len());
            for text in texts {
                vectors.extend(embed(std::slice::from_ref(text))?);
            }
            Ok(vectors)
        };
        Self {
            lane: QueryLane::new(Box::new(run), options.max_batch, options.max_waiting),
            cache: QueryCache::new(options.cache_entries),
            tokenizer,
            max_texts: options.max_texts.max(1),
        }
    }

    /// Embeds a small request: cached vectors first, the rest through the lane.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        let mut missing: Vec<(usize, Option<Vec<u32>>)> = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            // The ids the model reads are the key; a text the tokenizer rejects is not
            // cached (the model call reports the error).
            let key = self
                .tokenizer
                .encode(*text, true)
                .ok()
                .map(|e| e.get_ids().to_vec());
            match key.as_ref().and_then(|k| self.cache.get(k)) {
                Some(v) => out[i] = Some(v),
                None => missing.push((i, key)),
            }
        }
        if !missing.is_empty() {
            let batch: Vec<&str> = missing.iter().map(|&(i, _)| texts[i]).collect();
            for ((i, key), v) in missing.into_iter().zip(self.lane.embed(&batch)?) {
                if let Some(key) = key {
                    self.cache.insert(key, v.clone());
                }
                out[i] = Some(v);
            }
        }
        out.into_iter()
            .map(|v| v.ok_or_else(|| Error::Embedding("no vector returned".into())))
            .collect()
    }
}

impl TokenCounter for OnnxEmbedder {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        match self.counter.encode(text, false) {
            Ok(enc) => enc.get_offsets().to_vec(),
            // A text the tokenizer rejects still needs a size: fall back to words.
            Err(_) => crate::chunker::WordCounter.token_spans(text),
        }
    }
}

impl Embedder for OnnxEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn max_text_tokens(&self) -> Option<usize> {
        Some(self.max_text_tokens)
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(query) = self.query.as_ref().filter(|q| texts.len() <= q.max_texts) {
            return query.embed(texts);
        }
        // Batch texts of similar length together: padding is wasted work.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut batches: Vec<&[usize]> = Vec::new();
        let mut start = 0;
        for end in 1..=order.len() {
            // `order[end - 1]` is the longest text of the batch `start..end`.
            let longest = texts[order[end - 1]].len().max(1);
            let full = end == order.len()
                || end - start >= self.batch_size
                || (end - start + 1) * texts[order[end]].len().max(1)
                    > self.batch_bytes.max(longest);
            if full {
                batches.push(&order[start..end]);
                start = end;
            }
        }
        let run = |session: &Mutex<TextEmbedding>, batch: &[usize]| -> Result<Vec<Vec<f32>>> {
            let batch_texts: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
            let mut model = session
                .lock()
                .map_err(|_| Error::Embedding("embedder poisoned by an earlier panic".into()))?;
            let vectors = model
                .embed(&batch_texts, Some(batch_texts.len()))
                .map_err(|e| Error::Embedding(e.to_string()))?;
            if vectors.len() != batch.len() {
                return Err(Error::Embedding(format!(
                    "model returned {} vectors for {} texts",
                    vectors.len(),
                    batch.len()
                )));
            }
            Ok(vectors)
        };
        let mut out = vec![Vec::new(); texts.len()];
        if batches.len() == 1 || self.sessions.len() == 1 {
            // One batch (a query): take whichever session is free.
            let session = self
                .sessions
                .iter()
                .find(|s| !matches!(s.try_lock(), Err(std::sync::TryLockError::WouldBlock)))
                .unwrap_or(&self.sessions[0]);
            for batch in batches {
                for (&i, v) in batch.iter().zip(run(session, batch)?) {
                    out[i] = v;
                }
            }
            return Ok(out);
        }
        // Several batches: one worker per session pulls batches off a shared counter.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<Vec<BatchOutput>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .sessions
                .iter()
                .map(|session| {
                    let (next, batches, run) = (&next, &batches, &run);
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        loop {
                            let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(batch) = batches.get(b) else { break };
                            done.push((b, run(session, batch)?));
                        }
                        Ok(done)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Embedding("embedding worker panicked".into()))
                    })
                })
                .collect()
        });
        for r in results {
            for (b, vectors) in r? {
                for (&i, v) in batches[b].iter().zip(vectors) {
                    out[i] = v;
                }
            }
        }
        Ok(out)
    }
}
