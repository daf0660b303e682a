//! Models from the Hugging Face hub: `tribute models pull ORG/NAME[@REVISION][:OPTIONS]`,
//! and `model = "hf:ORG/NAME@REVISION"` in a config. `:OPTIONS` picks what the checkpoint
//! is exported as (`:int4`, `:static,fp16`; see [`ExportOptions`]), each choice exported once
//! into a directory of its own (`COMMIT--int4`).
//!
//! A pull resolves the revision to a commit, downloads the checkpoint (`config.json`, the
//! tokenizer files and `*.safetensors`, or one `.gguf` file) into `$TRIBUTE_HOME/hub` (the
//! layout of `huggingface_hub`'s own cache), checks every file against the hash the hub
//! publishes, runs the exporter (`python -m tribute_export`) once into a temporary
//! directory and renames that to `$TRIBUTE_HOME/models/hf/ORG--NAME/COMMIT` when it is
//! complete. Pulling the same revision again finds that directory and touches no network.
//!
//! Downloading needs the `hub` feature. Without it, or when the hub cannot be reached, a
//! pull still finds a model exported before, or exports checkpoint files copied by hand
//! into the hub cache ([`PullError::Offline`] says where).
//!
//! ```no_run
//! let spec: tribute::hub::ModelSpec = "HuggingFaceTB/SmolLM2-135M-Instruct@main".parse()?;
//! let model = spec.pull().run()?;
//! println!("{}", model.dir.display()); // a model directory for `Generator::load`
//! # Ok::<(), tribute::Error>(())
//! ```

mod export;
#[cfg(feature = "hub")]
mod fetch;
mod files;
mod options;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use files::{SourceFile, Verification};
pub use options::{ExportOptions, Quant};

/// The hub used when neither [`Pull::endpoint`] nor `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A model on the hub: `ORG/NAME[/FILE.gguf][@REVISION][:OPTIONS]`, with an optional `hf:`
/// prefix. The revision is a branch, a tag or a commit hash (default `main`); `FILE.gguf`
/// picks one GGUF file of a repository that has several; `OPTIONS` what it is exported as
/// ([`ExportOptions`]: `int4`, `static,fp16`, ...; default fp32 weights, portable).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelSpec {
    repo: String,
    file: Option<String>,
    revision: Option<String>,
    export: ExportOptions,
}

/// Why a pull failed. Each variant says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// The model spec is malformed.
    #[error(
        "invalid model spec {spec:?}: {reason} (expected \
         ORG/NAME[/FILE.gguf][@REVISION][:OPTIONS], e.g. HuggingFaceTB/SmolLM2-135M-Instruct@main \
         or HuggingFaceTB/SmolLM2-135M-Instruct:int4)"
    )]
    InvalidSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The hub has no such repository (or it is private: set `HF_TOKEN`).
    #[error("{repo} does not exist on {endpoint} (if it is private or gated, set HF_TOKEN)")]
    RepoNotFound {
        /// `ORG/NAME`.
        repo: String,
        /// The hub asked.
        endpoint: String,
    },
    /// The repository has no such branch, tag or commit.
    #[error(
        "{repo} has no revision {revision:?} on {endpoint} (give a branch, a tag or a commit hash)"
    )]
    RevisionNotFound {
        /// `ORG/NAME`.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The hub asked.
        endpoint: String,
    },
    /// The hub cannot be reached (or downloading is not built in) and nothing usable is
    /// cached.
    #[error(
        "cannot download {spec}: {cause}; nothing is cached for it. To use it offline, copy \
         the checkpoint (config.json, tokenizer.json, tokenizer_config.json and *.safetensors, \
         or the .gguf file) into {}, or copy a huggingface_hub cache entry \
         (~/.cache/huggingface/hub/{folder}) into {}, then run again",
        snapshot_dir.display(),
        hub_dir.display()
    )]
    Offline {
        /// The model spec.
        spec: String,
        /// Why nothing was downloaded.
        cause: String,
        /// Where checkpoint files copied by hand are looked for.
        snapshot_dir: PathBuf,
        /// The download cache (huggingface_hub's layout).
        hub_dir: PathBuf,
        /// The repository's folder in that cache (`models--ORG--NAME`).
        folder: String,
    },
    /// The repository (or the local copy) holds nothing the exporter can read.
    #[error("{spec}: {reason} (files: {})", found.join(", "))]
    NoModelFiles {
        /// The model spec.
        spec: String,
        /// What is missing or ambiguous.
        reason: String,
        /// The files that are there.
        found: Vec<String>,
    },
    /// A downloaded file does not match the hub's hash; it was deleted.
    #[error(
        "{file}: {algorithm} is {actual} but the hub says {expected}; the file was deleted, \
         pull again to download it afresh"
    )]
    HashMismatch {
        /// The file in the repository.
        file: String,
        /// `sha256` (LFS files), `git-sha1` (other files) or `size`.
        algorithm: &'static str,
        /// What the hub publishes.
        expected: String,
        /// What the file has.
        actual: String,
    },
    /// A download failed part way; what arrived is kept and the next pull resumes it.
    #[error(
        "downloading {file} failed: {message} (the part already downloaded is resumed by the next pull)"
    )]
    Download {
        /// The file in the repository.
        file: String,
        /// Why.
        message: String,
    },
    /// The exporter's Python cannot be started.
    #[error(
        "cannot run the exporter with {} ({source}): run `make setup` (installs it into \
         $TRIBUTE_HOME/venv) or set TRIBUTE_PYTHON to a Python with `tribute_export`",
        python.display()
    )]
    ExporterMissing {
        /// The Python tried.
        python: PathBuf,
        /// Why it did not start.
        source: std::io::Error,
    },
    /// The exporter failed; nothing was installed.
    #[error(
        "exporting {spec} failed ({status}); nothing was installed. Exporter output:\n{output}"
    )]
    Export {
        /// The model spec.
        spec: String,
        /// The exit status.
        status: String,
        /// The end of what the exporter printed.
        output: String,
    },
    /// A file of the cache could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// A pulled model: where its export is and what it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PulledModel {
    /// `ORG/NAME`.
    pub repo: String,
    /// The revision asked for.
    pub revision: String,
    /// The commit it resolved to (or, for files copied in by hand, the snapshot's name).
    pub commit: String,
    /// The GGUF file exported, if the source was one.
    pub file: Option<String>,
    /// The exported model directory (load it with `Generator::load`).
    pub dir: PathBuf,
    /// The source files, with how each was verified.
    pub files: Vec<SourceFile>,
    /// True when the export was already there: nothing was downloaded or exported.
    #[serde(skip)]
    pub cached: bool,
}

