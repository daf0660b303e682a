//! [`EngineBuilder`]: an engine from a config (or the defaults) with parts overridden.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use tribute_attribution::Method;
use tribute_attribution::receipt::{Ledger, PayerKey, named_id};
use tribute_index::embedder::{EmbedderOptions, OnnxEmbedder};
use tribute_index::{Embedder, Index, IndexConfig};
use tribute_inference::{Generator, GeneratorOptions};

use super::{Engine, Inner, ModelInfo};
use crate::config::{AnswerMode, EngineConfig};
use crate::error::{Error, Result};

/// Builds an [`Engine`]: start from a config (or the defaults) and override parts.
#[derive(Default)]
#[must_use = "call .build()"]
pub struct EngineBuilder {
    config: EngineConfig,
    generator: Option<Arc<Generator>>,
    embedder: Option<Arc<dyn Embedder>>,
    key: Option<PayerKey>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("config", &self.config)
            .field(
                "generator",
                &self.generator.as_ref().map(|g| g.dir().to_owned()),
            )
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Loads the configuration from a TOML file (relative paths resolved against it).
    pub fn config_file(mut self, path: impl AsRef<std::path::Path>) -> Result<Self> {
        self.config = EngineConfig::from_toml_file(path)?;
        Ok(self)
    }

    /// The knowledge base directory.
    pub fn index_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.index = dir.into();
        self
    }

    /// The generator's model directory.
    pub fn model_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.model = Some(dir.into());
        self
    }

    /// An already loaded generator (shared with other engines).
    pub fn generator(mut self, generator: Arc<Generator>) -> Self {
        self.generator = Some(generator);
        self
    }

    /// An embedder instead of loading `config.embedder`.
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// Registers a LoRA adapter (PEFT directory or `.onnx_adapter`).
    pub fn adapter(mut self, id: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.config.adapters.push(crate::config::AdapterConfig {
            id: id.into(),
            path: path.into(),
        });
        self
    }

    /// The default attribution method.
    pub fn method(mut self, method: Method) -> Self {
        self.config.attribution.method = method;
        self
    }

    /// The reward split used when settling.
    pub fn rewards(mut self, rewards: tribute_attribution::split::RewardConfig) -> Self {
        self.config.rewards = rewards;
        self
    }

    /// The payer's signing key (otherwise read from `receipts.key_env` or the keystore).
    pub fn signer(mut self, key: PayerKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The ledger receipts are signed for.
    pub fn ledger(mut self, ledger: Ledger) -> Self {
        self.config.receipts.ledger = Some(ledger);
        self
    }

    /// The receipt journal directory.
    pub fn journal_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.receipts.journal = Some(dir.into());
        self
    }

    /// The receipt journal: a directory, or a `postgres://` URL of a journal shared by many
    /// engines (feature `postgres`; see `tribute_attribution::journal`).
    pub fn journal(mut self, location: impl Into<PathBuf>) -> Self {
        self.config.receipts.journal = Some(location.into());
        self
    }

    /// Where receipts are settled.
    pub fn chain(mut self, chain: crate::config::ChainConfig) -> Self {
        self.config.chain = Some(chain);
        self
    }

    /// Opens the index, loads the models and the key, opens the journal.
    pub fn build(self) -> Result<Engine> {
        let config = self.config;
        if config.retrieval.top_k == 0 {
            return Err(Error::Config("retrieval.top_k must be at least 1".into()));
        }
        config.source_guard.validate()?;
        let embedder = match (self.embedder, config.bm25_only) {
            (Some(e), _) => Some(e),
            (None, true) => None,
            (None, false) => {
                let dir = config
                    .embedder
                    .clone()
                    .unwrap_or_else(tribute_index::embedder::default_model_dir);
                Some(
                    Arc::new(OnnxEmbedder::from_dir(&dir, EmbedderOptions::default())?)
                        as Arc<dyn Embedder>,
                )
            }
        };
        let index = match &config.replica_url {
            None => Index::open(
                &config.index,
                embedder.clone(),
                config.limits.index_config(IndexConfig::default()),
            )?,
            Some(replica) => open_with_replica(&config.index, replica, embedder.clone())?,
        };
        let extractive_only =
            config.answer_mode == AnswerMode::Extractive && config.model.is_none();
        let generator = match self.generator {
            Some(g) => Some(g),
            // Extractive answers need no model: an app may ship none.
            None if extractive_only => None,
            None => {
                let dir = config.model_dir()?;
                let options = GeneratorOptions {
                    device: config.generation.device.parse()?,
                    sessions: config.generation.sessions.max(1),
                    prompt_cache_bytes: config.generation.prompt_cache_mib.saturating_mul(1 << 20),
                    adapter_limits: config.limits.adapter_limits(),
                    adapter_slots: config.generation.adapter_slots,
                    slot_rank: config.generation.slot_rank,
                    cuda_graphs: config.generation.cuda_graphs,
                    spare_buffer_bytes: config.generation.spare_buffer_mib.saturating_mul(1 << 20),
                    prefill_chunk: config.generation.prefill_chunk,
                    ..GeneratorOptions::default()
                };
                Some(Arc::new(Generator::load_with(&dir, options)?))
            }
        };
        match &generator {
            Some(g) => {
                for a in &config.adapters {
                    g.add_adapter(a.id.clone(), &a.path)?;
                }
            }
            None if !config.adapters.is_empty() => {
                return Err(Error::Config(
                    "adapters are configured but no model is (answer_mode = \"extractive\"): \
                     set `model` or remove the adapters"
                        .into(),
                ));
            }
            None => {}
        }
        let key = match self.key {
            Some(k) => Some(k),
            None => load_key(&config)?,
        };
        let journal = match &config.receipts.journal {
            Some(location) => Some(tribute_attribution::journal::open(location)?),
            None => None,
        };
        let model_name = match &generator {
            Some(g) => g.config().name.clone().unwrap_or_else(|| {
                g.dir()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into())
            }),
            None => "none".into(),
        };
        let first_nonce = match &journal {
            Some(j) => j.max_nonce()?.map_or(0, |n| n.saturating_add(1)),
            None => 0,
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                model: ModelInfo {
                    id: named_id(&model_name),
                    name: model_name,
                },
                index: RwLock::new(index),
                embedder,
                generator,
                key,
                journal: journal.map(Mutex::new),
                nonce: AtomicU64::new(first_nonce),
                config,
            }),
        })
    }
}

