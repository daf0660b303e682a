//! The operation log: an append-only JSONL file of document, chunk and delete records.
//!
//! Only the prefix recorded by the last commit counts; bytes after it come from an
//! interrupted ingest and are cut off on open.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::DocumentRecord;
use crate::types::{ChunkId, ContentHash, DocId, Locator};

/// Writes a file so that readers see the old or the new content, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(Error::io(&tmp))?;
        f.write_all(bytes).map_err(Error::io(&tmp))?;
        f.sync_all().map_err(Error::io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(Error::io(path))?;
    if let Some(parent) = path.parent() {
        // Make the rename itself durable.
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// A chunk as written in the log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ChunkLine {
    pub id: ChunkId,
    pub doc: DocId,
    pub n: u32,
    pub start: usize,
    pub end: usize,
    pub hash: ContentHash,
    pub text: String,
    /// Absent in logs written before locators existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locator: Option<Locator>,
}

/// One line of the log.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Op {
    Doc(DocumentRecord),
    Chunk(ChunkLine),
    Delete {
        doc: DocId,
    },
    /// The text of the document just recorded (format 2 on; written after its `Doc`).
    Text {
        doc: DocId,
        text: String,
    },
}

pub(crate) struct OpLog {
    path: PathBuf,
    writer: BufWriter<File>,
    len: u64,
}

impl OpLog {
    /// Opens the log, cuts it to `committed` bytes and returns every op in that prefix.
    pub(crate) fn open(path: &Path, committed: u64) -> Result<(Self, Vec<Op>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(Error::io(path))?;
        let have = file.metadata().map_err(Error::io(path))?.len();
        if have < committed {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                reason: format!("log holds {have} bytes but the last commit recorded {committed}"),
            });
        }
        if have > committed {
            file.set_len(committed).map_err(Error::io(path))?;
            file.sync_all().map_err(Error::io(path))?;
        }
        let mut ops = Vec::new();
        let reader = BufReader::new((&mut file).take(committed));
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(Error::io(path))?;
            let op: Op = serde_json::from_str(&line).map_err(|e| Error::Corrupt {
                path: path.to_owned(),
                reason: format!("log line {}: {e}", i + 1),
            })?;
            ops.push(op);
        }
        Ok((
            Self {
                path: path.to_owned(),
                writer: BufWriter::new(file),
                len: committed,
            },
            ops,
        ))
    }

    pub(crate) fn append(&mut self, op: &Op) -> Result<()> {
        let mut line = serde_json::to_vec(op).map_err(|e| Error::Io {
            path: self.path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .map_err(Error::io(&self.path))?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// Bytes written so far (committed or not).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn sync(&mut self) -> Result<()> {
        self.writer.flush().map_err(Error::io(&self.path))?;
        self.writer
            .get_ref()
            .sync_data()
            .map_err(Error::io(&self.path))
    }
}
