//! Tribute: embeddable retrieval-augmented generation that credits and pays the people
//! whose data and models made each answer.
//!
//! This facade crate is what applications depend on. Today it exposes hybrid retrieval
//! over attributed documents ([`index`]), local generation with LoRA adapters
//! ([`inference`]), citation weights and reward splits ([`attribution`]), and the glue
//! that measures attribution with the model ([`rag`]); the `Engine` that wires them
//! together builds on it.

pub mod rag;

pub use tribute_attribution as attribution;
pub use tribute_index as index;
pub use tribute_index::{
    ChunkId, ContentHash, Contributor, DatanetId, DocId, Document, Fusion, Hit, Index, IndexConfig,
    IngestProgress, IngestReport, Mode, OnnxEmbedder,
};
pub use tribute_inference as inference;
