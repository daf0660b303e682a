//! The knowledge base's embedder offered to callers ([`Engine::embed`]), so that vectors
//! made elsewhere (an HTTP embeddings endpoint, an agent's own store) match the index's.

use super::Engine;
use crate::error::{Error, Result};

impl Engine {
    /// The embedding model's id, when the knowledge base has one (not BM25-only).
    pub fn embedder_model(&self) -> Option<&str> {
        self.inner.embedder.as_ref().map(|e| e.model_id())
    }

    /// Embeds `texts` with the knowledge base's embedder: one unit-length vector per text.
    /// Fails with [`Error::InvalidRequest`] on a BM25-only engine or an empty text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let embedder = self.inner.embedder.as_ref().ok_or_else(|| {
            Error::InvalidRequest("this knowledge base is BM25-only: it has no embedder".into())
        })?;
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(Error::InvalidRequest(format!("text {i} is empty")));
        }
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        Ok(embedder.embed(texts)?)
    }

    /// The tokens the embedder reads of `texts`: each text's tokens (special tokens not
    /// counted), up to the model's limit, summed. `0` on a BM25-only engine.
    pub fn embedding_tokens(&self, texts: &[&str]) -> usize {
        let Some(embedder) = self.inner.embedder.as_ref() else {
            return 0;
        };
        let limit = embedder.max_text_tokens().unwrap_or(usize::MAX);
        texts
            .iter()
            .map(|t| embedder.count_tokens(t).min(limit))
            .sum()
    }
}
