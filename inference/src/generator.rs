//! The generator: a model directory loaded into a pool of ONNX Runtime sessions, decoding
//! one or many prompts with a KV cache, per-request sampling, stop strings, adapters and
//! streaming.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{IoBinding, Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use serde::Serialize;

use crate::adapter::{AdapterId, AdapterSource};
use crate::config::{ModelConfig, layer_name};
use crate::error::{Error, Result};
use crate::registry::{Activation, AdapterRegistry, AdapterSet, DEFAULT_ADAPTER_BUDGET};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{Message, StreamDecoder, Tokenizer};

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The CPU (always available).
    #[default]
    Cpu,
    /// An NVIDIA GPU through ONNX Runtime's CUDA execution provider (feature `cuda`);
    /// falls back to the CPU, with one log line, when CUDA is unavailable.
    Cuda {
        /// CUDA device ordinal.
        device_id: i32,
    },
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda { device_id: 0 }),
            s => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|device_id| Device::Cuda { device_id })
                .ok_or_else(|| {
                    Error::InvalidRequest(format!("unknown device {s:?} (cpu, cuda, cuda:N)"))
                }),
        }
    }
}

/// How a generator is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorOptions {
    /// Where to run.
    pub device: Device,
    /// Sessions in the pool: how many callers run at once (each holds its own copy of the
    /// weights). Default 1; batching is the cheaper way to serve many prompts.
    pub sessions: usize,
    /// Threads per session (default: all cores divided by `sessions`).
    pub intra_threads: Option<usize>,
    /// Memory budget for resident adapters, in bytes.
    pub adapter_budget_bytes: usize,
    /// Largest batch `generate_batch` decodes in one forward pass.
    pub max_batch: usize,
    /// Keep the KV cache where the session puts it through an ONNX Runtime `IoBinding`
    /// (`None`: only on CUDA, where it saves the device↔host copies; on the CPU a plain run
    /// is faster).
    pub io_binding: Option<bool>,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        GeneratorOptions {
            device: Device::Cpu,
            sessions: 1,
            intra_threads: None,
            adapter_budget_bytes: DEFAULT_ADAPTER_BUDGET,
            max_batch: 32,
            io_binding: None,
        }
    }
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Chat messages, rendered with the model's chat template plus the assistant header.
    Chat(Vec<Message>),
    /// Raw text, tokenized with the tokenizer's special tokens (e.g. BOS).
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

impl From<&str> for Prompt {
    /// A single user message.
    fn from(s: &str) -> Self {
        Prompt::Chat(vec![Message::user(s)])
    }
}
impl From<String> for Prompt {
    /// A single user message.
    fn from(s: String) -> Self {
        Prompt::Chat(vec![Message::user(s)])
    }
}
impl From<Vec<Message>> for Prompt {
    fn from(m: Vec<Message>) -> Self {
        Prompt::Chat(m)
    }
}

/// Cancels a running generation from another thread. Clones share one flag; two tokens
/// are equal when they are clones of each other.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl PartialEq for CancelToken {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CancelToken {}

impl CancelToken {
    /// A fresh token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the generation to stop after the current step.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// A guard that cancels this token when dropped, unless [`CancelGuard::disarm`]ed
    /// first: ties a generation to the life of a future or of a caller that may go away.
    pub fn drop_guard(&self) -> CancelGuard {
        CancelGuard(Some(self.clone()))
    }
}

/// Cancels its [`CancelToken`] when dropped armed (see [`CancelToken::drop_guard`]).
#[derive(Debug)]
#[must_use = "dropping the guard cancels at once"]
pub struct CancelGuard(Option<CancelToken>);

impl CancelGuard {
    /// Keeps the token as it is (the work finished).
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.cancel();
        }
    }
}

/// One generation request. Build it with [`GenerateRequest::new`] and the setters.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    prompt: Prompt,
    max_tokens: usize,
    sampling: SamplingParams,
    stop: Vec<String>,
    adapters: Vec<(String, f32)>,
    ignore_eos: bool,
    truncate: bool,
    cancel: Option<CancelToken>,
}

impl GenerateRequest {
    /// A request with greedy decoding and up to 256 new tokens.
    pub fn new(prompt: impl Into<Prompt>) -> Self {
        GenerateRequest {
            prompt: prompt.into(),
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            adapters: Vec::new(),
            ignore_eos: false,
            truncate: false,
            cancel: None,
        }
    }
    /// Most new tokens (also bounded by the model's context).
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = n;
        self
    }
    /// All sampling settings at once.
    pub fn sampling(mut self, p: SamplingParams) -> Self {
        self.sampling = p;
        self
    }
    /// Temperature (0 = greedy).
    pub fn temperature(mut self, t: f32) -> Self {
        self.sampling.temperature = t;
        self
    }
    /// Top-k cut (0 = off).
    pub fn top_k(mut self, k: usize) -> Self {
        self.sampling.top_k = k;
        self
    }
    /// Top-p (nucleus) cut (1 = off).
    pub fn top_p(mut self, p: f32) -> Self {
        self.sampling.top_p = p;
        self
    }
    /// Repetition penalty (1 = off).
    pub fn repetition_penalty(mut self, p: f32) -> Self {
        self.sampling.repetition_penalty = p;
        self
    }
    /// Sampler seed.
    pub fn seed(mut self, s: u64) -> Self {
        self.sampling.seed = s;
        self
    }
    /// Stops before the first occurrence of `s` (not included in the text).
    pub fn stop(mut self, s: impl Into<String>) -> Self {
        let s = s.into();
        if !s.is_empty() {
            self.stop.push(s);
        }
        self
    }
    /// Applies a registered adapter with a merge weight (several may be given).
    pub fn adapter(mut self, id: impl Into<String>, weight: f32) -> Self {
        self.adapters.push((id.into(), weight));
        self
    }
    /// Keeps generating past end-of-sequence tokens (benchmarks).
    pub fn ignore_eos(mut self, yes: bool) -> Self {
        self.ignore_eos = yes;
        self
    }
    /// Drops the oldest prompt tokens when the prompt does not fit the context, instead
    /// of failing with [`Error::PromptTooLong`].
    pub fn truncate_prompt(mut self, yes: bool) -> Self {
        self.truncate = yes;
        self
    }
    /// Lets another thread cancel the generation.
    pub fn cancel_token(mut self, t: CancelToken) -> Self {
        self.cancel = Some(t);
        self
    }

    fn adapter_set(&self) -> Result<AdapterSet> {
        let items = self
            .adapters
            .iter()
            .map(|(id, w)| AdapterId::new(id.clone()).map(|id| (id, *w)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AdapterSet::new(items)?)
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted an end-of-sequence token.
    Eos,
    /// `max_tokens` or the context length was reached.
    Length,
    /// A stop string was generated.
    Stop(String),
    /// The request was cancelled.
    Cancelled,
}

/// Time spent per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Prompt processing (for a batch: the whole batch's prefill).
    pub prefill: Duration,
    /// Token-by-token decoding.
    pub decode: Duration,
    /// Tokens produced by decode steps (the first token comes from the prefill).
    pub decode_tokens: usize,
    /// Rows decoded together.
    pub batch_size: usize,
}

