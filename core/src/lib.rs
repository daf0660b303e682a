//! Tribute: embeddable retrieval-augmented generation that credits and pays the people
//! whose data and models made each answer.
//!
//! This facade crate is what applications depend on: the [`Engine`] asks questions of a
//! knowledge base and returns answers with measured citation weights and a signed usage
//! receipt ([`engine`], configured by [`EngineConfig`]). Underneath it are hybrid
//! retrieval over attributed documents ([`index`]), local generation with LoRA adapters
//! ([`inference`]), citation weights, reward splits, receipts and settlement
//! ([`attribution`]), and the glue that measures attribution with the model ([`rag`]).

pub mod audit;
pub mod citations;
pub mod config;
pub mod engine;
mod error;
#[cfg(feature = "finetune")]
pub mod finetune;
pub mod hub;
mod index_handle;
pub mod qa;
pub mod rag;
pub mod source_guard;

pub use config::{AnswerMode, EngineConfig};
pub use engine::{
    Answer, AnswerSentence, AskEvent, AskOptions, AskRequest, AskStream, Citation, Engine,
    EngineBuilder, IndexSize, JournaledReceipt, ModelInfo, QueryRewrite, Retrieval,
    RetrieveRequest, SearchOptions, SearchRequest, Session, SessionSource, StageTimings, Turn,
    Usage,
};
pub use error::{Error, ErrorKind, Result};
pub use index_handle::IndexHandle;

// The types of the wired crates that the engine's API takes or returns, so applications
// need not depend on those crates (or alloy) themselves.
pub use alloy_primitives::{Address, B256, U256};
pub use tribute_attribution::Method;
pub use tribute_attribution::journal::{ReceiptState, StateKind, Stats as ReceiptStats};
pub use tribute_attribution::receipt::{Ledger, PayerKey, SignedReceipt, UsageReceipt};
#[cfg(feature = "onchain")]
pub use tribute_attribution::settle::SettleReport;
pub use tribute_attribution::split::RewardConfig;
pub use tribute_inference::{CancelToken, Generator};

pub use tribute_attribution as attribution;
/// The ONNX Runtime library and process-wide values ([`common::PerProcess`]) shared by
/// the crates above.
pub use tribute_common as common;
pub use tribute_index as index;
pub use tribute_index::{
    ChunkId, ContentHash, Contributor, DatanetId, DocId, Document, Fusion, Hit, Index, IndexConfig,
    IngestProgress, IngestReport, Locator, Mode, OnnxEmbedder,
};
pub use tribute_inference as inference;
