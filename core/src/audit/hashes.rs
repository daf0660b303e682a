//! Content hashes of model and adapter files, by which attribution records name them.
//!
//! A directory's hash is `keccak256` of its *manifest*: for each regular file directly in
//! it, sorted by name, the UTF-8 name, a zero byte and the file's `keccak256`. The
//! tokenizer hash is the manifest of [`TOKENIZER_FILES`] alone. File hashes are cached per
//! process and, for large files, across processes ([`hash_store`]), so a model is read once
//! per machine.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use alloy_primitives::{B256, Keccak256};

use super::hash_store::{self, Stamp};
use crate::error::{Error, Result};

/// The files of a model directory that make up its tokenizer (those present are hashed).
pub const TOKENIZER_FILES: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// The hashes of a model directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelHashes {
    /// The manifest hash of every file in the directory.
    pub model: B256,
    /// The manifest hash of its tokenizer files.
    pub tokenizer: B256,
}

fn files_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::ModelFiles {
        path: path.to_path_buf(),
        source,
    }
}

/// keccak-256 of a file's bytes, cached in the process and, for large files, in
/// `$TRIBUTE_HOME/hashes` (see [`hash_store`]), both for as long as the file's size,
/// modification time and (on Unix) inode change time stay what they were.
pub fn file_hash(path: &Path) -> Result<B256> {
    file_hash_with_store(path, &hash_store::default_dir())
}

/// [`file_hash`] with the cross-process store in `store_dir`.
///
/// One caller hashes a file at a time: others asking for the same file meanwhile (the
/// first burst of concurrent asks on a fresh server) wait for its result instead of
/// reading the same 550 MB side by side on the same cores.
fn file_hash_with_store(path: &Path, store_dir: &Path) -> Result<B256> {
    type Slot = Arc<Mutex<Option<B256>>>;
    static CACHE: OnceLock<Mutex<HashMap<(PathBuf, Stamp), Slot>>> = OnceLock::new();
    // The stamp is taken before reading: a file written meanwhile no longer matches it.
    let meta = std::fs::metadata(path).map_err(files_err(path))?;
    let stamp = Stamp::of(&meta);
    let slot = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((path.to_path_buf(), stamp.clone()))
        .or_default()
        .clone();
    // Held while hashing: a slot holds a hash or nothing (a failed read leaves it empty).
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(hash) = *slot {
        return Ok(hash);
    }
    let stored = meta.len() >= hash_store::MIN_STORED_SIZE;
    let hash = match stored
        .then(|| hash_store::load(store_dir, path, &stamp))
        .flatten()
    {
        Some(hash) => hash,
        None => {
            let hash = read_and_hash(path)?;
            if stored {
                hash_store::store(store_dir, path, &stamp, hash);
            }
            hash
        }
    };
    *slot = Some(hash);
    Ok(hash)
}

fn read_and_hash(path: &Path) -> Result<B256> {
    #[cfg(test)]
    tests::count_read(path);
    let mut file = std::fs::File::open(path).map_err(files_err(path))?;
    let mut hasher = Keccak256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(files_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize())
}