impl Timings {
    /// Decode speed of this sequence in tokens per second.
    pub fn decode_tokens_per_s(&self) -> f64 {
        if self.decode.is_zero() {
            0.0
        } else {
            self.decode_tokens as f64 / self.decode.as_secs_f64()
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// The generated text (special tokens skipped, stop string cut off).
    pub text: String,
    /// Generated token ids (an end-of-sequence token included).
    pub tokens: Vec<u32>,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The adapters applied, with their weights.
    pub adapters: Vec<(AdapterId, f32)>,
    /// Time per stage.
    pub timings: Timings,
}

/// A pool of sessions over one model: `Session::run` needs `&mut`, so each caller checks
/// one out for the duration of its generation.
struct Pool {
    idle: Mutex<Vec<Session>>,
    ready: Condvar,
}

impl Pool {
    fn checkout(&self) -> Session {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(s) = idle.pop() {
                return s;
            }
            idle = self.ready.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }
    fn try_checkout(&self) -> Option<Session> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }
    fn give_back(&self, s: Session) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(s);
        self.ready.notify_one();
    }
}

/// A request waiting for a batch.
struct Queued {
    set: AdapterSet,
    row: Row,
    tx: Sender<Result<Generation>>,
}

struct Shared {
    queue: Mutex<VecDeque<Queued>>,
    dir: PathBuf,
    config: ModelConfig,
    tokenizer: Tokenizer,
    pool: Pool,
    registry: AdapterRegistry,
    graph_inputs: HashSet<String>,
    device: Device,
    max_batch: usize,
    io_binding: bool,
}

/// A session checked out of the pool; returned when dropped.
struct Lease {
    shared: Arc<Shared>,
    session: Option<Session>,
}

impl Lease {
    fn new(shared: &Arc<Shared>) -> Self {
        Lease {
            session: Some(shared.pool.checkout()),
            shared: shared.clone(),
        }
    }
    fn session(&mut self) -> &mut Session {
        self.session
            .as_mut()
            .expect("a lease holds its session until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.shared.pool.give_back(s);
        }
    }
}

/// A decoder LM with its tokenizer and adapters, shareable across threads (`Clone` is cheap).
#[derive(Clone)]
pub struct Generator {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("dir", &self.shared.dir)
            .field("device", &self.shared.device)
            .field("layers", &self.shared.config.num_layers)
            .field("adapters", &self.shared.registry.stats())
            .finish()
    }
}

fn builder_err(e: ort::Error<ort::session::builder::SessionBuilder>) -> Error {
    Error::Ort(e.into())
}

