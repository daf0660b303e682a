//! The engine's configuration: one serde struct, loadable from a TOML file, every field
//! with a documented default. The "A config file" section of `docs/GETTING_STARTED.md` shows a complete file.
//!
//! ```toml
//! index = "kb"                      # the knowledge base directory (created if missing)
//! model = "~/.cache/tribute/models/SmolLM2-135M-Instruct"
//!
//! [[adapters]]
//! id = "zephyr"
//! path = "adapters/zephyr"
//!
//! [retrieval]
//! top_k = 4
//!
//! [attribution]
//! method = "loo"
//!
//! [receipts]
//! fee_wei = "1000000000000000"
//! journal = "receipts"
//! key_env = "TRIBUTE_KEY"
//! ledger = { chainId = 31337, contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3" }
//!
//! [chain]
//! rpc = "http://127.0.0.1:8545"
//! ```
//!
//! Relative paths are resolved against the config file's directory by
//! [`EngineConfig::from_toml_file`]; a leading `~/` is the home directory.

use std::path::{Path, PathBuf};

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};
use tribute_attribution::receipt::Ledger;
use tribute_attribution::split::RewardConfig;
use tribute_attribution::{AttributionConfig as MethodConfig, Method};
use tribute_common::address::eip55_opt;
use tribute_index::Mode;

use crate::error::{Error, Result};
pub use crate::source_guard::{DatanetConfig, SourceGuardConfig, TrustLevel};

/// Everything an [`crate::Engine`] is built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The knowledge base directory (created if missing), or a `postgres://` URL (feature
    /// `postgres`). Default `kb`.
    pub index: PathBuf,
    /// A streaming replica of the Postgres knowledge base (`index = "postgres://…"`):
    /// searches read from it, writes go to `index`. A search right after a write may not
    /// see it until the replica catches up (see `docs/SCALING.md`). Default none.
    pub replica_url: Option<String>,
    /// The embedding model directory; `None`: the default MiniLM
    /// (`~/.cache/tribute/models/all-MiniLM-L6-v2`, see `tribute_index::embedder`).
    pub embedder: Option<PathBuf>,
    /// Use no embedder at all (a BM25-only knowledge base). Default false.
    pub bm25_only: bool,
    /// The generator's model directory, or a hub model `hf:ORG/NAME[@REVISION]` (its
    /// export, pulled when missing: see [`crate::hub`]); `None`: the default exported
    /// SmolLM2.
    pub model: Option<PathBuf>,
    /// LoRA adapters to register (loaded on first use).
    pub adapters: Vec<AdapterConfig>,
    /// Retrieval settings.
    pub retrieval: RetrievalConfig,
    /// Generation settings.
    pub generation: GenerationConfig,
    /// Attribution settings.
    pub attribution: AttributionConfig,
    /// The reward split policy and governance (used when settling).
    pub rewards: RewardConfig,
    /// Receipt signing and journaling.
    pub receipts: ReceiptConfig,
    /// Where receipts are settled (needs the `onchain` feature to settle).
    pub chain: Option<ChainConfig>,
    /// How answers are made: `generative` (the model writes them; the default) or
    /// `extractive` (the source sentences that best answer the question, no model
    /// needed: with `extractive` and no `model` set, no generator is loaded).
    pub answer_mode: AnswerMode,
    /// Extractive answers' settings.
    pub extractive: ExtractiveConfig,
    /// Per-datanet settings by datanet id (`[datanets.NAME] trust = "low"`); datanets not
    /// listed are of normal trust.
    pub datanets: std::collections::BTreeMap<String, DatanetConfig>,
    /// The source guard: alerts on answers a low-trust or barely relevant source dominates.
    pub source_guard: SourceGuardConfig,
    /// Bounds on what one request, document or adapter may ask of the engine.
    pub limits: LimitsConfig,
}

/// How an answer is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// The model writes the answer from the sources (default).
    #[default]
    Generative,
    /// The answer is the source sentences most similar to the question, each cited; no
    /// model runs, so every word is attributable by construction.
    Extractive,
}

