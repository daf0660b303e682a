//! The generator: a model directory loaded into a pool of ONNX Runtime sessions, decoding
//! one or many prompts with a KV cache, per-request sampling, stop strings, adapters and
//! streaming.
//!
//! - `request`: what callers pass in and get back ([`GenerateRequest`], [`Generation`], ...).
//! - `session`: building an ONNX Runtime session and checking its inputs/outputs against the
//!   model's config; `pool`: the sessions with their running batches, checked out per step.
//! - `queue`: scheduling (continuous batching): requests queue up and join running batches
//!   at step boundaries.
//! - `row`: one request's decode state and replies; `batch`: a running batch (prefill,
//!   decode steps, rows joining and leaving); `cache`: reshaping its KV cache on the host.
//! - `forward`: one forward pass (inputs, KV cache, `IoBinding`).
//! - `in_place`, `kv_buffer`: the static layout (`--ops static`): rows in fixed buffers that
//!   the graph writes in place; `graph_step`: its decode steps at fixed shapes and addresses,
//!   captured as CUDA graphs.
//! - `stream`: [`TextStream`]; `scoring`: teacher-forced log-probabilities, read off the
//!   logits by `log_softmax`.

mod batch;
mod cache;
mod capture;
mod device_copy;
mod device_sampler;
mod engine_thread;
mod forward;
mod graph_step;
mod in_place;
mod kv_buffer;
mod log_softmax;
mod pool;
mod prompt_cache;
mod prompt_chunks;
mod queue;
mod request;
mod row;
mod scoring;
mod session;
mod slots;
mod stream;

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

use crate::adapter::{AdapterId, AdapterSource};
use crate::config::{GraphOps, ModelConfig};
use crate::error::{Error, Result};
use crate::registry::{AdapterRegistry, DEFAULT_ADAPTER_BUDGET};
use crate::tokenizer::Tokenizer;

use pool::Pool;
pub use prompt_cache::PromptCacheStats;
use queue::Queued;
pub use request::{
    CancelGuard, CancelToken, FinishReason, GenerateRequest, Generation, Prompt, Timings,
};
pub use stream::TextStream;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
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
    /// Most rows in flight per session: requests decoded together, joining and leaving the
    /// running batches at step boundaries (default 32).
    pub max_batch: usize,
    /// Most requests waiting for a place in a running batch (default 1024); a request that
    /// finds the queue full fails at once with [`Error::Overloaded`].
    pub max_queue: usize,
    /// Adapter slots per session (default 0: off). With slots, rows of different adapter
    /// sets (and base-model rows) share one running batch and one forward pass per step;
    /// without, each adapter set runs its own batch. Needs a model exported with the
    /// `lora_mask` input. See `docs/INFERENCE.md` for when it pays.
    pub adapter_slots: usize,
    /// LoRA rank columns per slot (default 16): an adapter set of a larger rank (a merge's
    /// is its adapters' ranks summed) runs in a batch of its own set, as without slots.
    pub slot_rank: usize,
    /// Keep the KV cache where the session puts it through an ONNX Runtime `IoBinding`
    /// (`None`: only on CUDA, where it saves the device↔host copies; on the CPU a plain run
    /// is faster).
    pub io_binding: Option<bool>,
    /// Bounds on the adapters this generator loads (rank, bytes of their files); see
    /// [`AdapterLimits`](crate::AdapterLimits).
    pub adapter_limits: crate::AdapterLimits,
    /// Bytes of prompt KV caches kept for scoring the answers generated from them
    /// (requests marked [`GenerateRequest::keep_prompt_cache`]; least recently used
    /// dropped first; `0`: off). Default [`DEFAULT_PROMPT_CACHE_BYTES`].
    pub prompt_cache_bytes: usize,
    /// Decode steps as ONNX Runtime CUDA graphs (`None`: on for a `--ops static` export on
    /// CUDA). A step's launches are captured once per batch's buffers and replayed, which
    /// takes the per-kernel launch cost out of every step; steps then cover every row the
    /// buffers hold (a power of two) at their full width. A graph ONNX Runtime cannot
    /// capture runs uncaptured, with one warning. `Some(true)` on the CPU runs the same
    /// fixed-shape steps without capture (what tests check; no faster there, and rows of
    /// padding cost their compute); `Some(true)` on another layout is an error.
    pub cuda_graphs: Option<bool>,
    /// With CUDA graphs: bytes of finished batches' cache buffers each session keeps, with
    /// their captured steps, for later batches of the same row count to replay instead of
    /// capturing again (at most two buffers; `0`: none kept, every batch captures anew and
    /// its memory is freed when it ends). Default [`DEFAULT_SPARE_BUFFER_BYTES`].
    pub spare_buffer_bytes: usize,
    /// Prompt tokens per forward pass when prefilling (default [`DEFAULT_PREFILL_CHUNK`];
    /// `0`: the whole prompt in one pass). A longer prompt runs in chunks, each against the
    /// cache of the chunks before it: the same logits, about half the attention work of a
    /// long prompt and a fraction of its peak memory (`docs/INFERENCE.md`, "Long prompts in
    /// chunks"). Graphs with `--ops static` prefill each row into its buffer a chunk a pass.
    pub prefill_chunk: usize,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        GeneratorOptions {
            device: Device::Cpu,
            sessions: 1,
            intra_threads: None,
            adapter_budget_bytes: DEFAULT_ADAPTER_BUDGET,
            max_batch: 32,
            max_queue: DEFAULT_MAX_QUEUE,
            adapter_slots: 0,
            slot_rank: DEFAULT_SLOT_RANK,
            io_binding: None,
            adapter_limits: crate::AdapterLimits::default(),
            prompt_cache_bytes: DEFAULT_PROMPT_CACHE_BYTES,
            cuda_graphs: None,
            spare_buffer_bytes: DEFAULT_SPARE_BUFFER_BYTES,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
        }
    }
}