impl Generator {
    /// Loads a model directory on the CPU with default options.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, GeneratorOptions::default())
    }

    /// Loads a model directory.
    pub fn load_with(dir: impl AsRef<Path>, options: GeneratorOptions) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        if !dir.is_dir() {
            return Err(Error::model_dir(&dir, "not a directory"));
        }
        let config = ModelConfig::load(&dir)?;
        let onnx = dir.join("model.onnx");
        if !onnx.is_file() {
            return Err(Error::model_dir(&dir, "model.onnx not found"));
        }
        let tokenizer = Tokenizer::from_dir(&dir)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::Tokenizer(format!(
                "tokenizer.json has {} tokens but the model's vocabulary is {}: the tokenizer belongs to another model",
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        let env = tribute_runtime::environment()?;
        let n_sessions = options.sessions.max(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = options
            .intra_threads
            .unwrap_or((cores / n_sessions).max(1))
            .max(1);
        let mut device = options.device;
        let mut sessions = Vec::with_capacity(n_sessions);
        for _ in 0..n_sessions {
            let (s, used) = build_session(&env, &onnx, threads, device)
                .map_err(|e| Error::model_dir(&dir, format!("model.onnx does not load: {e}")))?;
            device = used;
            sessions.push(s);
        }
        // LoRA inputs are overridable initializers, which ONNX Runtime does not list among
        // the session's inputs.
        let graph_inputs: HashSet<String> = sessions[0]
            .inputs()
            .iter()
            .map(|i| i.name().to_owned())
            .chain(
                sessions[0]
                    .overridable_initializers()
                    .iter()
                    .map(|i| i.name().to_owned()),
            )
            .collect();
        check_io(&dir, &config, &sessions[0])?;
        let model_name = config.name.clone();
        let registry = AdapterRegistry::new(
            config.lora.modules.clone(),
            model_name,
            options.adapter_budget_bytes,
        );
        Ok(Generator {
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::new()),
                dir,
                config,
                tokenizer,
                pool: Pool {
                    idle: Mutex::new(sessions),
                    ready: Condvar::new(),
                },
                registry,
                graph_inputs,
                device,
                max_batch: options.max_batch.max(1),
                io_binding: options.io_binding.unwrap_or(device != Device::Cpu),
            }),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.shared.config
    }
    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.shared.tokenizer
    }
    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
    /// Where the model runs (after any fallback).
    pub fn device(&self) -> Device {
        self.shared.device
    }
    /// The adapter registry.
    pub fn adapters(&self) -> &AdapterRegistry {
        &self.shared.registry
    }

    /// Registers an adapter (PEFT directory or `.onnx_adapter` file) under `id`; it is
    /// loaded on first use.
    pub fn add_adapter(&self, id: impl Into<String>, path: impl AsRef<Path>) -> Result<AdapterId> {
        let id = AdapterId::new(id)?;
        self.shared
            .registry
            .register(id.clone(), AdapterSource::detect(path)?)?;
        Ok(id)
    }

    /// The prompt's token ids, as the model will see them.
    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        let tok = &self.shared.tokenizer;
        let ids = match prompt {
            Prompt::Chat(msgs) => tok.encode(&tok.apply_chat_template(msgs, true)?, false)?,
            Prompt::Text(t) => tok.encode(t, true)?,
            Prompt::Tokens(ids) => ids.clone(),
        };
        if ids.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        if let Some(&t) = ids
            .iter()
            .find(|&&t| t as usize >= self.shared.config.vocab_size)
        {
            return Err(Error::InvalidRequest(format!(
                "token id {t} is outside the vocabulary ({})",
                self.shared.config.vocab_size
            )));
        }
        Ok(ids)
    }

    /// Generates one answer.
    ///
    /// Concurrent callers are batched: requests queue up, and whichever caller finds a
    /// free session decodes every queued request with the same adapter set (up to
    /// `max_batch`) in one batch, then the next group, until the queue is empty.
    pub fn generate(&self, request: &GenerateRequest) -> Result<Generation> {
        let rx = self.enqueue(request)?;
        self.wait(rx)
    }

    /// Generates answers for several requests, returned in request order. Requests with
    /// the same adapter set are decoded together, in batches of up to `max_batch` rows
    /// (one forward pass per step); each keeps its own sampling settings, stop strings
    /// and limits.
    pub fn generate_batch(&self, requests: &[GenerateRequest]) -> Vec<Result<Generation>> {
        let pending: Vec<Result<Receiver<Result<Generation>>>> =
            requests.iter().map(|r| self.enqueue(r)).collect();
        pending
            .into_iter()
            .map(|p| p.and_then(|rx| self.wait(rx)))
            .collect()
    }

    fn enqueue(&self, request: &GenerateRequest) -> Result<Receiver<Result<Generation>>> {
        let set = request.adapter_set()?;
        let row = self.row(0, request)?;
        let (tx, rx) = mpsc::channel();
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Queued { set, row, tx });
        Ok(rx)
    }

    /// Waits for a queued request, driving batches whenever a session is free.
    fn wait(&self, rx: Receiver<Result<Generation>>) -> Result<Generation> {
        loop {
            if let Some(r) = self.drive(&rx) {
                return r;
            }
            match rx.recv_timeout(Duration::from_millis(2)) {
                Ok(r) => return r,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::InvalidRequest(
                        "the generation was dropped by a failed batch".into(),
                    ));
                }
            }
        }
    }

    /// Runs queued requests while a session is free and the queue is not empty; stops
    /// once the caller's own answer (`own`) has arrived and returns it. Other callers
    /// poll, so the queue never waits for long without a driver.
    fn drive(&self, own: &Receiver<Result<Generation>>) -> Option<Result<Generation>> {
        let shared = &self.shared;
        loop {
            if shared
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            {
                return None;
            }
            let Some(session) = shared.pool.try_checkout() else {
                // Another caller is driving; it re-checks the queue before it lets go.
                return None;
            };
            let mut lease = Lease {
                session: Some(session),
                shared: shared.clone(),
            };
            loop {
                let group = {
                    let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(head) = q.front() else { break };
                    let set = head.set.clone();
                    let mut group: Vec<Queued> = Vec::new();
                    let mut rest = VecDeque::with_capacity(q.len());
                    // Left padding makes every row as long as the longest prompt, and the
                    // batch runs as many steps as its longest request: both must fit the
                    // context together.
                    let (mut longest_prompt, mut most_new) = (0, 0);
                    let context = shared.config.context_length;
                    while let Some(item) = q.pop_front() {
                        let p = longest_prompt.max(item.row.context.len());
                        let n = most_new.max(item.row.max_tokens);
                        if item.set == set && group.len() < shared.max_batch && p + n <= context {
                            (longest_prompt, most_new) = (p, n);
                            group.push(item);
                        } else {
                            rest.push_back(item);
                        }
                    }
                    *q = rest;
                    (set, group)
                };
                run_group(shared, lease.session(), group.0, group.1);
                if let Ok(r) = own.try_recv() {
                    return Some(r);
                }
            }
            drop(lease);
            // A request queued after the last look, whose caller found no free session,
            // is picked up by the next turn of this loop.
        }
    }

    /// Streams one answer as text pieces; each piece is whole characters, and the pieces
    /// concatenate to [`Generation::text`]. Dropping the stream stops the generation.
    pub fn stream(&self, request: &GenerateRequest) -> Result<TextStream> {
        let set = request.adapter_set()?;
        let activation = self.shared.registry.activate(&set)?;
        let row = self.row(0, request)?;
        let lease = Lease::new(&self.shared);
        let batch = Batch::new(&self.shared, vec![row], activation, set)?;
        Ok(TextStream {
            lease,
            batch,
            failed: false,
        })
    }

    /// Teacher-forced log-probabilities: for each token of `continuation`, `log p(token |
    /// context, earlier continuation tokens)` under the given adapters, in one forward pass.
    pub fn log_probs(
        &self,
        context: &[u32],
        continuation: &[u32],
        adapters: &[(String, f32)],
    ) -> Result<Vec<f32>> {
        if context.is_empty() || continuation.is_empty() {
            return Err(Error::InvalidRequest(
                "log_probs needs a context and a continuation".into(),
            ));
        }
        let mut req = GenerateRequest::new(Prompt::Tokens(
            context.iter().chain(continuation).copied().collect(),
        ));
        for (id, w) in adapters {
            req = req.adapter(id.clone(), *w);
        }
        let set = req.adapter_set()?;
        let activation = self.shared.registry.activate(&set)?;
        let tokens = self.prompt_tokens(&req.prompt)?;
        if tokens.len() > self.shared.config.context_length {
            return Err(Error::PromptTooLong {
                tokens: tokens.len(),
                context: self.shared.config.context_length,
            });
        }
        let mut lease = Lease::new(&self.shared);
        let all = forward_all(&self.shared, lease.session(), &activation, &tokens)?;
        let v = self.shared.config.vocab_size;
        let start = context.len() - 1;
        continuation
            .iter()
            .enumerate()
            .map(|(j, &t)| {
                let row = &all[(start + j) * v..(start + j + 1) * v];
                if row.iter().any(|x| !x.is_finite()) {
                    return Err(Error::NonFiniteLogits {
                        step: 0,
                        row: start + j,
                    });
                }
                Ok(log_softmax_at(row, t as usize))
            })
            .collect()
    }

    /// Teacher-forced log-probabilities of `answer` after `prompt`, once per visibility
    /// mask over the prompt's tokens (`masks[v][i] == false` hides prompt token `i` from
    /// the answer). The prompt is run once; each mask then scores only the answer tokens
    /// against the cached prompt with those positions masked out, batched. Used to measure
    /// how much each part of a prompt (a retrieved source) contributes to an answer.
    ///
    /// The hidden tokens' keys and values are cut out of attention, not out of the prompt:
    /// later prompt tokens were still computed with them in view. The last prompt token is
    /// always visible (it is fed with the answer).
    pub fn score_masked(
        &self,
        prompt: &[u32],
        answer: &[u32],
        masks: &[Vec<bool>],
        adapters: &[(String, f32)],
    ) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.shared.config;
        let p = prompt.len();
        if p < 2 || answer.is_empty() {
            return Err(Error::InvalidRequest(
                "score_masked needs a prompt of at least 2 tokens and an answer".into(),
            ));
        }
        if p + answer.len() > cfg.context_length {
            return Err(Error::PromptTooLong {
                tokens: p + answer.len(),
                context: cfg.context_length,
            });
        }
        if let Some(m) = masks.iter().find(|m| m.len() != p) {
            return Err(Error::InvalidRequest(format!(
                "a mask has {} flags for a prompt of {p} tokens",
                m.len()
            )));
        }
        if let Some(&t) = prompt
            .iter()
            .chain(answer)
            .find(|&&t| t as usize >= cfg.vocab_size)
        {
            return Err(Error::InvalidRequest(format!(
                "token id {t} is outside the vocabulary ({})",
                cfg.vocab_size
            )));
        }
        let mut req = GenerateRequest::new(Prompt::Tokens(prompt.to_vec()));
        for (id, w) in adapters {
            req = req.adapter(id.clone(), *w);
        }
        let activation = self.shared.registry.activate(&req.adapter_set()?)?;
        let mut lease = Lease::new(&self.shared);
        let session = lease.session();
        // 1. The prompt but its last token, once.
        let prefix = p - 1;
        let ones = vec![1i64; prefix];
        let (_, present) = run(
            &self.shared,
            session,
            None,
            &activation,
            Inputs {
                ids: prompt[..prefix].iter().map(|&t| i64::from(t)).collect(),
                pos: (0..prefix as i64).collect(),
                mask: &ones,
                batch: 1,
                seq: prefix,
                total: prefix,
                past: empty_past(cfg, 1)?,
            },
            LogitsWanted::Last,
        )?;
        let cache: Vec<(Vec<usize>, Vec<f32>)> = present
            .iter()
            .map(|v| {
                v.try_extract_tensor::<f32>().map(|(shape, data)| {
                    (shape.iter().map(|&d| d as usize).collect(), data.to_vec())
                })
            })
            .collect::<std::result::Result<_, _>>()?;
        drop(present);
        // 2. The answer under each mask, a few masks per forward pass (the logits of every
        //    answer position are kept, so batches stay small).
        let a = answer.len();
        let v = cfg.vocab_size;
        let chunk = (self.shared.max_batch).clamp(1, 8);
        let mut ids_row: Vec<i64> = vec![i64::from(prompt[prefix])];
        ids_row.extend(answer[..a - 1].iter().map(|&t| i64::from(t)));
        let mut out = Vec::with_capacity(masks.len());
        for group in masks.chunks(chunk) {
            let b = group.len();
            let mut past = Vec::with_capacity(cache.len());
            for (shape, data) in &cache {
                let mut dims = shape.clone();
                dims[0] = b;
                let mut rep = Vec::with_capacity(data.len() * b);
                for _ in 0..b {
                    rep.extend_from_slice(data);
                }
                past.push(Tensor::from_array((dims, rep))?.into_dyn());
            }
            let mut mask = Vec::with_capacity(b * (prefix + a));
            for m in group {
                mask.extend(m[..prefix].iter().map(|&vis| i64::from(vis)));
                mask.extend(std::iter::repeat_n(1, a));
            }
            let ids: Vec<i64> = (0..b).flat_map(|_| ids_row.iter().copied()).collect();
            let pos: Vec<i64> = (0..b)
                .flat_map(|_| (prefix as i64)..(prefix + a) as i64)
                .collect();
            let (logits, _) = run(
                &self.shared,
                session,
                None,
                &activation,
                Inputs {
                    ids,
                    pos,
                    mask: &mask,
                    batch: b,
                    seq: a,
                    total: prefix + a,
                    past,
                },
                LogitsWanted::All,
            )?;
            for row in 0..b {
                let mut lp = Vec::with_capacity(a);
                for (j, &t) in answer.iter().enumerate() {
                    let l = &logits[(row * a + j) * v..(row * a + j + 1) * v];
                    if l.iter().any(|x| !x.is_finite()) {
                        return Err(Error::NonFiniteLogits { step: j, row });
                    }
                    lp.push(log_softmax_at(l, t as usize));
                }
                out.push(lp);
            }
        }
        Ok(out)
    }

    fn row(&self, index: usize, r: &GenerateRequest) -> Result<Row> {
        let sampler = Sampler::new(r.sampling.clone())?;
        let mut prompt = self.prompt_tokens(&r.prompt)?;
        let ctx = self.shared.config.context_length;
        if prompt.len() >= ctx {
            if !r.truncate {
                return Err(Error::PromptTooLong {
                    tokens: prompt.len(),
                    context: ctx,
                });
            }
            let keep = ctx.saturating_sub(r.max_tokens.clamp(1, ctx / 2)).max(1);
            prompt.drain(..prompt.len() - keep);
        }
        if r.max_tokens == 0 {
            return Err(Error::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        let max_tokens = r.max_tokens.min(ctx - prompt.len());
        Ok(Row {
            index,
            sampler,
            prompt_len: prompt.len(),
            context: prompt,
            generated: Vec::new(),
            max_tokens,
            stop: r.stop.clone(),
            ignore_eos: r.ignore_eos,
            decoder: StreamDecoder::new(true),
            text: String::new(),
            emitted: 0,
            finish: None,
            cancel: r.cancel.clone(),
        })
    }
}

/// Decodes one group of queued requests (same adapter set) and answers each.
fn run_group(shared: &Arc<Shared>, session: &mut Session, set: AdapterSet, group: Vec<Queued>) {
    let mut rows = Vec::with_capacity(group.len());
    let mut txs = Vec::with_capacity(group.len());
    for (i, mut q) in group.into_iter().enumerate() {
        q.row.index = i;
        rows.push(q.row);
        txs.push(q.tx);
    }
    let result = shared
        .registry
        .activate(&set)
        .and_then(|act| Batch::new(shared, rows, act, set))
        .and_then(|mut b| {
            while !b.done() {
                b.step(session)?;
            }
            Ok(b.into_generations())
        });
    match result {
        Ok(gens) => {
            for (tx, g) in txs.into_iter().zip(gens) {
                let _ = tx.send(Ok(g));
            }
        }
        Err(e) => {
            for tx in txs {
                let _ = tx.send(Err(e.share()));
            }
        }
    }
}

fn build_session(
    env: &ort::environment::Environment,
    onnx: &Path,
    threads: usize,
    device: Device,
) -> Result<(Session, Device)> {
    let base = || -> Result<ort::session::builder::SessionBuilder> {
        Session::builder(env)?
            // One "initializer appears in graph inputs" warning per LoRA input otherwise.
            .with_log_level(ort::logging::LogLevel::Error)
            .map_err(builder_err)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(builder_err)?
            .with_intra_threads(threads)
            .map_err(builder_err)
    };
    match device {
        Device::Cpu => Ok((base()?.commit_from_file(onnx)?, Device::Cpu)),
        Device::Cuda { device_id } => {
            #[cfg(feature = "cuda")]
            {
                let cuda = ort::ep::CUDA::default()
                    .with_device_id(device_id)
                    .build()
                    .error_on_failure();
                let attempt = base()?
                    .with_execution_providers([cuda])
                    .map_err(builder_err)
                    .and_then(|mut b| b.commit_from_file(onnx).map_err(Error::from));
                match attempt {
                    Ok(s) => return Ok((s, device)),
                    Err(e) => {
                        tracing::warn!(
                            "CUDA device {device_id} unavailable ({e}); running on the CPU"
                        );
                    }
                }
            }
            #[cfg(not(feature = "cuda"))]
            tracing::warn!(
                "CUDA device {device_id} asked for, but tribute-inference was built without the `cuda` feature; running on the CPU"
            );
            Ok((base()?.commit_from_file(onnx)?, Device::Cpu))
        }
    }
}

fn check_io(dir: &Path, c: &ModelConfig, session: &Session) -> Result<()> {
    let bad = |r: String| {
        Err(Error::model_dir(
            dir,
            format!("{r}; tribute.json and model.onnx do not match"),
        ))
    };
    let overridable: HashSet<String> = session
        .overridable_initializers()
        .iter()
        .map(|i| i.name().to_owned())
        .collect();
    let inputs: std::collections::HashMap<&str, &ort::value::ValueType> = session
        .inputs()
        .iter()
        .map(|i| (i.name(), i.dtype()))
        .collect();
    let outputs: std::collections::HashMap<&str, &ort::value::ValueType> = session
        .outputs()
        .iter()
        .map(|o| (o.name(), o.dtype()))
        .collect();
    // (name, expected dims: Some(n) fixed, None any)
    let kv = |name: String| {
        (
            name,
            vec![
                None,
                Some(c.num_kv_heads as i64),
                None,
                Some(c.head_dim as i64),
            ],
        )
    };
    let mut need_in = vec![
        (c.inputs.input_ids.clone(), vec![None, None]),
        (c.inputs.attention_mask.clone(), vec![None, None]),
    ];
    if let Some(p) = &c.inputs.position_ids
        && inputs.contains_key(p.as_str())
    {
        need_in.push((p.clone(), vec![None, None]));
    }
    let mut need_out = vec![(
        c.outputs.logits.clone(),
        vec![None, None, Some(c.vocab_size as i64)],
    )];
    for i in 0..c.num_layers {
        need_in.push(kv(layer_name(&c.inputs.past_key, i)));
        need_in.push(kv(layer_name(&c.inputs.past_value, i)));
        need_out.push(kv(layer_name(&c.outputs.present_key, i)));
        need_out.push(kv(layer_name(&c.outputs.present_value, i)));
    }
    let check = |what: &str,
                 names: &std::collections::HashMap<&str, &ort::value::ValueType>,
                 need: &[(String, Vec<Option<i64>>)]|
     -> Result<()> {
        for (n, dims) in need {
            let Some(t) = names.get(n.as_str()) else {
                return bad(format!(
                    "model.onnx has no {what} {n:?} that the config names"
                ));
            };
            if let Some(shape) = t.tensor_shape() {
                let got: Vec<i64> = shape.iter().copied().collect();
                let fits = got.len() == dims.len()
                    && got
                        .iter()
                        .zip(dims)
                        .all(|(g, d)| *g < 0 || d.is_none_or(|d| d == *g));
                if !fits {
                    return bad(format!(
                        "{what} {n:?} has shape {got:?}, the config implies {dims:?}"
                    ));
                }
            }
        }
        Ok(())
    };
    check("input", &inputs, &need_in)?;
    check("output", &outputs, &need_out)?;
    // Every graph input must be one the generator feeds.
    let known: HashSet<&str> = need_in.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(extra) = inputs.keys().find(|n| !known.contains(**n)) {
        return bad(format!(
            "model.onnx takes input {extra:?} that the config does not describe (the config's num_layers is {})",
            c.num_layers
        ));
    }
    for m in &c.lora.modules {
        for n in [&m.a, &m.b] {
            if !overridable.contains(n) && !inputs.contains_key(n.as_str()) {
                return bad(format!(
                    "model.onnx has no LoRA input {n:?} that the config names"
                ));
            }
        }
    }
    Ok(())
}

/// One sequence in a batch.
struct Row {
    index: usize,
    sampler: Sampler,
    prompt_len: usize,
    context: Vec<u32>,
    generated: Vec<u32>,
    max_tokens: usize,
    stop: Vec<String>,
    ignore_eos: bool,
    decoder: StreamDecoder,
    text: String,
    emitted: usize,
    finish: Option<FinishReason>,
    cancel: Option<CancelToken>,
}

impl Row {
    /// Bytes of `text` that can be shown: not a possible start of a stop string.
    fn safe_len(&self) -> usize {
        if self.finish.is_some() {
            return self.text.len();
        }
        let mut safe = self.text.len();
        for s in &self.stop {
            for k in (1..s.len()).rev() {
                if self.text.len() >= k
                    && s.is_char_boundary(k)
                    && self.text.is_char_boundary(self.text.len() - k)
                    && self.text.ends_with(&s[..k])
                {
                    safe = safe.min(self.text.len() - k);
                    break;
                }
            }
        }
        safe
    }

    fn push_text(&mut self, piece: &str) {
        let search_from = self
            .text
            .len()
            .saturating_sub(self.stop.iter().map(String::len).max().unwrap_or(0));
        self.text.push_str(piece);
        let mut from = search_from;
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self
            .stop
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|p| (from + p, s)))
            .min_by_key(|(p, _)| *p);
        if let Some((p, s)) = hit {
            let s = s.clone();
            self.text.truncate(p);
            self.finish = Some(FinishReason::Stop(s));
        }
    }
}