impl std::str::FromStr for AnswerMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "generative" => Ok(AnswerMode::Generative),
            "extractive" => Ok(AnswerMode::Extractive),
            other => Err(Error::InvalidRequest(format!(
                "unknown answer mode {other:?} (generative or extractive)"
            ))),
        }
    }
}

/// Extractive answers' settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractiveConfig {
    /// Most sentences in an answer. Default 2 (measured in `docs/QUALITY.md`).
    pub sentences: usize,
    /// A sentence is used only when its similarity to the question is at least this
    /// share of the best sentence's. Default 0.8.
    pub min_ratio: f32,
}

impl Default for ExtractiveConfig {
    fn default() -> Self {
        ExtractiveConfig {
            sentences: 2,
            min_ratio: 0.8,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            index: PathBuf::from("kb"),
            replica_url: None,
            embedder: None,
            bm25_only: false,
            model: None,
            adapters: Vec::new(),
            retrieval: RetrievalConfig::default(),
            generation: GenerationConfig::default(),
            attribution: AttributionConfig::default(),
            rewards: RewardConfig::default(),
            receipts: ReceiptConfig::default(),
            chain: None,
            answer_mode: AnswerMode::default(),
            extractive: ExtractiveConfig::default(),
            datanets: Default::default(),
            source_guard: SourceGuardConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// Bounds on untrusted input: requests (from the CLI, MCP, Python, FFI or HTTP), the
/// documents ingested and the adapters loaded. Each is refused with a typed error
/// ([`Error::OverLimit`], `tribute_index::Error::DocumentTooLarge`,
/// `tribute_inference::AdapterError::OverLimit`) before the work it would cost is done.
///
/// ```toml
/// [limits]
/// max_top_k = 64
/// max_new_tokens = 2048
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most chunks one request may retrieve (`top_k`). Default 64 (the HTTP server's
    /// default too).
    pub max_top_k: usize,
    /// Most answer tokens one request may ask for (`max_tokens`); a request must also
    /// leave room for its prompt in the model's context. Default 2048.
    pub max_new_tokens: usize,
    /// Most bytes of one document's title and text. Default 64 MiB.
    pub max_document_bytes: usize,
    /// Most chunks one document may be cut into. Default 100,000.
    pub max_chunks_per_document: usize,
    /// Highest LoRA rank of an adapter. Default 256.
    pub max_adapter_rank: usize,
    /// Most bytes of an adapter's files. Default 1 GiB.
    pub max_adapter_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_top_k: 64,
            max_new_tokens: 2048,
            max_document_bytes: tribute_index::DEFAULT_MAX_DOCUMENT_BYTES,
            max_chunks_per_document: tribute_index::DEFAULT_MAX_CHUNKS_PER_DOCUMENT,
            max_adapter_rank: tribute_inference::DEFAULT_MAX_ADAPTER_RANK,
            max_adapter_bytes: tribute_inference::DEFAULT_MAX_ADAPTER_BYTES,
        }
    }
}

impl LimitsConfig {
    /// `top_k` must be 1 to [`Self::max_top_k`].
    pub fn check_top_k(&self, top_k: usize) -> Result<()> {
        if top_k == 0 {
            return Err(Error::InvalidRequest("top_k must be at least 1".into()));
        }
        over("top_k", top_k, self.max_top_k, "max_top_k")
    }

    /// `max_tokens` must be at most [`Self::max_new_tokens`].
    pub fn check_max_tokens(&self, max_tokens: usize) -> Result<()> {
        over(
            "max_tokens",
            max_tokens,
            self.max_new_tokens,
            "max_new_tokens",
        )
    }

    /// The index settings these limits give, on top of `base`.
    pub fn index_config(&self, base: tribute_index::IndexConfig) -> tribute_index::IndexConfig {
        tribute_index::IndexConfig {
            max_document_bytes: self.max_document_bytes,
            max_chunks_per_document: self.max_chunks_per_document,
            ..base
        }
    }