/// Default [`GeneratorOptions::prefill_chunk`].
pub const DEFAULT_PREFILL_CHUNK: usize = 256;

/// Default [`GeneratorOptions::prompt_cache_bytes`]: 128 MiB, a few prompts of a small
/// model (SmolLM2-135M keeps 46 KB per token) or one long one of a 1B model.
pub const DEFAULT_PROMPT_CACHE_BYTES: usize = 128 << 20;

/// Default [`GeneratorOptions::spare_buffer_bytes`]: 4 GiB, one buffer of 32 rows × 2,048
/// tokens of a Llama-3.2-1B-shaped model in float16 (2.1 GB), or two smaller ones.
pub const DEFAULT_SPARE_BUFFER_BYTES: usize = 4 << 30;

/// Default [`GeneratorOptions::slot_rank`].
pub const DEFAULT_SLOT_RANK: usize = 16;

/// Default [`GeneratorOptions::max_queue`].
pub const DEFAULT_MAX_QUEUE: usize = 1024;

/// What every clone of a [`Generator`] shares: the model, its sessions and the queue.
struct Shared {
    /// Requests waiting for a place in a running batch (see `queue`).
    queue: Mutex<VecDeque<Queued>>,
    /// Requests accepted and not answered yet (queued or in flight).
    pending: Arc<AtomicUsize>,
    max_queue: usize,
    dir: PathBuf,
    config: ModelConfig,
    tokenizer: Tokenizer,
    pool: Pool,
    registry: AdapterRegistry,
    /// The session's inputs, LoRA inputs included.
    graph_inputs: HashSet<String>,
    /// The graph's input that limits logits to the last positions, if it has one (models
    /// exported before it return logits for every position).
    logits_to_keep: Option<String>,
    /// The graph's per-row LoRA column mask, when adapter slots are on.
    lora_mask: Option<String>,
    /// Adapter slots per session (0: off).
    adapter_slots: usize,
    /// Columns per adapter slot.
    slot_rank: usize,
    device: Device,
    max_batch: usize,
    io_binding: bool,
    /// Prompt tokens per prefill pass (0: all at once).
    prefill_chunk: usize,
    /// How each vocabulary token ends, built the first time a request asks for
    /// `no_end_after_colon` or `repeat_stop_grace`.
    token_endings: OnceLock<crate::sampling::TokenEndings>,
    /// Prompts' KV caches kept for scoring their answers.
    prompt_cache: prompt_cache::PromptCache,
    /// Wakes callers waiting for an engine (see `queue`).
    wakeup: Arc<queue::Wakeup>,
    /// Decode steps at fixed shapes and addresses, captured as CUDA graphs where the
    /// sessions capture (`None`: steps as wide as their rows).
    graph_steps: Option<capture::GraphSteps>,
}