/// The Postgres knowledge base at `index`, searched on the streaming replica `replica`.
fn open_with_replica(
    index: &std::path::Path,
    replica: &str,
    embedder: Option<Arc<dyn Embedder>>,
) -> Result<Index> {
    if !tribute_index::is_postgres_url(index) {
        return Err(Error::Config(
            "replica_url is set but index is not a postgres:// URL: remove replica_url or point index at the primary".into(),
        ));
    }
    #[cfg(feature = "postgres")]
    {
        let backend = tribute_index::postgres::PgBackend::connect_with_replica(
            &index.to_string_lossy(),
            replica,
            embedder.clone(),
            IndexConfig::default(),
        )?;
        Ok(Index::with_backend(
            PathBuf::new(),
            embedder,
            Box::new(backend),
        ))
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (replica, embedder);
        Err(Error::Config(
            "replica_url needs Postgres support: rebuild with the `postgres` feature".into(),
        ))
    }
}

/// The key from the config: the keystore if one is set, else `key_env` if it is set.
fn load_key(config: &EngineConfig) -> Result<Option<PayerKey>> {
    let r = &config.receipts;
    if let Some(path) = &r.keystore {
        let password = std::env::var(&r.keystore_password_env).map_err(|_| {
            Error::Config(format!(
                "receipts.keystore is set but {} (its password) is not",
                r.keystore_password_env
            ))
        })?;
        return Ok(Some(PayerKey::from_keystore(path, &password)?));
    }
    if std::env::var_os(&r.key_env).is_some() {
        return Ok(Some(PayerKey::from_env(&r.key_env)?));
    }
    Ok(None)
}