    /// The adapter limits these give.
    pub fn adapter_limits(&self) -> tribute_inference::AdapterLimits {
        tribute_inference::AdapterLimits {
            max_rank: self.max_adapter_rank,
            max_bytes: self.max_adapter_bytes,
        }
    }
}

fn over(what: &'static str, value: usize, limit: usize, setting: &'static str) -> Result<()> {
    if value > limit {
        return Err(Error::OverLimit {
            what,
            value: value as u64,
            limit: limit as u64,
            setting,
        });
    }
    Ok(())
}

/// A LoRA adapter to register with the generator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterConfig {
    /// The id requests use (its on-chain id is `named_id(id)`).
    pub id: String,
    /// A PEFT directory or an `.onnx_adapter` file.
    pub path: PathBuf,
}

/// Retrieval settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalConfig {
    /// Chunks retrieved per question. Default 4.
    pub top_k: usize,
    /// BM25, dense or hybrid. Default hybrid.
    pub mode: Mode,
    /// Only these datanets (empty: all).
    pub datanets: Vec<String>,
    /// A hit counts as relevant when its dense cosine similarity is at least this (default
    /// 0.15: with MiniLM, off-topic questions score below 0.06 against the sample datanet
    /// and on-topic ones 0.23 and up), or — in a BM25-only search — when BM25 found it. Without any relevant hit the
    /// engine answers that the knowledge base has nothing on the question, without running
    /// the model.
    pub min_similarity: f32,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig {
            top_k: 4,
            mode: Mode::Hybrid,
            datanets: Vec::new(),
            min_similarity: 0.15,
        }
    }
}

/// Generation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    /// Most answer tokens. Default 160.
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy (default).
    pub temperature: f32,
    /// Sampling seed. Default 0.
    pub seed: u64,
    /// The system prompt; `None`: [`crate::rag::DEFAULT_SYSTEM_PROMPT`]; empty: no system
    /// message of Tribute's own (the model's chat template applies its default).
    pub system_prompt: Option<String>,
    /// Prompt token budget for the sources and question; `None`: the model's context
    /// length minus `max_tokens`. Sources that do not fit are dropped, lowest-ranked first;
    /// if even the best one alone does not fit, its text is cut to fit.
    pub prompt_budget: Option<usize>,
    /// Where the model runs: `cpu` (default), `cuda`, `cuda:N`.
    pub device: String,
    /// Sessions in the generator's pool (callers generating at once). Default 1.
    pub sessions: usize,
    /// MiB of prompt KV caches the generator keeps so that attribution scores an answer
    /// without running its prompt again (`0`: off, every scoring reruns its prompt).
    /// Default 128.
    pub prompt_cache_mib: usize,
    /// Adapter slots per session (default 0: off): asks with different adapters (and
    /// without any) share one running batch and one forward pass per step instead of a
    /// batch per adapter set. Needs a model exported with the `lora_mask` input. Off by
    /// default because rows in slots keep no prompt for attribution to score against, so
    /// with model-measured attribution a server answers fewer chats per second with them
    /// (`docs/INFERENCE.md`, "Adapter slots").
    pub adapter_slots: usize,
    /// LoRA rank columns per adapter slot. Default 16; an adapter set of a larger rank (a
    /// merge's is its adapters' ranks summed) runs in a batch of its own.
    pub slot_rank: usize,
    /// Decode steps as ONNX Runtime CUDA graphs (`None`, the default: on for a
    /// `--ops static` export on CUDA; `false`: off; `true` on another layout is an error).
    /// See `tribute_inference::GeneratorOptions::cuda_graphs`.
    pub cuda_graphs: Option<bool>,
    /// With CUDA graphs: MiB of finished batches' cache buffers each session keeps, with
    /// their captured graphs, for later batches of the same row count (`0`: none; every
    /// batch captures anew and frees its memory when it ends). Default 4096. See
    /// `tribute_inference::GeneratorOptions::spare_buffer_bytes`.
    pub spare_buffer_mib: usize,
    /// Prompt tokens per prefill pass: a longer prompt runs in chunks against the cache of
    /// the ones before (the same logits; less attention work and memory for long prompts).
    /// `0`: whole prompts. Default 256. See
    /// `tribute_inference::GeneratorOptions::prefill_chunk`.
    pub prefill_chunk: usize,
    /// Repetition guard: the answer never repeats a run of this many tokens of its own
    /// (`0` = off). Default 4 (measured in `docs/QUALITY.md`). Tokens of the prompt do
    /// not count, so the answer can still quote its sources.
    pub no_repeat_ngram: usize,
    /// Repetition guard: stop the answer once the model's first choice was a blocked
    /// repeat this many times (`0` = never). Default 3 (`docs/QUALITY.md`: without the stop
    /// small models ramble on past the answer; 2 stops before some answers are complete).
    pub repeat_stop: usize,
    /// Once the repetition stop is reached, let the answer finish its sentence: it ends at
    /// the next sentence or line end, or after this many more tokens (`0` = stop at once,
    /// in the middle of a list or sentence). Default 32 (`docs/QUALITY.md`).
    pub repeat_stop_grace: usize,
    /// Never end the answer right after a colon ("The answer is:" and nothing else): the
    /// end-of-sequence token is held back until something follows it. Default on.
    pub no_end_after_colon: bool,
    /// Hugging Face–style repetition penalty over prompt and answer tokens (`1.0` = off,
    /// the default: it also penalises quoting the sources).
    pub repetition_penalty: f32,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_tokens: 160,
            temperature: 0.0,
            seed: 0,
            system_prompt: None,
            prompt_budget: None,
            device: "cpu".into(),
            sessions: 1,
            prompt_cache_mib: 128,
            adapter_slots: 0,
            slot_rank: tribute_inference::DEFAULT_SLOT_RANK,
            cuda_graphs: None,
            spare_buffer_mib: tribute_inference::DEFAULT_SPARE_BUFFER_BYTES >> 20,
            prefill_chunk: tribute_inference::DEFAULT_PREFILL_CHUNK,
            no_repeat_ngram: 4,
            repeat_stop: 3,
            repeat_stop_grace: 32,
            no_end_after_colon: true,
            repetition_penalty: 1.0,
        }
    }
}