/// The decode state of a batch of rows sharing one adapter set.
///
/// The KV cache stays where the session put it (host memory on the CPU, device memory
/// with CUDA) and is bound straight back as the next step's past through an `IoBinding`;
/// the adapter tensors are bound once per batch. Finished rows are dropped from the cache
/// when it is host memory; on a device they ride along (their tokens are ignored).
struct Batch {
    shared: Arc<Shared>,
    rows: Vec<Row>,
    /// Rows in the KV cache, as indices into `rows`, in cache order.
    kv: Vec<usize>,
    activation: Activation,
    set: AdapterSet,
    binding: Option<IoBinding>,
    past: Vec<DynValue>,
    /// Attention mask of the cached rows, `[kv, total]`, row-major.
    mask: Vec<i64>,
    total: usize,
    /// Next position id of each cached row.
    next_pos: Vec<i64>,
    step: usize,
    prefill: Duration,
    decode: Duration,
    batch_size: usize,
}

impl Batch {
    fn new(
        shared: &Arc<Shared>,
        rows: Vec<Row>,
        activation: Activation,
        set: AdapterSet,
    ) -> Result<Self> {
        let n = rows.len();
        Ok(Batch {
            shared: shared.clone(),
            kv: (0..n).collect(),
            rows,
            activation,
            set,
            binding: None,
            past: Vec::new(),
            mask: Vec::new(),
            total: 0,
            next_pos: Vec::new(),
            step: 0,
            prefill: Duration::ZERO,
            decode: Duration::ZERO,
            batch_size: n,
        })
    }

