//! Keeping a knowledge base in step with a folder: [`Index::sync`].
//!
//! A sync makes the documents that came from a folder match the folder: files new to the
//! knowledge base are added, files whose bytes changed (keccak-256 of the file) are read
//! again and their documents replaced, and files gone from the folder have their
//! documents deleted. Files whose bytes did not change are not read again.
//!
//! - **Ids** are paths: a one-document file (`.md`, `.txt`, `.pdf`, `.html`, `.docx`) is the
//!   document `sub/guide.md`, its path inside the folder with `/` separators; a JSONL
//!   file's documents are `data.jsonl#ID`. So a changed file replaces exactly its own
//!   chunks, and the ids stay the same from run to run and machine to machine.
//! - **Which documents a sync owns**: those it added (their metadata holds `sync_path`,
//!   and `sync_file_hash`, the hash of the bytes they were read from). Documents added
//!   any other way are never touched.
//! - **Failures**: a file that cannot be read or parsed is listed in
//!   [`SyncReport::failed`] or [`SyncReport::skipped`] with its path and the reason, and
//!   the rest go on; its documents from an earlier sync stay. Unknown types, hidden
//!   entries (names starting with `.`), anything that is not a regular file, symlink loops
//!   and the knowledge base's own directory (when it lies inside the folder) are skipped.
//! - **Interruptions**: every change is one of the backend's atomic commits, and a file's
//!   documents carry the hash of the bytes they came from, so a sync that is killed leaves
//!   a consistent index and the next sync finishes the job.
//! - **Watching**: [`SyncRequest::watch`] syncs once, then again after each burst of
//!   changes (debounced with `notify-debouncer-mini`).

mod scan;
mod watch;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::document::{Document, LoadOptions, load_file};
use crate::error::{Error, Result};
use crate::index::{DocumentRecord, Index, IngestProgress, NearDuplicate, Origin};
use crate::loaders::{Format, SkippedFile};
use crate::types::{ContentHash, DocId};
use scan::FoundFile;

/// Metadata key: the path (inside the synced folder) a document was read from.
pub const SYNC_PATH_KEY: &str = "sync_path";
/// Metadata key: keccak-256 of the bytes of the file a document was read from.
pub const SYNC_FILE_HASH_KEY: &str = "sync_file_hash";

/// Documents' text per call to the backend: bounds memory, and each call commits.
const BATCH_TEXT_BYTES: usize = 8 << 20;

/// What a sync did, file by file (paths inside the folder, `/`-separated).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncReport {
    /// Files new to the knowledge base: their documents were added.
    pub added: Vec<String>,
    /// Files whose content changed: their documents were replaced (and documents a JSONL
    /// file no longer holds deleted).
    pub replaced: Vec<String>,
    /// Files gone from the folder: their documents were deleted.
    pub deleted: Vec<String>,
    /// Files whose documents are as the knowledge base has them.
    pub unchanged: usize,
    /// Files of a known type that could not be loaded (corrupt, too large, no text…),
    /// with the reason. Documents of an earlier version stay.
    pub failed: Vec<SkippedFile>,
    /// Entries left out: unknown types, unreadable files, symlink loops, special files.
    pub skipped: Vec<SkippedFile>,
    /// Documents added or replaced.
    pub documents: usize,
    /// Chunks indexed.
    pub chunks: usize,
    /// Exact duplicates among the documents added (credited to their origin, not indexed
    /// again).
    pub duplicates: Vec<(DocId, Origin)>,
    /// Near-duplicates among the documents added.
    pub near_duplicates: Vec<(DocId, NearDuplicate)>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl SyncReport {
    /// Whether the knowledge base changed.
    pub fn changed(&self) -> bool {
        !(self.added.is_empty() && self.replaced.is_empty() && self.deleted.is_empty())
    }
}

/// Progress of a sync: the scan (every file hashed), then the files being indexed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncProgress {
    /// Files of the folder looked at so far.
    pub files_scanned: usize,
    /// Files new or changed, to be read and indexed (known once the scan is done).
    pub files_to_index: usize,
    /// Of those, files read and indexed so far.
    pub files_indexed: usize,
    /// The current batch's ingest progress (chunks embedded and indexed).
    pub ingest: IngestProgress,
}