impl GenerationConfig {
    /// The sampler settings these give (greedy at temperature 0, with the repetition
    /// guard).
    pub fn sampling(&self) -> tribute_inference::SamplingParams {
        tribute_inference::SamplingParams {
            temperature: self.temperature,
            seed: self.seed,
            repetition_penalty: self.repetition_penalty,
            no_repeat_ngram: self.no_repeat_ngram,
            repeat_stop: self.repeat_stop,
            repeat_stop_grace: self.repeat_stop_grace,
            no_end_after_colon: self.no_end_after_colon,
            ..Default::default()
        }
    }

    /// These settings with the repetition guard off: greedy decoding exactly as before the
    /// guard existed.
    pub fn without_guard(mut self) -> Self {
        self.no_repeat_ngram = 0;
        self.repeat_stop = 0;
        self.repeat_stop_grace = 0;
        self.no_end_after_colon = false;
        self
    }
}

/// Attribution settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributionConfig {
    /// loo (default), ablation, shapley, similarity or retrieval.
    pub method: Method,
    /// The method's parameters.
    pub config: MethodConfig,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            method: Method::Loo,
            config: MethodConfig::default(),
        }
    }
}

/// Receipt signing and journaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiptConfig {
    /// The fee of one answer in wei (a decimal or `0x` hex string, or an integer; written
    /// as a decimal string). Default 1e15 (0.001 ether).
    #[serde(with = "tribute_common::wei::serde")]
    pub fee_wei: U256,
    /// The fee of one retrieval-only use ([`crate::Engine::retrieve`] with signing, the MCP
    /// `search` tool) in wei. Default 1e14 (0.0001 ether).
    #[serde(with = "tribute_common::wei::serde")]
    pub retrieval_fee_wei: U256,
    /// The receipt journal: a directory, or a `postgres://` URL of a journal (and its
    /// attribution records) shared by many engines and settlers (feature `postgres`); `None`:
    /// receipts are signed but not journaled.
    pub journal: Option<PathBuf>,
    /// The environment variable holding the payer's hex key. Default `TRIBUTE_KEY`.
    /// Without a key (and no keystore) answers carry no receipt.
    pub key_env: String,
    /// An encrypted JSON keystore instead (its password in `keystore_password_env`).
    pub keystore: Option<PathBuf>,
    /// The environment variable with the keystore password. Default
    /// `TRIBUTE_KEYSTORE_PASSWORD`.
    pub keystore_password_env: String,
    /// The ledger whose EIP-712 domain receipts are signed for; required to sign.
    pub ledger: Option<Ledger>,
    /// The serving node's address written into receipts; `None`: the payer's.
    #[serde(with = "eip55_opt")]
    pub serving_node: Option<Address>,
    /// Also sign a receipt when no source was relevant (the whole fee then goes to the
    /// model owner, adapter authors and treasury). Default false.
    pub sign_without_sources: bool,
}