    fn done(&self) -> bool {
        self.kv.iter().all(|&r| self.rows[r].finish.is_some())
    }

    /// Ends every row that is still running (cancel or error).
    fn stop_all(&mut self, reason: FinishReason) {
        for r in &mut self.rows {
            if r.finish.is_none() {
                r.finish = Some(reason.clone());
            }
        }
        self.kv.clear();
        self.past.clear();
        self.binding = None;
    }

    /// Runs one forward pass (the prefill first) and appends one token to every running row.
    fn step(&mut self, session: &mut Session) -> Result<()> {
        // Honour cancellation before spending a forward pass.
        for &r in &self.kv {
            let row = &mut self.rows[r];
            if row.finish.is_none() && row.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
                row.finish = Some(FinishReason::Cancelled);
            }
        }
        if self.done() {
            self.kv.clear();
            self.past.clear();
            self.binding = None;
            return Ok(());
        }
        self.compact()?;
        let t0 = Instant::now();
        let cfg = &self.shared.config;
        let b = self.kv.len();
        let (ids, pos, seq) = if self.step == 0 {
            let seq = self
                .kv
                .iter()
                .map(|&r| self.rows[r].context.len())
                .max()
                .unwrap_or(1);
            let pad = i64::from(
                cfg.pad_token_id
                    .or(cfg.eos_token_ids.first().copied())
                    .unwrap_or(0),
            );
            let mut ids = Vec::with_capacity(b * seq);
            let mut pos = Vec::with_capacity(b * seq);
            self.mask = Vec::with_capacity(b * seq);
            for &r in &self.kv {
                let ctx = &self.rows[r].context;
                let padn = seq - ctx.len();
                ids.extend(std::iter::repeat_n(pad, padn));
                ids.extend(ctx.iter().map(|&t| i64::from(t)));
                pos.extend(std::iter::repeat_n(0, padn));
                pos.extend(0..ctx.len() as i64);
                self.mask.extend(std::iter::repeat_n(0, padn));
                self.mask.extend(std::iter::repeat_n(1, ctx.len()));
            }
            self.next_pos = self
                .kv
                .iter()
                .map(|&r| self.rows[r].context.len() as i64)
                .collect();
            self.total = seq;
            self.past = empty_past(cfg, b)?;
            if self.shared.io_binding {
                self.binding = Some(new_binding(session, &self.activation)?);
            }
            (ids, pos, seq)
        } else {
            let ids: Vec<i64> = self
                .kv
                .iter()
                .map(|&r| i64::from(*self.rows[r].context.last().unwrap_or(&0)))
                .collect();
            let pos = self.next_pos.clone();
            for p in &mut self.next_pos {
                *p += 1;
            }
            // Extend the mask by one attended column.
            let t = self.total;
            let mut mask = Vec::with_capacity(b * (t + 1));
            for i in 0..b {
                mask.extend_from_slice(&self.mask[i * t..(i + 1) * t]);
                mask.push(1);
            }
            self.mask = mask;
            self.total = t + 1;
            (ids, pos, 1)
        };
        let past = std::mem::take(&mut self.past);
        let (last_logits, present) = run(
            &self.shared,
            session,
            self.binding.as_mut(),
            &self.activation,
            Inputs {
                ids,
                pos,
                mask: &self.mask,
                batch: b,
                seq,
                total: self.total,
                past,
            },
            LogitsWanted::Last,
        )?;
        self.past = present;
        let v = cfg.vocab_size;
        let step = self.step;
        for (i, &r) in self.kv.iter().enumerate() {
            let row = &mut self.rows[r];
            if row.finish.is_some() {
                continue;
            }
            let mut logits = last_logits[i * v..(i + 1) * v].to_vec();
            let Some(tok) = row.sampler.sample(&mut logits, &row.context) else {
                return Err(Error::NonFiniteLogits {
                    step,
                    row: row.index,
                });
            };
            row.context.push(tok);
            row.generated.push(tok);
            let is_eos = cfg.eos_token_ids.contains(&tok);
            if is_eos && !row.ignore_eos {
                row.finish = Some(FinishReason::Eos);
            } else if let Some(piece) = row.decoder.step(&self.shared.tokenizer, tok)? {
                row.push_text(&piece);
            }
            if row.finish.is_none() && row.generated.len() >= row.max_tokens {
                row.finish = Some(FinishReason::Length);
            }
            if row.finish.is_some()
                && !matches!(row.finish, Some(FinishReason::Stop(_)))
                && let Some(rest) = row.decoder.finish(&self.shared.tokenizer)?
            {
                row.push_text(&rest);
            }
        }
        let dt = t0.elapsed();
        if self.step == 0 {
            self.prefill = dt;
        } else {
            self.decode += dt;
        }
        self.step += 1;
        if self.done() {
            self.kv.clear();
            self.past.clear();
            self.binding = None;
        }
        Ok(())
    }

    /// Drops finished rows from a host-memory KV cache, mask and positions.
    fn compact(&mut self) -> Result<()> {
        let keep: Vec<usize> = (0..self.kv.len())
            .filter(|&i| self.rows[self.kv[i]].finish.is_none())
            .collect();
        if keep.len() == self.kv.len() || self.step == 0 {
            if self.step == 0 {
                self.kv = keep.iter().map(|&i| self.kv[i]).collect();
            }
            return Ok(());
        }
        let t = self.total;
        let mut past = Vec::with_capacity(self.past.len());
        for v in &self.past {
            let Ok((shape, data)) = v.try_extract_tensor::<f32>() else {
                // Device memory: keep the finished rows in the cache.
                return Ok(());
            };
            let per_row: usize = shape.iter().skip(1).map(|&d| d as usize).product();
            let mut sel = Vec::with_capacity(keep.len() * per_row);
            for &i in &keep {
                sel.extend_from_slice(&data[i * per_row..(i + 1) * per_row]);
            }
            let mut dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            dims[0] = keep.len();
            past.push(Tensor::from_array((dims, sel))?.into_dyn());
        }
        self.past = past;
        self.mask = keep
            .iter()
            .flat_map(|&i| self.mask[i * t..(i + 1) * t].iter().copied())
            .collect();
        self.next_pos = keep.iter().map(|&i| self.next_pos[i]).collect();
        self.kv = keep.iter().map(|&i| self.kv[i]).collect();
        Ok(())
    }

    fn generation(&self, row: &Row) -> Generation {
        let decode_tokens = row.generated.len().saturating_sub(1);
        Generation {
            text: row.text.clone(),
            tokens: row.generated.clone(),
            prompt_tokens: row.prompt_len,
            finish_reason: row.finish.clone().unwrap_or(FinishReason::Length),
            adapters: self.set.items().to_vec(),
            timings: Timings {
                prefill: self.prefill,
                decode: self.decode,
                decode_tokens,
                batch_size: self.batch_size,
            },
        }
    }

    fn into_generations(self) -> Vec<Generation> {
        self.rows.iter().map(|r| self.generation(r)).collect()
    }
}