impl Shared {
    /// Run options for a run that is not a captured decode step, when the sessions capture
    /// CUDA graphs.
    fn uncaptured(&self) -> Option<&ort::session::RunOptions> {
        self.graph_steps
            .as_ref()
            .and_then(capture::GraphSteps::uncaptured)
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
        let env = tribute_common::environment()?;
        let n_sessions = options.sessions.max(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = options
            .intra_threads
            .unwrap_or((cores / n_sessions).max(1))
            .max(1);
        let fixed_steps = match (options.cuda_graphs, config.ops) {
            (Some(true), ops) if ops != GraphOps::Static => {
                return Err(Error::InvalidRequest(format!(
                    "cuda_graphs needs a static-layout export (--ops static); {} is {ops:?}",
                    dir.display()
                )));
            }
            (Some(on), _) => on,
            (None, ops) => ops == GraphOps::Static && options.device != Device::Cpu,
        };
        let mut device = options.device;
        // Graphs are asked of later sessions only if every earlier one took them.
        let (mut ask, mut any_captures) = (fixed_steps, false);
        let mut sessions = Vec::with_capacity(n_sessions);
        for _ in 0..n_sessions {
            let (s, used, captures) = session::build_session(&env, &onnx, threads, device, ask)
                .map_err(|e| Error::model_dir(&dir, format!("model.onnx does not load: {e}")))?;
            device = used;
            ask &= captures;
            any_captures |= captures;
            sessions.push(s);
        }
        // Fixed steps where asked for, or on CUDA where sessions capture; a session that
        // captures needs every run to carry a graph id, even if another session does not.
        let graph_steps = if options.cuda_graphs == Some(true) || any_captures {
            Some(capture::GraphSteps::new(any_captures)?)
        } else {
            None
        };
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
        session::check_io(&dir, &config, &sessions[0])?;
        let logits_to_keep = config
            .inputs
            .logits_to_keep
            .clone()
            .filter(|n| graph_inputs.contains(n));
        let lora_mask = if options.adapter_slots > 0 && !config.lora.modules.is_empty() {
            let name = config
                .lora
                .mask
                .clone()
                .filter(|n| graph_inputs.contains(n))
                .ok_or_else(|| {
                    Error::model_dir(
                        &dir,
                        "adapter slots need the lora_mask input, which this model was exported without; re-export it with the current tribute_export, or set GeneratorOptions::adapter_slots to 0",
                    )
                })?;
            Some(name)
        } else {
            None
        };
        let mut banks = Vec::with_capacity(sessions.len());
        for _ in &sessions {
            banks.push(match lora_mask {
                Some(_) => Some(slots::SlotBank::new(
                    &config.lora,
                    options.adapter_slots,
                    options.slot_rank.max(1),
                )?),
                None => None,
            });
        }
        let model_name = config.name.clone();
        let registry = AdapterRegistry::new(
            config.lora.modules.clone(),
            model_name,
            options.adapter_budget_bytes,
        )
        .with_limits(options.adapter_limits)
        .with_dtype(config.lora.dtype);
        Ok(Generator {
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::new()),
                pending: Arc::new(AtomicUsize::new(0)),
                wakeup: Arc::default(),
                max_queue: options.max_queue.max(1),
                dir,
                config,
                tokenizer,
                pool: Pool::new(
                    sessions.into_iter().zip(banks).collect(),
                    options.spare_buffer_bytes,
                    graph_steps.is_some(),
                )?,
                registry,
                graph_inputs,
                logits_to_keep,
                adapter_slots: if lora_mask.is_some() {
                    options.adapter_slots
                } else {
                    0
                },
                lora_mask,
                slot_rank: options.slot_rank.max(1),
                device,
                max_batch: options.max_batch.max(1),
                io_binding: options.io_binding.unwrap_or(device != Device::Cpu),
                prefill_chunk: options.prefill_chunk,
                token_endings: OnceLock::new(),
                prompt_cache: prompt_cache::PromptCache::new(options.prompt_cache_bytes),
                graph_steps,
            }),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.shared.config
    }
    /// Adapter slots per session (0: off) and the LoRA rank columns of each.
    pub fn adapter_slots(&self) -> (usize, usize) {
        (self.shared.adapter_slots, self.shared.slot_rank)
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
    /// Whether decode steps are being captured as CUDA graphs (see
    /// [`GeneratorOptions::cuda_graphs`]): false on the CPU, where ONNX Runtime refused them,
    /// and once a capture failed.
    pub fn captures_cuda_graphs(&self) -> bool {
        self.shared
            .graph_steps
            .as_ref()
            .is_some_and(capture::GraphSteps::capturing)
    }
    /// The adapter registry.
    pub fn adapters(&self) -> &AdapterRegistry {
        &self.shared.registry
    }
    /// Counters of the prompt KV caches kept for scoring (see
    /// [`GenerateRequest::keep_prompt_cache`]).
    pub fn prompt_cache_stats(&self) -> PromptCacheStats {
        self.shared.prompt_cache.stats()
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
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Generator>();
    fn send<T: Send>() {}
    send::<TextStream>();
}
