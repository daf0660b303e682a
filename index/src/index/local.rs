//! The local directory as a [`Backend`]: tantivy BM25 + hnsw_rs vectors.

use super::{Chunk, DocumentRecord, Hit, IngestProgress, IngestReport, LocalIndex};
use crate::backend::{Backend, SearchSpec};
use crate::document::Document;
use crate::error::Result;
use crate::types::DocId;

impl Backend for LocalIndex {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn document_count(&self) -> usize {
        self.by_id.len()
    }

    fn chunk_count(&self) -> usize {
        LocalIndex::chunk_count(self)
    }

    fn document(&self, id: &DocId) -> Result<Option<DocumentRecord>> {
        Ok(self
            .by_id
            .get(id)
            .map(|&i| self.docs[i as usize].record.clone()))
    }

    fn document_text(&self, id: &DocId) -> Result<Option<String>> {
        let Some(&i) = self.by_id.get(id) else {
            return Ok(None);
        };
        match &self.docs[i as usize].text {
            Some(text) => Ok(Some(text.clone())),
            None => Err(crate::Error::TextNotKept {
                id: id.to_string(),
                reason: "the index was created before whole texts were kept (format 1): \
                         add the document again, or rebuild the index, to keep it",
            }),
        }
    }

    fn documents(&self) -> Result<Vec<DocumentRecord>> {
        Ok(self
            .docs
            .iter()
            .filter(|d| d.alive)
            .map(|d| d.record.clone())
            .collect())
    }

    fn chunks(&self) -> Result<Vec<Chunk>> {
        Ok(self
            .chunks
            .iter()
            .filter(|c| c.alive)
            .map(|c| self.chunk_view(c))
            .collect())
    }

    fn add_documents(
        &mut self,
        docs: Vec<Document>,
        progress: Option<&dyn Fn(&IngestProgress)>,
    ) -> Result<IngestReport> {
        LocalIndex::add_documents(self, docs, progress)
    }

    fn delete(&mut self, id: &DocId) -> Result<bool> {
        LocalIndex::delete(self, id)
    }

    fn search(&self, spec: &SearchSpec<'_>) -> Result<Vec<Hit>> {
        self.search_local(spec)
    }

    fn verify(&self) -> Result<()> {
        LocalIndex::verify(self)
    }

    fn optimize(&mut self) -> Result<()> {
        LocalIndex::optimize(self)
    }
}
