//! What the index hands out about documents and chunks.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::embed_text;
use crate::types::{ChunkId, ContentHash, Contributor, DatanetId, DocId, Locator};

/// Where credit for a duplicate document goes: the document that was there first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// The earlier document.
    pub doc_id: DocId,
    /// Its contributor, who is credited.
    pub contributor: Contributor,
    /// Its datanet.
    pub datanet: DatanetId,
}

/// A near-duplicate match: every chunk of the document resembles a chunk of `origin`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NearDuplicate {
    /// The earlier, similar document.
    pub origin: Origin,
    /// The lowest of the per-chunk best cosine similarities.
    pub cosine: f32,
}

/// A document as the index keeps it (the text lives in its chunks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentRecord {
    /// Document id.
    pub id: DocId,
    /// Title.
    pub title: String,
    /// Datanet.
    pub datanet: DatanetId,
    /// Contributor.
    pub contributor: Contributor,
    /// License, if given.
    pub license: Option<String>,
    /// Metadata, if given.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// keccak-256 of the text.
    pub content_hash: ContentHash,
    /// Number of chunks indexed for it (0 for an exact duplicate, which is not indexed again).
    pub chunks: u32,
    /// Set when the text is an exact copy of an earlier document: that document's
    /// contributor is the one to credit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<Origin>,
    /// Set when the text closely resembles an earlier document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_duplicate_of: Option<NearDuplicate>,
}

impl DocumentRecord {
    pub(super) fn origin(&self) -> Origin {
        Origin {
            doc_id: self.id.clone(),
            contributor: self.contributor,
            datanet: self.datanet.clone(),
        }
    }

    /// Who should be credited for this text: the original author for a duplicate.
    pub fn credited_contributor(&self) -> Contributor {
        self.duplicate_of
            .as_ref()
            .map_or(self.contributor, |o| o.contributor)
    }
}

/// A stored chunk with its provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Chunk id (`doc#n`).
    pub chunk_id: ChunkId,
    /// Document id.
    pub doc_id: DocId,
    /// Document title.
    pub title: String,
    /// Chunk text.
    pub text: String,
    /// UTF-8 byte offset of the chunk in the document text.
    pub start: usize,
    /// UTF-8 byte offset one past the chunk's end.
    pub end: usize,
    /// The document's contributor.
    pub contributor: Contributor,
    /// The document's datanet.
    pub datanet: DatanetId,
    /// keccak-256 of the chunk text.
    pub content_hash: ContentHash,
    /// Where in its document the chunk lies (pages, heading path, character span);
    /// `None` for chunks indexed before locators were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locator: Option<Locator>,
}

impl Chunk {
    /// The text the embedder saw for this chunk: title, newline, chunk text.
    pub fn embedded_text(&self) -> String {
        embed_text(&self.title, &self.text)
    }
}