/// A sync of an [`Index`] with a folder, configured by chaining and run by
/// [`SyncRequest::run`] (once) or [`SyncRequest::watch`] (until stopped).
///
/// ```no_run
/// # fn f(index: &mut tribute_index::Index) -> tribute_index::Result<()> {
/// let report = index.sync("docs").run()?;
/// println!("{} added, {} replaced, {} deleted", report.added.len(), report.replaced.len(), report.deleted.len());
/// # Ok(()) }
/// ```
#[must_use = "a sync does nothing until .run() or .watch()"]
pub struct SyncRequest<'a> {
    index: &'a mut Index,
    dir: PathBuf,
    options: LoadOptions,
    progress: Option<&'a dyn Fn(&SyncProgress)>,
    debounce: Duration,
}

impl Index {
    /// Starts a sync of this knowledge base with the folder `dir` (see the
    /// [`sync` module](crate::sync)): run it with [`SyncRequest::run`] or keep it in sync
    /// with [`SyncRequest::watch`].
    pub fn sync(&mut self, dir: impl Into<PathBuf>) -> SyncRequest<'_> {
        SyncRequest {
            index: self,
            dir: dir.into(),
            options: LoadOptions::default(),
            progress: None,
            debounce: Duration::from_millis(500),
        }
    }
}

impl<'a> SyncRequest<'a> {
    /// Datanet, contributor and size limit for the documents read (default:
    /// [`LoadOptions::default`]).
    pub fn options(mut self, options: LoadOptions) -> Self {
        self.options = options;
        self
    }

    /// Called as files are scanned and indexed.
    pub fn progress(mut self, progress: &'a dyn Fn(&SyncProgress)) -> Self {
        self.progress = Some(progress);
        self
    }

    /// How long [`SyncRequest::watch`] waits for a burst of changes to settle before it
    /// syncs (default 500 ms).
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Syncs once.
    pub fn run(mut self) -> Result<SyncReport> {
        let root = canonical_folder(&self.dir)?;
        self.pass(&root)
    }

    /// The knowledge base's own directory, when local: never synced into itself.
    fn excluded_dir(&self) -> Option<PathBuf> {
        let dir = self.index.dir();
        (!dir.as_os_str().is_empty())
            .then(|| std::fs::canonicalize(dir).ok())
            .flatten()
    }

