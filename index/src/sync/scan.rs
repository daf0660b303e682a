//! Walking the synced folder: which files it holds, their hashes, and what is left out.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use alloy_primitives::Keccak256;

use crate::error::{Error, Result};
use crate::loaders::{Format, SkippedFile};
use crate::types::ContentHash;

/// A file of the folder that a sync may index.
pub(super) struct FoundFile {
    /// The file, under the (canonical) folder.
    pub(super) path: PathBuf,
    /// Its path inside the folder, `/`-separated: its documents' id.
    pub(super) rel: String,
    /// keccak-256 of its bytes, as hex.
    pub(super) hash: String,
}

/// What a walk of the folder found.
#[derive(Default)]
pub(super) struct Scan {
    /// Readable files of the formats this build loads, in path order.
    pub(super) files: Vec<FoundFile>,
    /// Every file seen (failed and unreadable ones too): their documents are kept.
    present: HashSet<String>,
    /// Folders that could not be read: documents under them are kept.
    unvisited: Vec<String>,
    /// Entries left out, with the reason.
    pub(super) skipped: Vec<SkippedFile>,
    /// Files of a known format that cannot be loaded (too large).
    pub(super) failed: Vec<SkippedFile>,
}

impl Scan {
    /// Whether the documents of `rel` stay: the file is still there, or lies in a
    /// folder that could not be read this time.
    pub(super) fn keeps(&self, rel: &str) -> bool {
        self.present.contains(rel)
            || self.unvisited.iter().any(|dir| {
                dir.is_empty()
                    || rel
                        .strip_prefix(dir.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
    }

    fn skip(&mut self, path: PathBuf, reason: String) {
        tracing::warn!(target: "tribute_index::sync", path = %path.display(), "skipped: {reason}");
        self.skipped.push(SkippedFile { path, reason });
    }
}

/// `path` inside `root`, `/`-separated.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Walks `root` (canonical), in name order, following symlinks; hidden entries and the
/// `excluded` folder are not visited. `on_file` gets the count of files looked at.
pub(super) fn scan(
    root: &Path,
    excluded: Option<&Path>,
    max_file_bytes: u64,
    on_file: &mut dyn FnMut(usize),
) -> Scan {
    let mut scan = Scan::default();
    let visit = |e: &walkdir::DirEntry| {
        let hidden = e.depth() > 0 && e.file_name().to_string_lossy().starts_with('.');
        let own_index = e.file_type().is_dir()
            && excluded.is_some_and(|x| {
                e.path() == x || std::fs::canonicalize(e.path()).is_ok_and(|p| p == x)
            });
        !hidden && !own_index
    };
    let entries = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(visit);
    let mut seen = 0;
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().unwrap_or(root).to_owned();
                let rel = relative(root, &path);
                // Whatever was indexed from there stays until it can be read again.
                scan.present.insert(rel.clone());
                scan.unvisited.push(rel);
                scan.skip(path, e.to_string());
                continue;
            }
        };
        if entry.file_type().is_dir() {
            continue;
        }
        seen += 1;
        on_file(seen);
        let path = entry.into_path();
        let rel = relative(root, &path);
        scan.present.insert(rel.clone());
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            scan.skip(path, "not a regular file".into());
            continue;
        }
        match Format::of(&path) {
            None => {
                let reason = Error::UnsupportedFile { path: path.clone() }.to_string();
                scan.skip(path, reason);
                continue;
            }
            Some(format) if !format.is_built() => {
                let reason = Error::FormatNotBuilt {
                    path: path.clone(),
                    format: format.name(),
                }
                .to_string();
                scan.skip(path, reason);
                continue;
            }
            Some(_) => {}
        }
        match std::fs::metadata(&path).map(|m| m.len()) {
            Ok(bytes) if bytes > max_file_bytes => {
                let reason = Error::FileTooLarge {
                    path: path.clone(),
                    bytes,
                    limit: max_file_bytes,
                }
                .to_string();
                scan.failed.push(SkippedFile { path, reason });
                continue;
            }
            _ => {}
        }
        match hash_file(&path) {
            Ok(hash) => scan.files.push(FoundFile { path, rel, hash }),
            Err(e) => scan.skip(path, format!("unreadable: {e}")),
        }
    }
    scan
}

/// The file `rel` of the folder `root`, hashed; `None` if it cannot be read.
pub(super) fn found(root: &Path, rel: &str) -> Option<FoundFile> {
    let path = root.join(rel);
    let hash = hash_file(&path).ok()?;
    Some(FoundFile {
        path,
        rel: rel.to_owned(),
        hash,
    })
}

/// keccak-256 of a file's bytes, read in pieces (bounded memory), as hex.
pub(super) fn hash_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut hasher = Keccak256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(ContentHash::from_b256(hasher.finalize()).to_string())
}
