//! Which files of a repository make a model, and checking them against the hub's hashes.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::{ModelSpec, PullError};

/// A source file of a pulled model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Its path in the repository.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Its SHA-256 (hex), computed here.
    pub sha256: String,
    /// What it was checked against.
    pub verification: Verification,
}

/// What a source file was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verification {
    /// The SHA-256 the hub publishes for an LFS file (weights, GGUF).
    Sha256,
    /// The git blob id (SHA-1 of `blob LEN\0` + content) the hub publishes for a file
    /// kept in git itself (configs, tokenizers).
    GitSha1,
    /// Nothing: the file was copied in by hand and the hub could not be asked.
    Unverified,
}

/// The hash a file should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expected {
    Sha256(String),
    GitSha1(String),
    Nothing,
}

impl Expected {
    /// From an ETag (or a blob file named by one): the hub's ETag of an LFS file is its
    /// SHA-256, of any other file its git blob id.
    pub(crate) fn from_etag(etag: &str) -> Expected {
        let etag = etag
            .trim_matches('"')
            .trim_start_matches("W/")
            .trim_matches('"');
        let hex = etag.chars().all(|c| c.is_ascii_hexdigit());
        match etag.len() {
            64 if hex => Expected::Sha256(etag.to_ascii_lowercase()),
            40 if hex => Expected::GitSha1(etag.to_ascii_lowercase()),
            _ => Expected::Nothing,
        }
    }
}

/// What to download for a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    /// A Hugging Face checkpoint: configs, tokenizer files and weights.
    Checkpoint(Vec<String>),
    /// One GGUF file.
    Gguf(String),
}

impl Selection {
    pub(crate) fn files(&self) -> Vec<&str> {
        match self {
            Selection::Checkpoint(f) => f.iter().map(String::as_str).collect(),
            Selection::Gguf(f) => vec![f.as_str()],
        }
    }

    pub(crate) fn gguf(&self) -> Option<&str> {
        match self {
            Selection::Gguf(f) => Some(f),
            Selection::Checkpoint(_) => None,
        }
    }
}

/// Files of a checkpoint besides `*.safetensors` that the exporter or the generator read.
const CHECKPOINT_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "model.safetensors.index.json",
];

