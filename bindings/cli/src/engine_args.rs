//! Flags shared by the commands that answer questions (`tribute ask`, `tribute chat`): which
//! engine to build, and the options of each answer.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use tribute::attribution::Method;
use tribute::index::Mode;
use tribute::{AskOptions, Engine, EngineConfig};

use crate::keys::{KeyArgs, read_ledger_file};

/// The engine: a config file and the flags that override it.
#[derive(Args)]
pub struct EngineArgs {
    /// Engine config file (TOML); the options below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Knowledge base directory.
    #[arg(long)]
    kb: Option<PathBuf>,
    /// Model directory (default: $TRIBUTE_HOME/models/SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Embedding model directory (default: the bundled MiniLM).
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// Ledger file (`tribute chain deploy --out`) whose domain receipts are signed for.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Receipt journal directory (each receipt is journaled there before its answer prints).
    #[arg(long)]
    journal: Option<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
}

impl EngineArgs {
    /// The config file (or the defaults) with the flags applied.
    pub fn config(&self) -> anyhow::Result<EngineConfig> {
        let mut config = match &self.config {
            Some(path) => EngineConfig::from_toml_file(path)?,
            None => EngineConfig::default(),
        };
        if let Some(kb) = &self.kb {
            config.index = kb.clone();
        } else if self.config.is_none() {
            bail!("give the knowledge base with --kb DIR (or a --config file)");
        }
        if let Some(m) = &self.model {
            config.model = Some(m.clone());
        }
        if let Some(e) = &self.embedder {
            config.embedder = Some(e.clone());
        }
        if let Some(l) = &self.ledger {
            config.receipts.ledger = Some(read_ledger_file(l)?);
        }
        if let Some(j) = &self.journal {
            config.receipts.journal = Some(j.clone());
        }
        Ok(config)
    }

    /// Builds the engine from `config` (see [`EngineArgs::config`]), signing with the key
    /// the flags name, if any.
    pub fn build(&self, config: EngineConfig) -> anyhow::Result<Engine> {
        let mut builder = Engine::builder().config(config);
        if let Some(key) = self.key.load_optional()? {
            builder = builder.signer(key);
        }
        Ok(builder.build()?)
    }
}

/// How each answer is made; unset flags take the config's values.
#[derive(Args)]
pub struct AnswerArgs {
    /// Attribution method: loo, ablation, similarity or retrieval.
    #[arg(long)]
    method: Option<String>,
    /// Sources to retrieve for each question.
    #[arg(long)]
    top_k: Option<usize>,
    /// Retrieval mode: hybrid, bm25 or dense.
    #[arg(long)]
    mode: Option<String>,
    /// Only these datanets (repeatable).
    #[arg(long = "datanet")]
    datanets: Vec<String>,
    /// Most tokens of each answer.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    temperature: Option<f32>,
    /// Sampler seed.
    #[arg(long)]
    seed: Option<u64>,
}

impl AnswerArgs {
    /// The flags as ask options (the rest left at their defaults).
    pub fn options(&self) -> anyhow::Result<AskOptions> {
        Ok(AskOptions {
            top_k: self.top_k,
            mode: self.mode.as_deref().map(str::parse::<Mode>).transpose()?,
            datanets: (!self.datanets.is_empty()).then(|| self.datanets.clone()),
            method: self
                .method
                .as_deref()
                .map(str::parse::<Method>)
                .transpose()?,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            seed: self.seed,
            ..AskOptions::default()
        })
    }
}