/// `log softmax(logits)[t]`, computed stably.
fn log_softmax_at(logits: &[f32], t: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|x| f64::from(x - max).exp()).sum();
    logits[t] - max - sum.ln() as f32
}

/// Zero-length past tensors for a prefill.
fn empty_past(cfg: &ModelConfig, batch: usize) -> Result<Vec<DynValue>> {
    let mut v = Vec::with_capacity(2 * cfg.num_layers);
    for _ in 0..2 * cfg.num_layers {
        let t = Tensor::<f32>::from_array((
            [batch, cfg.num_kv_heads, 0, cfg.head_dim],
            Vec::<f32>::new(),
        ))?;
        v.push(t.into_dyn());
    }
    Ok(v)
}

/// Memory where the session leaves the KV cache: its device.
fn cache_memory(device: Device) -> Result<MemoryInfo<'static>> {
    Ok(match device {
        Device::Cpu => MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )?,
        Device::Cuda { device_id } => MemoryInfo::new(
            AllocationDevice::CUDA,
            device_id,
            AllocatorType::Device,
            MemoryType::Default,
        )?,
    })
}

/// A binding with the adapter tensors bound (copied to the device once per batch).
fn new_binding(session: &Session, activation: &Activation) -> Result<IoBinding> {
    let mut binding = session.create_binding()?;
    if let Activation::Feed(feed) = activation {
        for (name, v) in &feed.inputs {
            binding.bind_input(name.as_str(), v)?;
        }
    }
    Ok(binding)
}

