//! Content hashes of model and adapter files, by which attribution records name them.
//!
//! A directory's hash is `keccak256` of its *manifest*: for each regular file directly in
//! it, sorted by name, the UTF-8 name, a zero byte and the file's `keccak256`. The
//! tokenizer hash is the manifest of [`TOKENIZER_FILES`] alone. File hashes are cached per
//! process by path, size and modification time, so a model is read once.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use alloy_primitives::{B256, Keccak256};

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

type CacheKey = (PathBuf, u64, Option<SystemTime>);

/// keccak-256 of a file's bytes (cached by path, size and modification time).
pub fn file_hash(path: &Path) -> Result<B256> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, B256>>> = OnceLock::new();
    let meta = std::fs::metadata(path).map_err(files_err(path))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().ok().and_then(|c| c.get(&key).copied()) {
        return Ok(h);
    }
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
    let hash = hasher.finalize();
    if let Ok(mut c) = cache.lock() {
        c.insert(key, hash);
    }
    Ok(hash)
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
