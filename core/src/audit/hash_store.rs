//! Hashes of large files kept across processes, so that a model is read once per machine
//! rather than once per process: hashing SmolLM2's 550 MB of weights with keccak-256 took
//! ≈ 1–4 s, paid by the first ask of every `tribute ask`, every server start and every test
//! process.
//!
//! One small file per hashed path in `$TRIBUTE_HOME/hashes/`, named by the keccak-256 of the
//! canonical path, holding the file's [`Stamp`] and its hash. An entry is used only while the
//! file's stamp is unchanged; on Unix the stamp includes the inode change time, which every
//! write, rename onto the path, `touch` or `chmod` moves and no user call can set back, so a
//! changed file is hashed again even when its size and modification time were restored. The
//! store is a cache: anything wrong with it (missing, unreadable, unwritable, corrupt) means
//! hashing the file, never an error. Whoever can write `$TRIBUTE_HOME` can already replace
//! the ONNX Runtime library there, so the store adds no new trust.

use std::fs::Metadata;
use std::path::{Path, PathBuf};

use alloy_primitives::{B256, keccak256};

/// Files smaller than this are hashed every time (milliseconds) rather than stored.
pub(super) const MIN_STORED_SIZE: u64 = 8 << 20;

/// What identifies a file's content without reading it: size, modification time and, on
/// Unix, the inode change time, inode and device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Stamp(String);

impl Stamp {
    pub(super) fn of(meta: &Metadata) -> Stamp {
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(String::from("-"), |d| {
                format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
            });
        #[cfg(unix)]
        let extra = {
            use std::os::unix::fs::MetadataExt;
            format!(
                " {}.{:09} {} {}",
                meta.ctime(),
                meta.ctime_nsec(),
                meta.ino(),
                meta.dev()
            )
        };
        #[cfg(not(unix))]
        let extra = String::new();
        Stamp(format!("{} {modified}{extra}", meta.len()))
    }
}

/// The store's directory: `$TRIBUTE_HOME/hashes`.
pub(super) fn default_dir() -> PathBuf {
    tribute_common::tribute_home().join("hashes")
}

/// Where the entry of `path` lives in `dir` (None when the path cannot be made canonical).
fn entry(dir: &Path, path: &Path) -> Option<PathBuf> {
    let canonical = path.canonicalize().ok()?;
    let name = keccak256(canonical.as_os_str().as_encoded_bytes());
    Some(dir.join(format!("{name:x}")))
}

/// The stored hash of `path` if its entry was written for a file with this `stamp`.
pub(super) fn load(dir: &Path, path: &Path, stamp: &Stamp) -> Option<B256> {
    let text = std::fs::read_to_string(entry(dir, path)?).ok()?;
    let (stored, hash) = text.trim_end().rsplit_once('\n')?;
    (stored == stamp.0).then(|| hash.parse().ok())?
}

/// Stores `hash` as the hash of `path` with `stamp` (taken before the file was read, so a
/// file changed while it was hashed gets a stamp that no longer matches). Best effort: a
/// store that cannot be written is left as it is.
pub(super) fn store(dir: &Path, path: &Path, stamp: &Stamp, hash: B256) {
    let Some(target) = entry(dir, path) else {
        return;
    };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    // Written aside and renamed, so that a reader never sees half an entry.
    let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return;
    };
    if std::io::Write::write_all(&mut tmp, format!("{}\n{hash:x}\n", stamp.0).as_bytes()).is_ok() {
        let _ = tmp.persist(target);
    }
}