    /// One sync of the folder at `root` (canonical).
    fn pass(&mut self, root: &Path) -> Result<SyncReport> {
        let started = Instant::now();
        let mut progress = SyncProgress::default();
        let callback = self.progress;
        let notify = |p: &SyncProgress| {
            if let Some(cb) = callback {
                cb(p);
            }
        };
        let existing = synced_files(&self.index.documents()?);
        let mut scan = scan::scan(
            root,
            self.excluded_dir().as_deref(),
            self.options.max_file_bytes,
            &mut |n| {
                progress.files_scanned = n;
                notify(&progress);
            },
        );
        let mut report = SyncReport {
            skipped: std::mem::take(&mut scan.skipped),
            failed: std::mem::take(&mut scan.failed),
            ..SyncReport::default()
        };

        // Files gone first: a renamed file is then indexed under its new name, not
        // recorded as a duplicate of its old self.
        for (rel, docs) in &existing {
            if !scan.keeps(rel) {
                for d in docs {
                    self.index.delete(&d.id)?;
                }
                report.deleted.push(rel.clone());
            }
        }

        let (changed, same): (Vec<FoundFile>, Vec<FoundFile>) =
            std::mem::take(&mut scan.files).into_iter().partition(|f| {
                existing.get(&f.rel).is_none_or(|docs| {
                    docs.iter()
                        .any(|d| d.file_hash.as_deref() != Some(f.hash.as_str()))
                })
            });
        report.unchanged = same.len();
        progress.files_to_index = changed.len();
        notify(&progress);

        let mut batch = Batch::default();
        for file in changed {
            match load_synced(&file, &self.options) {
                Ok(docs) => batch.push(file, docs),
                Err(e) => report.failed.push(SkippedFile {
                    path: file.path,
                    reason: e.to_string(),
                }),
            }
            if batch.text_bytes >= BATCH_TEXT_BYTES {
                let batch = std::mem::take(&mut batch);
                self.commit_batch(batch, &existing, &mut report, &mut progress)?;
            }
        }
        self.commit_batch(batch, &existing, &mut report, &mut progress)?;
        self.reindex_orphaned_duplicates(root, &mut report, &mut progress)?;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Hands a batch of loaded files to the index: documents a changed file no longer
    /// holds are deleted, then the rest added (unchanged texts are left as they are).
    fn commit_batch(
        &mut self,
        batch: Batch,
        existing: &BTreeMap<String, Vec<SyncedDoc>>,
        report: &mut SyncReport,
        progress: &mut SyncProgress,
    ) -> Result<()> {
        if batch.files.is_empty() {
            return Ok(());
        }
        let mut docs = Vec::new();
        let mut outcomes = Vec::new();
        for (file, file_docs) in batch.files {
            let old = existing.get(&file.rel).map_or(&[][..], Vec::as_slice);
            let ids: HashSet<&DocId> = file_docs.iter().map(|d| &d.id).collect();
            let mut changed = false;
            for stale in old.iter().filter(|d| !ids.contains(&d.id)) {
                self.index.delete(&stale.id)?;
                changed = true;
            }
            changed |= file_docs.iter().any(|d| {
                old.iter()
                    .find(|o| o.id == d.id)
                    .is_none_or(|o| o.content_hash != d.content_hash())
            });
            let outcome = match (old.is_empty(), changed) {
                (true, _) if file_docs.is_empty() => Outcome::Empty(file.path.clone()),
                (true, _) => Outcome::Added,
                (false, true) => Outcome::Replaced,
                (false, false) => Outcome::Unchanged,
            };
            outcomes.push((file.rel, outcome));
            docs.extend(file_docs);
        }
        let files_in_batch = outcomes.len();
        let before = *progress;
        let callback = self.progress;
        let on_ingest = |p: &IngestProgress| {
            if let Some(cb) = callback {
                cb(&SyncProgress {
                    ingest: *p,
                    ..before
                });
            }
        };
        let ingest = self.index.add_documents(docs, Some(&on_ingest))?;
        report.documents += ingest.added + ingest.replaced;
        report.chunks += ingest.chunks;
        report.duplicates.extend(ingest.duplicates);
        report.near_duplicates.extend(ingest.near_duplicates);
        for (rel, outcome) in outcomes {
            match outcome {
                Outcome::Added => report.added.push(rel),
                Outcome::Replaced => report.replaced.push(rel),
                Outcome::Unchanged => report.unchanged += 1,
                Outcome::Empty(path) => report.skipped.push(SkippedFile {
                    path,
                    reason: "holds no documents".into(),
                }),
            }
        }
        progress.files_indexed += files_in_batch;
        if let Some(cb) = self.progress {
            cb(progress);
        }
        Ok(())
    }

    /// An exact duplicate is not indexed again, so when the document it copies is
    /// deleted or changed its text would be searchable nowhere: such synced documents
    /// are deleted and their files read again. (Two commits: if interrupted between
    /// them, the next sync adds the file back.)
    fn reindex_orphaned_duplicates(
        &mut self,
        root: &Path,
        report: &mut SyncReport,
        progress: &mut SyncProgress,
    ) -> Result<()> {
        let records = self.index.documents()?;
        let hashes: std::collections::HashMap<&DocId, ContentHash> =
            records.iter().map(|r| (&r.id, r.content_hash)).collect();
        let mut orphaned: BTreeMap<String, Vec<DocId>> = BTreeMap::new();
        for r in &records {
            let Some(rel) = sync_path(r) else { continue };
            if let Some(origin) = &r.duplicate_of
                && hashes.get(&origin.doc_id) != Some(&r.content_hash)
            {
                orphaned
                    .entry(rel.to_owned())
                    .or_default()
                    .push(r.id.clone());
            }
        }
        if orphaned.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        for (rel, ids) in orphaned {
            let Some(file) = scan::found(root, &rel) else {
                continue;
            };
            match load_synced(&file, &self.options) {
                Ok(docs) => {
                    for id in &ids {
                        self.index.delete(id)?;
                    }
                    batch.push(file, docs);
                }
                Err(e) => report.failed.push(SkippedFile {
                    path: file.path,
                    reason: e.to_string(),
                }),
            }
        }
        // Their old documents are gone (deleted just above), so each file counts as
        // added by commit_batch: report it as replaced instead.
        let mut again = SyncReport::default();
        progress.files_to_index += batch.files.len();
        self.commit_batch(batch, &BTreeMap::new(), &mut again, progress)?;
        for rel in again.added {
            if !report.added.contains(&rel) && !report.replaced.contains(&rel) {
                // Its bytes had not changed: the main pass counted it unchanged.
                report.unchanged = report.unchanged.saturating_sub(1);
                report.replaced.push(rel);
            }
        }
        report.documents += again.documents;
        report.chunks += again.chunks;
        report.near_duplicates.extend(again.near_duplicates);
        report.duplicates.extend(again.duplicates);
        Ok(())
    }
}

/// What happened to one file of a batch.
enum Outcome {
    Added,
    Replaced,
    Unchanged,
    /// A new file with no documents (an empty JSONL file).
    Empty(PathBuf),
}

/// Loaded files waiting to be handed to the index together.
#[derive(Default)]
struct Batch {
    files: Vec<(FoundFile, Vec<Document>)>,
    text_bytes: usize,
}

impl Batch {
    fn push(&mut self, file: FoundFile, docs: Vec<Document>) {
        self.text_bytes += docs.iter().map(|d| d.text.len()).sum::<usize>();
        self.files.push((file, docs));
    }
}

/// A synced document as the knowledge base has it.
struct SyncedDoc {
    id: DocId,
    file_hash: Option<String>,
    content_hash: ContentHash,
}

fn sync_path(r: &DocumentRecord) -> Option<&str> {
    r.metadata.get(SYNC_PATH_KEY).and_then(Value::as_str)
}

/// The synced documents of the knowledge base, by file.
fn synced_files(records: &[DocumentRecord]) -> BTreeMap<String, Vec<SyncedDoc>> {
    let mut files: BTreeMap<String, Vec<SyncedDoc>> = BTreeMap::new();
    for r in records {
        let Some(rel) = sync_path(r) else { continue };
        files.entry(rel.to_owned()).or_default().push(SyncedDoc {
            id: r.id.clone(),
            file_hash: r
                .metadata
                .get(SYNC_FILE_HASH_KEY)
                .and_then(Value::as_str)
                .map(str::to_owned),
            content_hash: r.content_hash,
        });
    }
    files
}

/// Reads a file's documents and gives them path-based ids and the sync metadata. A file
/// that changed while it was read is refused (the next sync reads it again).
fn load_synced(file: &FoundFile, options: &LoadOptions) -> Result<Vec<Document>> {
    let mut docs = load_file(&file.path, options)?;
    if scan::hash_file(&file.path)? != file.hash {
        return Err(Error::Io {
            path: file.path.clone(),
            source: std::io::Error::other(
                "changed while it was read; the next sync reads it again",
            ),
        });
    }
    let one_per_file = Format::of(&file.path) != Some(Format::Jsonl);
    for d in &mut docs {
        d.id = if one_per_file {
            DocId::new(file.rel.clone())
        } else {
            DocId::new(format!("{}#{}", file.rel, d.id))
        };
        d.metadata
            .insert(SYNC_PATH_KEY.into(), Value::String(file.rel.clone()));
        d.metadata
            .insert(SYNC_FILE_HASH_KEY.into(), Value::String(file.hash.clone()));
    }
    Ok(docs)
}

/// `dir`, canonical, if it is a folder.
fn canonical_folder(dir: &Path) -> Result<PathBuf> {
    let root = std::fs::canonicalize(dir).map_err(Error::io(dir))?;
    if !root.is_dir() {
        return Err(Error::Io {
            path: dir.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a folder: sync takes a folder",
            ),
        });
    }
    Ok(root)
}