/// A pull of one [`ModelSpec`]; [`Pull::run`] does it.
#[derive(Debug, Clone)]
#[must_use = "call .run()"]
pub struct Pull {
    spec: ModelSpec,
    home: Option<PathBuf>,
    endpoint: Option<String>,
    python: Option<PathBuf>,
    refresh: bool,
    progress: bool,
}

impl ModelSpec {
    /// The prefix that marks a hub model where a path is expected (`model = "hf:…"`).
    pub const PREFIX: &'static str = "hf:";

    /// `ORG/NAME`.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The GGUF file named, if any.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The revision: the one given, or `main`.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    /// What the checkpoint is exported as.
    pub fn export_options(&self) -> ExportOptions {
        self.export
    }

    /// This spec exported as `options` instead.
    pub fn with_export_options(mut self, options: ExportOptions) -> Self {
        self.export = options;
        self
    }

    /// `NAME`.
    pub fn name(&self) -> &str {
        self.repo.rsplit('/').next().unwrap_or(&self.repo)
    }

    /// The spec a config's `model` holds when it is one (`hf:…`), else `None` (a path).
    pub fn from_model_path(path: &Path) -> Option<Result<ModelSpec>> {
        let text = path.to_str()?;
        text.starts_with(Self::PREFIX).then(|| text.parse())
    }

    /// A pull of this model with the defaults ([`Pull`] lists them).
    pub fn pull(&self) -> Pull {
        Pull {
            spec: self.clone(),
            home: None,
            endpoint: None,
            python: None,
            refresh: false,
            progress: false,
        }
    }
}