/// Binds the outputs afresh (ONNX Runtime would otherwise reuse the previous run's
/// tensors, whose sequence length no longer fits): logits to host memory, present
/// key/values to the session's device.
fn bind_outputs(shared: &Shared, binding: &mut IoBinding) -> Result<()> {
    let cfg = &shared.config;
    binding.clear_outputs();
    let host = cache_memory(Device::Cpu)?;
    let cache = cache_memory(shared.device)?;
    binding.bind_output_to_device(cfg.outputs.logits.as_str(), &host)?;
    for i in 0..cfg.num_layers {
        for pattern in [&cfg.outputs.present_key, &cfg.outputs.present_value] {
            binding.bind_output_to_device(layer_name(pattern, i), &cache)?;
        }
    }
    Ok(())
}

struct Inputs<'a> {
    ids: Vec<i64>,
    pos: Vec<i64>,
    mask: &'a [i64],
    batch: usize,
    seq: usize,
    total: usize,
    past: Vec<DynValue>,
}

#[derive(PartialEq, Eq)]
enum LogitsWanted {
    Last,
    All,
}

/// One forward pass: returns the logits (last position of each row, or all positions) and
/// the present key/values (left where the session put them).
fn run(
    shared: &Shared,
    session: &mut Session,
    binding: Option<&mut IoBinding>,
    activation: &Activation,
    x: Inputs<'_>,
    wanted: LogitsWanted,
) -> Result<(Vec<f32>, Vec<DynValue>)> {
    let cfg = &shared.config;
    let mut inputs: Vec<(String, DynValue)> = Vec::with_capacity(3 + 2 * cfg.num_layers);
    inputs.push((
        cfg.inputs.input_ids.clone(),
        Tensor::from_array(([x.batch, x.seq], x.ids))?.into_dyn(),
    ));
    inputs.push((
        cfg.inputs.attention_mask.clone(),
        Tensor::from_array(([x.batch, x.total], x.mask.to_vec()))?.into_dyn(),
    ));
    if let Some(p) = &cfg.inputs.position_ids
        && shared.graph_inputs.contains(p)
    {
        inputs.push((
            p.clone(),
            Tensor::from_array(([x.batch, x.seq], x.pos))?.into_dyn(),
        ));
    }
    let mut past = x.past.into_iter();
    for i in 0..cfg.num_layers {
        for pattern in [&cfg.inputs.past_key, &cfg.inputs.past_value] {
            let v = past
                .next()
                .ok_or_else(|| Error::InvalidRequest("KV cache is missing layers".into()))?;
            inputs.push((layer_name(pattern, i), v));
        }
    }
    let mut outputs = match (activation, binding) {
        (Activation::Feed(_), Some(binding)) => {
            for (name, v) in &inputs {
                binding.bind_input(name.as_str(), v)?;
            }
            drop(inputs);
            bind_outputs(shared, binding)?;
            session.run_binding(binding)?
        }
        // On the CPU a plain run is faster: its outputs come from the session's arena,
        // while outputs bound to a device are fresh allocations every step.
        (Activation::Feed(feed), None) => {
            let mut all: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = inputs
                .into_iter()
                .map(|(n, v)| (Cow::Owned(n), SessionInputValue::from(v)))
                .collect();
            for (n, v) in &feed.inputs {
                all.push((Cow::Borrowed(n.as_str()), SessionInputValue::from(v)));
            }
            session.run(all)?
        }
        // ONNX Runtime applies the adapters of run options only in a plain run, not in a
        // run with an IoBinding: `.onnx_adapter` requests take the plain path (host KV).
        (Activation::RunOptions(opts), _) => session.run_with_options(inputs, opts)?,
    };
    let logits_v = outputs
        .get(&cfg.outputs.logits)
        .ok_or_else(|| Error::InvalidRequest("the model returned no logits".into()))?;
    let (shape, data) = logits_v.try_extract_tensor::<f32>()?;
    let v = cfg.vocab_size;
    if shape.len() != 3 || shape[2] as usize != v || shape[0] as usize != x.batch {
        return Err(Error::model_dir(
            &shared.dir,
            format!(
                "logits have shape {shape:?}, expected [{}, seq, {v}]",
                x.batch
            ),
        ));
    }
    let s = shape[1] as usize;
    let logits = match wanted {
        LogitsWanted::All => data.to_vec(),
        LogitsWanted::Last => {
            let mut l = Vec::with_capacity(x.batch * v);
            for b in 0..x.batch {
                let off = (b * s + s - 1) * v;
                l.extend_from_slice(&data[off..off + v]);
            }
            l
        }
    };
    let mut present = Vec::with_capacity(2 * cfg.num_layers);
    for i in 0..cfg.num_layers {
        for pattern in [&cfg.outputs.present_key, &cfg.outputs.present_value] {
            let name = layer_name(pattern, i);
            present.push(outputs.remove(&name).ok_or_else(|| {
                Error::model_dir(&shared.dir, format!("the model returned no {name}"))
            })?);
        }
    }
    Ok((logits, present))
}

