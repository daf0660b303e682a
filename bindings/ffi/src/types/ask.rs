//! What an ask takes: its options, adapters and attribution method.

use tribute::attribution::Method;

use crate::error::{Result, TributeError, request};
use crate::types::{SearchMode, size};

/// How an answer's citation weights are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum AttributionMethod {
    /// Leave-one-out: the drop in the answer's log-probability with each source hidden
    /// (the default; runs the model).
    Loo,
    /// A sparse linear surrogate over random source subsets (runs the model).
    Ablation,
    /// Shapley values over subsets of the sources (credits sources needed together).
    Shapley,
    /// Embedding cosine and word overlap between answer sentences and sources.
    Similarity,
    /// The retrieval scores.
    Retrieval,
}

impl From<AttributionMethod> for Method {
    fn from(m: AttributionMethod) -> Self {
        match m {
            AttributionMethod::Loo => Method::Loo,
            AttributionMethod::Ablation => Method::Ablation,
            AttributionMethod::Shapley => Method::Shapley,
            AttributionMethod::Similarity => Method::Similarity,
            AttributionMethod::Retrieval => Method::Retrieval,
        }
    }
}

impl From<Method> for AttributionMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::Loo => AttributionMethod::Loo,
            Method::Ablation => AttributionMethod::Ablation,
            Method::Shapley => AttributionMethod::Shapley,
            Method::Similarity => AttributionMethod::Similarity,
            Method::Retrieval => AttributionMethod::Retrieval,
        }
    }
}

/// A LoRA adapter and its merge weight (1.0: the adapter as trained).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct AdapterWeight {
    /// The id it was registered under (`Generator.addAdapter`).
    pub id: String,
    /// Its weight in the merge.
    #[uniffi(default = 1.0)]
    pub weight: f32,
}

/// Options of one ask; unset fields take the engine's defaults.
#[derive(Debug, Clone, Default, PartialEq, uniffi::Record)]
pub struct AskOptions {
    /// Chunks to retrieve.
    #[uniffi(default = None)]
    pub top_k: Option<u32>,
    /// Retrieval mode.
    #[uniffi(default = None)]
    pub mode: Option<SearchMode>,
    /// Only these datanets.
    #[uniffi(default = None)]
    pub datanets: Option<Vec<String>>,
    /// Adapters to merge for this answer, with their weights.
    #[uniffi(default)]
    pub adapters: Vec<AdapterWeight>,
    /// Attribution method.
    #[uniffi(default = None)]
    pub method: Option<AttributionMethod>,
    /// The fee in wei, as a decimal string.
    #[uniffi(default = None)]
    pub fee_wei: Option<String>,
    /// Most answer tokens.
    #[uniffi(default = None)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature (0: greedy).
    #[uniffi(default = None)]
    pub temperature: Option<f32>,
    /// Sampling seed.
    #[uniffi(default = None)]
    pub seed: Option<u64>,
}

impl TryFrom<AskOptions> for tribute::AskOptions {
    type Error = TributeError;

    fn try_from(o: AskOptions) -> Result<Self> {
        let fee = o
            .fee_wei
            .map(|f| {
                tribute::common::wei::parse_wei(&f).map_err(|e| request(format!("fee_wei: {e}")))
            })
            .transpose()?;
        Ok(tribute::AskOptions {
            top_k: o.top_k.map(size),
            mode: o.mode.map(Into::into),
            datanets: o.datanets,
            adapters: o.adapters.into_iter().map(|a| (a.id, a.weight)).collect(),
            method: o.method.map(Into::into),
            fee,
            max_tokens: o.max_tokens.map(size),
            temperature: o.temperature,
            seed: o.seed,
            ..tribute::AskOptions::default()
        })
    }
}
