//! Tribute: embeddable retrieval-augmented generation that credits and pays the people
//! whose data and models made each answer.
//!
//! This facade crate is what applications depend on: the [`Engine`] asks questions of a
//! knowledge base and returns answers with measured citation weights and a signed usage
//! receipt ([`engine`], configured by [`EngineConfig`]). Underneath it are hybrid
//! retrieval over attributed documents ([`index`]), local generation with LoRA adapters
//! ([`inference`]), citation weights, reward splits, receipts and settlement
//! ([`attribution`]), and the glue that measures attribution with the model ([`rag`]).

pub mod config;
pub mod engine;
mod error;
pub mod rag;

pub use config::EngineConfig;
pub use engine::{
    Answer, AnswerSentence, AskEvent, AskOptions, AskRequest, AskStream, Citation, Engine,
    EngineBuilder, Retrieval, StageTimings, Usage,
};
pub use error::{Error, Result};

pub use tribute_attribution as attribution;
pub use tribute_index as index;
pub use tribute_index::{
    ChunkId, ContentHash, Contributor, DatanetId, DocId, Document, Fusion, Hit, Index, IndexConfig,
    IngestProgress, IngestReport, Mode, OnnxEmbedder,
};
pub use tribute_inference as inference;
/// The ONNX Runtime library and process-wide values ([`runtime::PerProcess`]) shared by
/// the crates above.
pub use tribute_runtime as runtime;
