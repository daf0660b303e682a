#![doc = include_str!("../README.md")]

pub mod backend;
pub mod bm25;
pub mod chunker;
mod commit_groups;
mod dense;
pub mod document;
pub mod embedder;
pub mod error;
pub mod eval;
pub mod fusion;
mod index;
pub mod loaders;
#[cfg(feature = "postgres")]
pub mod postgres;
mod store;
pub mod sync;
pub mod types;

pub use backend::{Backend, SearchSpec};
pub use bm25::Bm25Params;
pub use chunker::{ChunkerConfig, TokenCounter, WordCounter};
pub use dense::HnswConfig;
pub use document::{Document, Layout, LoadOptions, Section, load_file};
pub use embedder::{Embedder, EmbedderOptions, OnnxEmbedder, QueryModel, QueryOptions};
pub use error::{Error, Result, redact_url};
pub use fusion::{Fusion, Mode};
pub use index::{
    Chunk, DEFAULT_DEPTH, DEFAULT_MAX_CHUNKS_PER_DOCUMENT, DEFAULT_MAX_DOCUMENT_BYTES,
    DocumentRecord, Hit, Index, IndexConfig, IngestProgress, IngestReport, NearDuplicate, Origin,
    RetrieverScore, SearchRequest, is_postgres_url,
};
pub use loaders::{Format, Loaded, SkippedFile, load_paths};
pub use sync::{SyncProgress, SyncReport, SyncRequest};
pub use types::{ChunkId, ContentHash, Contributor, DatanetId, DocId, Locator};

#[cfg(test)]
mod tests {
    /// The facade shares one index between threads: keep it `Send + Sync`.
    #[test]
    fn index_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::Index>();
        assert_send_sync::<crate::OnnxEmbedder>();
    }
}