impl FromStr for ModelSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = |reason: &str| {
            Error::from(PullError::InvalidSpec {
                spec: text.to_owned(),
                reason: reason.to_owned(),
            })
        };
        let body = text
            .trim()
            .strip_prefix(Self::PREFIX)
            .unwrap_or(text.trim());
        // Export options after the last `:` (no git ref, repository or hub name holds one).
        let (body, export) = match body.rsplit_once(':') {
            Some((_, "")) => return Err(invalid("no export options after ':'")),
            Some((b, words)) => (b, ExportOptions::parse(words).map_err(|e| invalid(&e))?),
            None => (body, ExportOptions::default()),
        };
        // Branch names may hold `/` (`refs/pr/1`), so the revision is all after the first `@`.
        let (path, revision) = match body.split_once('@') {
            Some((_, "")) => return Err(invalid("empty revision after '@'")),
            Some((p, r)) => (p, Some(r.to_owned())),
            None => (body, None),
        };
        let mut parts = path.splitn(3, '/');
        let (org, name) = match (parts.next(), parts.next()) {
            (Some(org), Some(name)) => (org, name),
            _ => return Err(invalid("no ORG/NAME")),
        };
        let file = parts.next().map(str::to_owned);
        let name_ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !name_ok(org) || !name_ok(name) {
            return Err(invalid(
                "ORG and NAME are letters, digits, '-', '_' and '.'",
            ));
        }
        let path_ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with('/')
                && !s.contains('\\')
                && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
                && !s.chars().any(char::is_whitespace)
        };
        if file.as_deref().is_some_and(|f| !path_ok(f)) {
            return Err(invalid(
                "the file must be a plain path inside the repository",
            ));
        }
        if revision.as_deref().is_some_and(|r| !path_ok(r)) {
            return Err(invalid(
                "the revision must be a branch, a tag or a commit hash",
            ));
        }
        Ok(ModelSpec {
            repo: format!("{org}/{name}"),
            file,
            revision,
            export,
        })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repo)?;
        if let Some(file) = &self.file {
            write!(f, "/{file}")?;
        }
        if let Some(rev) = &self.revision {
            write!(f, "@{rev}")?;
        }
        if self.export != ExportOptions::default() {
            write!(f, ":{}", self.export)?;
        }
        Ok(())
    }
}

impl Pull {
    /// Tribute's data directory, holding `hub/` (downloads) and `models/hf/` (exports).
    /// Default `$TRIBUTE_HOME` (see `tribute_common::tribute_home`).
    pub fn home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.home = Some(dir.into());
        self
    }

    /// The hub's URL, e.g. a mirror. Default `$HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`].
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The Python that runs `tribute_export`. Default `$TRIBUTE_PYTHON`, else
    /// `$TRIBUTE_HOME/venv/bin/python` (where `make setup` installs it).
    pub fn python(mut self, python: impl Into<PathBuf>) -> Self {
        self.python = Some(python.into());
        self
    }

    /// Ask the hub which commit a branch or tag points at now, even when an export of it
    /// is cached (default false: a cached revision is used without any network).
    pub fn refresh(mut self, refresh: bool) -> Self {
        self.refresh = refresh;
        self
    }

    /// Show download progress bars and the exporter's output on the terminal (default
    /// false).
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Finds the model's export, or downloads, verifies and exports it (blocking: this
    /// can take minutes).
    pub fn run(self) -> Result<PulledModel> {
        let layout = export::Layout::new(self.home_dir(), &self.spec);
        if !self.refresh
            && let Some(found) = layout.cached(&self.spec)?
        {
            return Ok(found);
        }
        let cause = match self.download(&layout) {
            Ok(source) => {
                let leaf =
                    export::export_leaf(&source.commit, source.gguf.as_deref(), self.spec.export);
                return match layout.cached_at(&self.spec, &leaf)? {
                    Some(found) => Ok(found),
                    None => self.export(&layout, source),
                };
            }
            Err(Fetched::Failed(e)) => return Err(e),
            Err(Fetched::Unreachable(cause)) => cause,
        };
        if let Some(found) = layout.cached(&self.spec)? {
            tracing::warn!("{cause}; using the cached export of {}", self.spec);
            return Ok(found);
        }
        if let Some(source) = layout.local_snapshot(&self.spec)? {
            tracing::warn!(
                "{cause}; exporting {} from the files in {}",
                self.spec,
                source.dir.display()
            );
            return self.export(&layout, source);
        }
        Err(PullError::Offline {
            spec: self.spec.to_string(),
            cause,
            snapshot_dir: layout.snapshot_dir(self.spec.revision()),
            hub_dir: layout.hub_dir(),
            folder: layout.hub_folder(),
        }
        .into())
    }

    /// [`Pull::run`] on tokio's blocking pool.
    pub async fn run_async(self) -> Result<PulledModel> {
        tokio::task::spawn_blocking(move || self.run())
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    fn home_dir(&self) -> PathBuf {
        self.home
            .clone()
            .unwrap_or_else(tribute_common::tribute_home)
    }

    fn endpoint_url(&self) -> String {
        self.endpoint
            .clone()
            .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
            .trim_end_matches('/')
            .to_owned()
    }

    #[cfg(feature = "hub")]
    fn download(&self, layout: &export::Layout) -> std::result::Result<export::Source, Fetched> {
        fetch::download(self, layout, &self.endpoint_url())
    }

    #[cfg(not(feature = "hub"))]
    fn download(&self, _: &export::Layout) -> std::result::Result<export::Source, Fetched> {
        Err(Fetched::Unreachable(format!(
            "this build cannot download from {} (built without the `hub` feature)",
            self.endpoint_url()
        )))
    }
}

