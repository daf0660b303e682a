//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! `ort` is built with `load-dynamic`: the library is found at run time, in this order:
//! 1. `ORT_DYLIB_PATH` (a file);
//! 2. `$TRIBUTE_HOME/lib/` (default `~/.cache/tribute/lib/`, where `make setup` puts it);
//! 3. the directory of the running executable and its `../lib`.
//!
//! Only one ONNX Runtime environment may exist per process: [`environment`] creates it
//! once and hands out clones.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The ONNX Runtime shared library could not be found or loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "ONNX Runtime library not usable: {reason}. Searched: {searched}. Fix: run `make setup` \
     (installs it under ~/.cache/tribute/lib) or set ORT_DYLIB_PATH to libonnxruntime.so"
)]
pub struct OrtLibraryError {
    /// Why it failed.
    pub reason: String,
    /// Where we looked.
    pub searched: String,
}

/// Why loading failed: (reason, places searched). Kept so every caller gets the same answer.
type LoadFailure = (String, String);

static ENVIRONMENT: OnceLock<std::result::Result<ort::environment::Environment, LoadFailure>> =
    OnceLock::new();

/// Tribute's data directory: `$TRIBUTE_HOME`, else `$XDG_CACHE_HOME/tribute`, else `~/.cache/tribute`.
pub fn tribute_home() -> PathBuf {
    if let Some(h) = std::env::var_os("TRIBUTE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(x).join("tribute");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("tribute")
}

fn candidates_in(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so")
                    || n == "libonnxruntime.dylib"
                    || n == "onnxruntime.dll"
            })
        })
        .collect();
    // Prefer the plain name, then the longest (most specific) version.
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found
}

/// Where the ONNX Runtime library would be loaded from, and every place searched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtLibrarySearch {
    /// The library that would be loaded; `None` when none was found.
    pub found: Option<PathBuf>,
    /// Every file or folder looked at, in order.
    pub searched: Vec<PathBuf>,
}

/// Looks for the ONNX Runtime library as [`environment`] does, without loading it.
pub fn locate_ort_library() -> OrtLibrarySearch {
    let mut searched = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        searched.push(p.clone());
        return OrtLibrarySearch {
            found: p.is_file().then_some(p),
            searched,
        };
    }
    let mut dirs = vec![tribute_home().join("lib")];
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("..").join("lib"));
        dirs.push(exe_dir);
    }
    for d in dirs {
        searched.push(d.clone());
        if let Some(p) = candidates_in(&d).into_iter().next() {
            return OrtLibrarySearch {
                found: Some(p),
                searched,
            };
        }
    }
    OrtLibrarySearch {
        found: None,
        searched,
    }
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<ort::environment::Environment, OrtLibraryError> {
    let result = ENVIRONMENT.get_or_init(|| {
        let OrtLibrarySearch {
            found: path,
            searched,
        } = locate_ort_library();
        let searched = searched
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let Some(path) = path else {
            return Err(("library not found".to_owned(), searched));
        };
        ort::init_from(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| b.with_name("tribute").build().map_err(|e| e.to_string()))
            .map_err(|e| (format!("{}: {e}", path.display()), searched))
    });
    result
        .clone()
        .map_err(|(reason, searched)| OrtLibraryError { reason, searched })
}