/// Picks the files of `names` (a repository's or a local snapshot's) that make the model.
pub(crate) fn select(spec: &ModelSpec, names: &[String]) -> Result<Selection, PullError> {
    let missing = |reason: String| PullError::NoModelFiles {
        spec: spec.to_string(),
        reason,
        found: names.to_vec(),
    };
    if let Some(file) = spec.file() {
        if !names.iter().any(|n| n == file) {
            return Err(missing(format!("there is no file {file}")));
        }
        if !file.ends_with(".gguf") {
            return Err(missing(format!(
                "{file} is not a .gguf file (name a file only to pick one GGUF)"
            )));
        }
        return Ok(Selection::Gguf(file.to_owned()));
    }
    // Only the top level: sub-folders hold other formats (onnx/, original/, …).
    let top: Vec<&String> = names.iter().filter(|n| !n.contains('/')).collect();
    let has = |name: &str| top.iter().any(|n| *n == name);
    if has("config.json") && top.iter().any(|n| n.ends_with(".safetensors")) {
        if !has("tokenizer.json") {
            return Err(missing(
                "the checkpoint has no tokenizer.json (the exporter needs the fast tokenizer)"
                    .into(),
            ));
        }
        let files = top
            .iter()
            .filter(|n| n.ends_with(".safetensors") || CHECKPOINT_FILES.contains(&n.as_str()))
            .map(|n| (*n).clone())
            .collect();
        return Ok(Selection::Checkpoint(files));
    }
    let ggufs: Vec<&String> = top
        .iter()
        .copied()
        .filter(|n| n.ends_with(".gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok(Selection::Gguf((*one).clone())),
        [] => Err(missing(
            "neither a checkpoint (config.json, tokenizer.json, *.safetensors) nor a .gguf file"
                .into(),
        )),
        several => Err(missing(format!(
            "{} GGUF files: name one, e.g. {}/{}",
            several.len(),
            spec.repo(),
            several[0]
        ))),
    }
}

/// The shards a `model.safetensors.index.json` in `dir` lists that are not there (a copy
/// or a download that stopped half way).
pub(crate) fn missing_shards(dir: &Path) -> Vec<String> {
    #[derive(Deserialize)]
    struct ShardIndex {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let Ok(text) = std::fs::read_to_string(dir.join("model.safetensors.index.json")) else {
        return Vec::new();
    };
    let Ok(index) = serde_json::from_str::<ShardIndex>(&text) else {
        return Vec::new();
    };
    let mut missing: Vec<String> = index
        .weight_map
        .into_values()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// Hashes `path` and checks it against `expected` (and `size`, when known).
pub(crate) fn check(
    path: &Path,
    name: &str,
    expected: &Expected,
    size: Option<u64>,
) -> Result<SourceFile, PullError> {
    let io = |source| PullError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if let Some(want) = size.filter(|&want| want != len) {
        return Err(PullError::HashMismatch {
            file: name.to_owned(),
            algorithm: "size",
            expected: want.to_string(),
            actual: len.to_string(),
        });
    }
    let mut sha256 = Sha256::new();
    let mut git = matches!(expected, Expected::GitSha1(_)).then(|| {
        let mut h = Sha1::new();
        h.update(format!("blob {len}\0").as_bytes());
        h
    });
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        if let Some(g) = git.as_mut() {
            g.update(&buf[..n]);
        }
    }
    let sha256 = hex(&sha256.finalize());
    let (verification, algorithm, want, actual) = match expected {
        Expected::Sha256(want) => (Verification::Sha256, "sha256", want, sha256.clone()),
        Expected::GitSha1(want) => {
            let actual = git.map(|g| hex(&g.finalize())).unwrap_or_default();
            (Verification::GitSha1, "git-sha1", want, actual)
        }
        Expected::Nothing => {
            return Ok(SourceFile {
                name: name.to_owned(),
                size: len,
                sha256,
                verification: Verification::Unverified,
            });
        }
    };
    if !want.eq_ignore_ascii_case(&actual) {
        return Err(PullError::HashMismatch {
            file: name.to_owned(),
            algorithm,
            expected: want.clone(),
            actual,
        });
    }
    Ok(SourceFile {
        name: name.to_owned(),
        size: len,
        sha256,
        verification,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn picks_a_checkpoint_or_the_one_gguf() {
        let spec: ModelSpec = "o/n".parse().unwrap();
        let repo = names(&[
            ".gitattributes",
            "README.md",
            "config.json",
            "tokenizer.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
            "onnx/model.onnx",
        ]);
        let Selection::Checkpoint(files) = select(&spec, &repo).unwrap() else {
            panic!("a checkpoint")
        };
        assert_eq!(files.len(), 5, "{files:?}");
        assert!(
            !files
                .iter()
                .any(|f| f.contains("README") || f.contains("onnx"))
        );
        let one = names(&["README.md", "m.Q4_1.gguf"]);
        assert_eq!(
            select(&spec, &one).unwrap(),
            Selection::Gguf("m.Q4_1.gguf".into())
        );
        let two = names(&["a.Q4_1.gguf", "a.Q8_0.gguf"]);
        let e = select(&spec, &two).unwrap_err().to_string();
        assert!(e.contains("name one, e.g. o/n/a.Q4_1.gguf"), "{e}");
        let named: ModelSpec = "o/n/a.Q8_0.gguf".parse().unwrap();
        assert_eq!(select(&named, &two).unwrap().gguf(), Some("a.Q8_0.gguf"));
        let absent: ModelSpec = "o/n/b.gguf".parse().unwrap();
        assert!(select(&absent, &two).is_err());
        assert!(select(&spec, &names(&["config.json", "model.safetensors"])).is_err());
    }

    #[test]
    fn hashes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello\n").unwrap();
        // `git hash-object` of "hello\n", and its SHA-256.
        let git = "ce013625030ba8dba906f756967f9e9ca394464a";
        let sha = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        let ok = check(
            &path,
            "f",
            &Expected::from_etag(&format!("\"{git}\"")),
            Some(6),
        )
        .unwrap();
        assert_eq!(
            (ok.verification, ok.sha256.as_str()),
            (Verification::GitSha1, sha)
        );
        let ok = check(&path, "f", &Expected::Sha256(sha.into()), None).unwrap();
        assert_eq!(ok.verification, Verification::Sha256);
        let bad = check(&path, "f", &Expected::Sha256("00".repeat(32)), None).unwrap_err();
        assert!(matches!(
            bad,
            PullError::HashMismatch {
                algorithm: "sha256",
                ..
            }
        ));
        let short = check(&path, "f", &Expected::Nothing, Some(7)).unwrap_err();
        assert!(matches!(
            short,
            PullError::HashMismatch {
                algorithm: "size",
                ..
            }
        ));
        assert_eq!(Expected::from_etag("W/\"x\""), Expected::Nothing);
    }
}