/// The manifest hash of the regular files directly in `dir` that `keep` accepts.
fn manifest(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<B256> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(files_err(dir))? {
        let entry = entry.map_err(files_err(dir))?;
        // Follows symlinks: a model directory of links hashes like the files it points to.
        let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
        if is_file
            && let Some(name) = entry.file_name().to_str()
            && keep(name)
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    let mut hasher = Keccak256::new();
    for name in names {
        hasher.update(name.as_bytes());
        hasher.update([0u8]);
        hasher.update(file_hash(&dir.join(&name))?);
    }
    Ok(hasher.finalize())
}

/// The model and tokenizer hashes of a model directory.
pub fn model_hashes(dir: &Path) -> Result<ModelHashes> {
    Ok(ModelHashes {
        model: manifest(dir, |_| true)?,
        tokenizer: manifest(dir, |n| TOKENIZER_FILES.contains(&n))?,
    })
}

/// The hash of an adapter: the manifest of a PEFT directory, the keccak-256 of a file.
pub fn adapter_hash(path: &Path) -> Result<B256> {
    if path.is_dir() {
        manifest(path, |_| true)
    } else {
        file_hash(path)
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::keccak256;

    use super::*;

    /// A file of `len` bytes in `dir` that no other test hashes (the process cache is shared).
    fn file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }

    /// Reads of each file by `read_and_hash` (tests run in parallel: counted per path).
    static READS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(super) fn count_read(path: &Path) {
        READS.lock().unwrap().push(path.to_path_buf());
    }

    fn reads_of(path: &Path) -> usize {
        READS.lock().unwrap().iter().filter(|p| *p == path).count()
    }

    #[test]
    fn callers_asking_for_the_same_file_at_once_read_it_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("hashes");
        let (path, bytes) = file(tmp.path(), "weights.bin", 9 << 20);
        let start = std::sync::Barrier::new(4);
        let hashes: Vec<B256> = std::thread::scope(|s| {
            let callers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        file_hash_with_store(&path, &store).unwrap()
                    })
                })
                .collect();
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert!(hashes.iter().all(|h| *h == keccak256(&bytes)));
        assert_eq!(reads_of(&path), 1);
        // A file too small for the store is read once per process too.
        let (small, _) = file(tmp.path(), "config.json", 100);
        file_hash_with_store(&small, &store).unwrap();
        file_hash_with_store(&small, &store).unwrap();
        assert_eq!(reads_of(&small), 1);
    }

    fn entries(store: &Path) -> usize {
        std::fs::read_dir(store).map_or(0, |d| d.count())
    }

    #[test]
    fn a_large_files_hash_is_stored_and_a_later_process_reads_it_instead_of_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("hashes");
        let (path, bytes) = file(tmp.path(), "weights.bin", 9 << 20);
        let real = keccak256(&bytes);
        assert_eq!(file_hash_with_store(&path, &store).unwrap(), real);
        assert_eq!(entries(&store), 1);
        let stamp = Stamp::of(&std::fs::metadata(&path).unwrap());
        assert_eq!(hash_store::load(&store, &path, &stamp), Some(real));

        // What a later process sees: a file this process has not hashed, whose entry says
        // otherwise than its bytes. The entry is believed while the stamp matches, which
        // shows the file is not read again.
        let (other, _) = file(tmp.path(), "other.bin", 9 << 20);
        let stamp = Stamp::of(&std::fs::metadata(&other).unwrap());
        let told = B256::repeat_byte(7);
        hash_store::store(&store, &other, &stamp, told);
        assert_eq!(file_hash_with_store(&other, &store).unwrap(), told);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_rewritten_with_its_old_size_and_modification_time_is_hashed_again() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("hashes");
        let (path, mut bytes) = file(tmp.path(), "weights.bin", 9 << 20);
        let before = file_hash_with_store(&path, &store).unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        bytes[1234] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.len(), meta.modified().unwrap()), (9 << 20, modified));
        let after = file_hash_with_store(&path, &store).unwrap();
        assert_eq!(after, keccak256(&bytes));
        assert_ne!(after, before);
        assert_eq!(
            hash_store::load(&store, &path, &Stamp::of(&meta)),
            Some(after)
        );
    }

    #[test]
    fn small_files_are_not_stored_and_a_broken_store_costs_only_a_read() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("hashes");
        let (small, bytes) = file(tmp.path(), "tokenizer.json", 4096);
        assert_eq!(
            file_hash_with_store(&small, &store).unwrap(),
            keccak256(&bytes)
        );
        assert_eq!(entries(&store), 0);

        // A corrupt entry is ignored and replaced.
        let (path, bytes) = file(tmp.path(), "weights.bin", 9 << 20);
        let stamp = Stamp::of(&std::fs::metadata(&path).unwrap());
        hash_store::store(&store, &path, &stamp, B256::ZERO);
        let entry = std::fs::read_dir(&store)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(&entry).unwrap();
        let stamp_line = text.lines().next().unwrap();
        std::fs::write(&entry, format!("{stamp_line}\nnot a hash\n")).unwrap();
        assert_eq!(
            file_hash_with_store(&path, &store).unwrap(),
            keccak256(&bytes)
        );
        assert_eq!(
            hash_store::load(&store, &path, &stamp),
            Some(keccak256(&bytes))
        );

        // A store that cannot be created (a file where its directory should be).
        let blocked = tmp.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let (path, bytes) = file(tmp.path(), "more.bin", 9 << 20);
        assert_eq!(
            file_hash_with_store(&path, &blocked).unwrap(),
            keccak256(&bytes)
        );
    }
}