/// Logits of every position of one sequence (`[len, vocab]`, row-major).
fn forward_all(
    shared: &Shared,
    session: &mut Session,
    activation: &Activation,
    tokens: &[u32],
) -> Result<Vec<f32>> {
    let n = tokens.len();
    let mask = vec![1i64; n];
    let mut binding = if shared.io_binding {
        Some(new_binding(session, activation)?)
    } else {
        None
    };
    let (logits, _) = run(
        shared,
        session,
        binding.as_mut(),
        activation,
        Inputs {
            ids: tokens.iter().map(|&t| i64::from(t)).collect(),
            pos: (0..n as i64).collect(),
            mask: &mask,
            batch: 1,
            seq: n,
            total: n,
            past: empty_past(&shared.config, 1)?,
        },
        LogitsWanted::All,
    )?;
    Ok(logits)
}

/// Text pieces of one generation, produced as the model decodes. See [`Generator::stream`].
pub struct TextStream {
    lease: Lease,
    batch: Batch,
    failed: bool,
}

impl TextStream {
    /// The finished generation (text, tokens, finish reason, timings) once the stream has
    /// ended; `None` while it is still running.
    pub fn generation(&self) -> Option<Generation> {
        self.batch
            .done()
            .then(|| self.batch.generation(&self.batch.rows[0]))
    }

    /// Stops the generation; the stream ends after this.
    pub fn cancel(&mut self) {
        self.batch.stop_all(FinishReason::Cancelled);
    }
}

impl Iterator for TextStream {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let row = &self.batch.rows[0];
            let safe = row.safe_len();
            if safe > row.emitted {
                let piece = row.text[row.emitted..safe].to_owned();
                self.batch.rows[0].emitted = safe;
                return Some(Ok(piece));
            }
            if self.failed || self.batch.done() {
                return None;
            }
            if let Err(e) = self.batch.step(self.lease.session()) {
                self.failed = true;
                self.batch.stop_all(FinishReason::Cancelled);
                return Some(Err(e));
            }
        }
    }
}

impl std::fmt::Debug for TextStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextStream")
            .field("emitted", &self.batch.rows[0].emitted)
            .field("done", &self.batch.done())
            .finish()
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Generator>();
    fn send<T: Send>() {}
    send::<TextStream>();
}

#[cfg(test)]
mod tests {
    use super::CancelToken;

    #[test]
    fn a_drop_guard_cancels_unless_disarmed() {
        let token = CancelToken::new();
        token.drop_guard().disarm();
        assert!(!token.is_cancelled());
        let clone = token.clone();
        drop(token.drop_guard());
        assert!(token.is_cancelled() && clone.is_cancelled() && clone == token);
        assert_ne!(CancelToken::new(), token);
    }
}