/// Why a download produced no source.
pub(crate) enum Fetched {
    /// The hub answered and the answer is final (no such revision, a bad file, …).
    #[cfg_attr(not(feature = "hub"), allow(dead_code))]
    Failed(Error),
    /// The hub is out of reach: a cached or copied-in model may still do.
    Unreachable(String),
}

/// The model directory a config's `model` names: a path as it is, or, for a hub spec
/// (`hf:ORG/NAME@REV`), its export — pulled when missing (with the `hub` feature).
pub(crate) fn resolve_model(path: &Path) -> Result<PathBuf> {
    match ModelSpec::from_model_path(path) {
        Some(spec) => Ok(spec?.pull().run()?.dir),
        None => Ok(path.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        let s: ModelSpec = "hf:HuggingFaceTB/SmolLM2-135M-Instruct@v1.0"
            .parse()
            .unwrap();
        assert_eq!(
            (s.repo(), s.revision(), s.file(), s.name()),
            (
                "HuggingFaceTB/SmolLM2-135M-Instruct",
                "v1.0",
                None,
                "SmolLM2-135M-Instruct"
            )
        );
        assert_eq!(s.to_string(), "HuggingFaceTB/SmolLM2-135M-Instruct@v1.0");
        let g: ModelSpec = "org/repo-GGUF/model.Q4_1.gguf@refs/pr/1".parse().unwrap();
        assert_eq!(g.file(), Some("model.Q4_1.gguf"));
        assert_eq!(g.revision(), "refs/pr/1");
        assert_eq!("org/name".parse::<ModelSpec>().unwrap().revision(), "main");
        assert_eq!(g.export_options(), ExportOptions::default());
        // Export options after the revision (or the name), printed in a fixed order.
        let q: ModelSpec = "hf:org/repo-GGUF/model.Q4_1.gguf@refs/pr/1:static, int4"
            .parse()
            .unwrap();
        assert_eq!(
            (q.file(), q.revision()),
            (Some("model.Q4_1.gguf"), "refs/pr/1")
        );
        let o = q.export_options();
        assert_eq!(
            (o.quant, o.ops, o.fp16),
            (Quant::Int4, tribute_inference::GraphOps::Static, false)
        );
        assert_eq!(
            q.to_string(),
            "org/repo-GGUF/model.Q4_1.gguf@refs/pr/1:int4,static"
        );
        let n: ModelSpec = "org/name:fp16,static".parse().unwrap();
        assert_eq!(
            (n.revision(), n.to_string().as_str()),
            ("main", "org/name:static,fp16")
        );
        let plain: ModelSpec = "org/name@main:portable,fp32".parse().unwrap();
        assert_eq!(
            plain.to_string(),
            "org/name@main",
            "the defaults print as nothing"
        );
        for bad in [
            "name",
            "org/",
            "/name",
            "org/na me",
            "org/name@",
            "org/name@../x",
            "org/name/../x",
            "org/name:",
            "org/name@main:q4_k_m",
            "org/name:int8,int4",
            "org/name:int4:static",
        ] {
            let e = bad.parse::<ModelSpec>().unwrap_err();
            assert!(
                matches!(e, Error::Pull(PullError::InvalidSpec { .. })),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn config_paths_that_are_specs() {
        assert!(ModelSpec::from_model_path(Path::new("models/x")).is_none());
        let s = ModelSpec::from_model_path(Path::new("hf:a/b@c"))
            .unwrap()
            .unwrap();
        assert_eq!(s.to_string(), "a/b@c");
    }

    #[test]
    fn offline_error_names_the_cache_and_what_to_copy() {
        let home = tempfile::tempdir().unwrap();
        let spec: ModelSpec = "org/name@main".parse().unwrap();
        // Port 9 on localhost (discard) is closed on any test machine.
        let e = spec
            .pull()
            .home(home.path())
            .endpoint("http://127.0.0.1:9")
            .run()
            .unwrap_err();
        let Error::Pull(PullError::Offline { snapshot_dir, .. }) = &e else {
            panic!("expected Offline, got {e}");
        };
        assert!(snapshot_dir.ends_with("hub/models--org--name/snapshots/main"));
        let text = e.to_string();
        assert!(text.contains(&snapshot_dir.display().to_string()), "{text}");
        assert!(text.contains("*.safetensors"), "{text}");
    }
}
