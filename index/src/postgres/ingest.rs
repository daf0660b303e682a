//! Ingest into Postgres: plan and embed outside the database, then one transaction of
//! binary `COPY` per group of chunks.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use postgres::Transaction;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{Kind, ToSql, Type};

use super::PgBackend;
use crate::chunker::{Span, TokenCounter, WordCounter};
use crate::document::Document;
use crate::error::{Error, Result};
use crate::index::{DocumentRecord, IngestProgress, IngestReport, Origin, embed_text};
use crate::types::{ChunkId, ContentHash, Contributor, DatanetId, DocId, Locator};

/// What happens to one document, decided before anything is written.
struct Planned {
    doc: Document,
    hash: ContentHash,
    duplicate_of: Option<Origin>,
    spans: Vec<Span>,
    locators: Vec<Locator>,
}

impl PgBackend {
    pub(super) fn ingest(
        &mut self,
        docs: Vec<Document>,
        progress: Option<&dyn Fn(&IngestProgress)>,
    ) -> Result<IngestReport> {
        let started = Instant::now();
        let mut seen = HashSet::new();
        for d in &docs {
            d.validate()?;
            self.config.check_document_bytes(d)?;
            if !seen.insert(d.id.clone()) {
                return Err(Error::InvalidDocument {
                    id: d.id.to_string(),
                    message: "the same id appears twice in one batch".into(),
                });
            }
        }
        if self.dim > 0 && self.embedder.is_none() {
            return Err(Error::NoEmbedder);
        }
        let (existing, origins) = self.lookup(&docs)?;

        let counter: &dyn TokenCounter = match &self.embedder {
            Some(e) => e.as_ref(),
            None => &WordCounter,
        };
        let mut report = IngestReport::default();
        let mut batch_hashes: HashMap<ContentHash, Origin> = HashMap::new();
        let mut plan = Vec::new();
        for doc in docs {
            let hash = doc.content_hash();
            match existing.get(&doc.id) {
                Some(h) if *h == hash => {
                    report.unchanged += 1;
                    continue;
                }
                Some(_) => report.replaced += 1,
                None => report.added += 1,
            }
            let duplicate_of = origins
                .get(&hash)
                .filter(|o| o.doc_id != doc.id)
                .cloned()
                .or_else(|| batch_hashes.get(&hash).cloned());
            if duplicate_of.is_none() {
                batch_hashes.insert(
                    hash,
                    Origin {
                        doc_id: doc.id.clone(),
                        contributor: doc.contributor,
                        datanet: doc.datanet.clone(),
                    },
                );
            }
            let spans = if duplicate_of.is_some() {
                Vec::new()
            } else {
                let budget = self.chunker.text_budget(&doc.title, counter);
                doc.chunk_spans(&budget, counter)
            };
            self.config.check_chunks(&doc, spans.len())?;
            let locators = doc.locate(&spans);
            if let Some(o) = &duplicate_of {
                report.duplicates.push((doc.id.clone(), o.clone()));
            }
            plan.push(Planned {
                doc,
                hash,
                duplicate_of,
                spans,
                locators,
            });
        }

        let mut p = IngestProgress {
            docs_total: plan.len() + report.unchanged,
            docs_done: report.unchanged,
            chunks_total: plan.iter().map(|x| x.spans.len()).sum(),
            chunks_done: 0,
        };
        if let Some(cb) = progress {
            cb(&p);
        }
        let groups =
            crate::commit_groups::commit_groups(plan, self.config.commit_every, |p| p.spans.len());
        for group in groups {
            let mut vectors: Vec<Vec<f32>> = Vec::new();
            if let Some(embedder) = self.embedder.clone().filter(|_| self.dim > 0) {
                let embed_started = Instant::now();
                let texts: Vec<String> = group
                    .iter()
                    .flat_map(|item| {
                        item.spans
                            .iter()
                            .map(|s| embed_text(&item.doc.title, &item.doc.text[s.start..s.end]))
                    })
                    .collect();
                for batch in texts.chunks(256) {
                    let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                    vectors.extend(embedder.embed(&refs)?);
                    p.chunks_done += batch.len();
                    if let Some(cb) = progress {
                        cb(&p);
                    }
                }
                report.embed_seconds += embed_started.elapsed().as_secs_f64();
            } else {
                p.chunks_done += group.iter().map(|x| x.spans.len()).sum::<usize>();
            }
            let group_chunks: usize = group.iter().map(|x| x.spans.len()).sum();
            if self.dim > 0 && vectors.len() != group_chunks {
                return Err(Error::Embedding(format!(
                    "{} vectors for {group_chunks} chunks",
                    vectors.len()
                )));
            }
            if let Some(v) = vectors.iter().find(|v| v.len() != self.dim) {
                return Err(Error::Embedding(format!(
                    "the embedder gave {} dims, the knowledge base stores {}",
                    v.len(),
                    self.dim
                )));
            }
            report.chunks += group_chunks;
            p.docs_done += group.len();
            self.write_group(&group, vectors)?;
            if let Some(cb) = progress {
                cb(&p);
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Content hashes of the batch's ids already stored, and the first live document of
    /// each of the batch's hashes (the origin a duplicate is credited to).
    fn lookup(
        &self,
        docs: &[Document],
    ) -> Result<(HashMap<DocId, ContentHash>, HashMap<ContentHash, Origin>)> {
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        let hashes: Vec<Vec<u8>> = docs
            .iter()
            .map(|d| d.content_hash().as_b256().to_vec())
            .collect();
        let mut client = self.client();
        let mut existing = HashMap::new();
        for row in client.query(
            "SELECT doc_id, content_hash FROM tribute_documents WHERE doc_id = ANY($1)",
            &[&ids],
        )? {
            existing.insert(
                DocId::new(row.try_get::<_, String>(0)?),
                super::schema::hash_from(row.try_get(1)?)?,
            );
        }
        let mut origins = HashMap::new();
        for row in client.query(
            "SELECT DISTINCT ON (content_hash) content_hash, doc_id, contributor, datanet \
             FROM tribute_documents WHERE content_hash = ANY($1) AND duplicate_of IS NULL \
             ORDER BY content_hash, seq",
            &[&hashes],
        )? {
            origins.insert(
                super::schema::hash_from(row.try_get(0)?)?,
                Origin {
                    doc_id: DocId::new(row.try_get::<_, String>(1)?),
                    contributor: Contributor::parse(row.try_get(2)?)?,
                    datanet: DatanetId::new(row.try_get::<_, String>(3)?),
                },
            );
        }
        Ok((existing, origins))
    }

    /// Writes one group in one transaction: old versions out, documents and chunks in.
    fn write_group(&self, group: &[Planned], vectors: Vec<Vec<f32>>) -> Result<()> {
        let mut client = self.client();
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock(7215046302)", &[])?;
        let ids: Vec<&str> = group.iter().map(|x| x.doc.id.as_str()).collect();
        tx.execute(
            "DELETE FROM tribute_documents WHERE doc_id = ANY($1)",
            &[&ids],
        )?;
        copy_documents(&mut tx, group)?;
        copy_chunks(&mut tx, group, vectors, self.dim > 0)?;
        tx.commit()?;
        Ok(())
    }
}

fn copy_documents(tx: &mut Transaction<'_>, group: &[Planned]) -> Result<()> {
    let sink = tx.copy_in(
        "COPY tribute_documents (doc_id, title, datanet, contributor, license, metadata, \
         content_hash, chunks, duplicate_of, near_duplicate_of) FROM STDIN (FORMAT binary)",
    )?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::JSONB,
        Type::BYTEA,
        Type::INT4,
        Type::JSONB,
        Type::JSONB,
    ];
    let mut w = BinaryCopyInWriter::new(sink, &types);
    for item in group {
        let record = DocumentRecord {
            id: item.doc.id.clone(),
            title: item.doc.title.clone(),
            datanet: item.doc.datanet.clone(),
            contributor: item.doc.contributor,
            license: item.doc.license.clone(),
            metadata: item.doc.metadata.clone(),
            content_hash: item.hash,
            chunks: item.spans.len() as u32,
            duplicate_of: item.duplicate_of.clone(),
            near_duplicate_of: None,
        };
        let metadata = serde_json::Value::Object(record.metadata.clone());
        let duplicate_of = record
            .duplicate_of
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        let near: Option<serde_json::Value> = None;
        let contributor = record.contributor.to_string();
        let hash = record.content_hash.as_b256().to_vec();
        let chunks = record.chunks as i32;
        let row: [&(dyn ToSql + Sync); 10] = [
            &record.id.as_str(),
            &record.title,
            &record.datanet.as_str(),
            &contributor,
            &record.license,
            &metadata,
            &hash,
            &chunks,
            &duplicate_of,
            &near,
        ];
        w.write(&row)?;
    }
    w.finish()?;
    Ok(())
}

fn copy_chunks(
    tx: &mut Transaction<'_>,
    group: &[Planned],
    vectors: Vec<Vec<f32>>,
    with_vectors: bool,
) -> Result<()> {
    let vector_oid: u32 = tx.query_one("SELECT 'vector'::regtype::oid", &[])?.get(0);
    let vector_type = Type::new("vector".into(), vector_oid, Kind::Simple, "public".into());
    let sink = tx.copy_in(
        "COPY tribute_chunks (chunk_id, doc_id, n, start_byte, end_byte, content_hash, title, \
         text, datanet, contributor, embedding, locator) FROM STDIN (FORMAT binary)",
    )?;
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::INT4,
        Type::INT4,
        Type::BYTEA,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        vector_type,
        Type::JSONB,
    ];
    let mut w = BinaryCopyInWriter::new(sink, &types);
    let mut vectors = vectors.into_iter();
    for item in group {
        let contributor = item.doc.contributor.to_string();
        for (n, (span, locator)) in item.spans.iter().zip(&item.locators).enumerate() {
            let text = &item.doc.text[span.start..span.end];
            let locator =
                serde_json::to_value(locator).map_err(|e| Error::InvalidConfig(e.to_string()))?;
            let id = ChunkId::for_chunk(&item.doc.id, n);
            let embedding = if with_vectors {
                vectors.next().map(pgvector::Vector::from)
            } else {
                None
            };
            let (n, start, end) = (n as i32, span.start as i32, span.end as i32);
            let hash = ContentHash::of(text).as_b256().to_vec();
            let row: [&(dyn ToSql + Sync); 12] = [
                &id.as_str(),
                &item.doc.id.as_str(),
                &n,
                &start,
                &end,
                &hash,
                &item.doc.title,
                &text,
                &item.doc.datanet.as_str(),
                &contributor,
                &embedding,
                &locator,
            ];
            w.write(&row)?;
        }
    }
    w.finish()?;
    Ok(())
}