impl Default for ReceiptConfig {
    fn default() -> Self {
        ReceiptConfig {
            fee_wei: U256::from(1_000_000_000_000_000_u64),
            retrieval_fee_wei: U256::from(100_000_000_000_000_u64),
            journal: None,
            key_env: "TRIBUTE_KEY".into(),
            keystore: None,
            keystore_password_env: "TRIBUTE_KEYSTORE_PASSWORD".into(),
            ledger: None,
            serving_node: None,
            sign_without_sources: false,
        }
    }
}

/// Where receipts are settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainConfig {
    /// The node's HTTP JSON-RPC URL. Default `http://127.0.0.1:8545`.
    pub rpc: String,
    /// Receipts per settlement batch. Default 100.
    pub batch_size: usize,
    /// The treasury address; `None`: the payer's.
    #[serde(with = "eip55_opt")]
    pub treasury: Option<Address>,
    /// Paid the shares of model or adapter ids without a registered owner; `None`: such
    /// ids make settlement fail.
    #[serde(with = "eip55_opt")]
    pub fallback_owner: Option<Address>,
    /// Seconds to wait for each RPC request or transaction receipt. Default 30. (Also
    /// read as `timeout_s`, its former name.)
    #[serde(alias = "timeout_s")]
    pub timeout_secs: u64,
    /// How deep a settlement's block must be before its receipts are confirmed. Default 1
    /// (once mined); on a public chain use its finality depth (e.g. 64 on Ethereum).
    pub confirmations: u64,
    /// How many recent blocks each settle run re-checks for settlements a reorg dropped
    /// (settled again) or moved. Default 128; 0 turns the check off.
    pub reconcile_blocks: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            rpc: "http://127.0.0.1:8545".into(),
            batch_size: 100,
            treasury: None,
            fallback_owner: None,
            timeout_secs: 30,
            confirmations: 1,
            reconcile_blocks: 128,
        }
    }
}

impl EngineConfig {
    /// Parses TOML; relative paths stay relative (to the working directory).
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: EngineConfig =
            toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.source_guard.validate()?;
        Ok(config)
    }

    /// Reads a TOML file; relative paths are resolved against its directory.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let mut config = toml::from_str::<EngineConfig>(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        config.source_guard.validate()?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Resolves relative paths against `base` and expands a leading `~/`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| *p = resolve(base, p);
        // A `postgres://` knowledge base is a URL, not a path.
        if !tribute_index::is_postgres_url(&self.index) {
            fix(&mut self.index);
        }
        if let Some(p) = self.embedder.as_mut() {
            fix(p);
        }
        // A hub model (`hf:ORG/NAME@REV`) is a name, not a path.
        if let Some(p) = self.model.as_mut()
            && crate::hub::ModelSpec::from_model_path(p).is_none()
        {
            fix(p);
        }
        for a in &mut self.adapters {
            fix(&mut a.path);
        }
        if let Some(p) = self.receipts.journal.as_mut()
            && !tribute_attribution::journal::is_postgres_url(p)
        {
            fix(p);
        }
        if let Some(p) = self.receipts.keystore.as_mut() {
            fix(p);
        }
    }

    /// The generator's model directory: `model` as it is, the export of a hub model
    /// (`hf:ORG/NAME@REV`, pulled first when it is not cached — downloading needs the
    /// `hub` feature), or the default model.
    pub fn model_dir(&self) -> Result<PathBuf> {
        match &self.model {
            Some(model) => crate::hub::resolve_model(model),
            None => Ok(tribute_inference::default_model_dir()),
        }
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests;
