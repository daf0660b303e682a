//! The cache (downloads under `hub/`, exports under `models/hf/`) and the export step.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::files::{self, Expected, SourceFile};
use super::{ExportOptions, ModelSpec, Pull, PullError, PulledModel};
use crate::error::Result;

/// The file in an export directory that records what it was made from.
const RECORD: &str = "pull.json";

/// Where one repository's downloads and exports live under Tribute's home.
pub(crate) struct Layout {
    home: PathBuf,
    repo: String,
}

/// Checkpoint files on disk, ready to export.
pub(crate) struct Source {
    /// The commit (or the snapshot's name) they come from.
    pub(crate) commit: String,
    /// The directory holding them (a hub-cache snapshot).
    pub(crate) dir: PathBuf,
    /// The GGUF file among them, if the model is one.
    pub(crate) gguf: Option<String>,
    /// Each file, verified.
    pub(crate) files: Vec<SourceFile>,
}

impl Layout {
    pub(crate) fn new(home: PathBuf, spec: &ModelSpec) -> Layout {
        Layout {
            home,
            repo: spec.repo().to_owned(),
        }
    }

    /// The download cache, in huggingface_hub's layout.
    pub(crate) fn hub_dir(&self) -> PathBuf {
        self.home.join("hub")
    }

    /// `models--ORG--NAME`, the repository's folder in the download cache.
    pub(crate) fn hub_folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }

    /// Where the download cache keeps this repository's files, named by ETag.
    #[cfg(feature = "hub")]
    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.hub_dir().join(self.hub_folder()).join("blobs")
    }

    /// The download cache's folder of one commit (or of a revision copied in by hand).
    pub(crate) fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.hub_dir()
            .join(self.hub_folder())
            .join("snapshots")
            .join(commit)
    }

    /// Where this repository's exports live.
    fn models_dir(&self) -> PathBuf {
        self.home
            .join("models")
            .join("hf")
            .join(self.repo.replace('/', "--"))
    }

    /// The file naming the export a revision (and GGUF file) resolved to last time.
    fn ref_path(&self, spec: &ModelSpec) -> PathBuf {
        let mut name = spec.revision().replace('/', "%2F");
        if let Some(file) = spec.file() {
            name = format!("{name}--{}", file.replace('/', "%2F"));
        }
        name.push_str(&spec.export_options().suffix());
        self.models_dir().join("refs").join(name)
    }

    /// The export directory `spec` is known to resolve to, without asking the hub.
    fn known_leaf(&self, spec: &ModelSpec) -> Option<String> {
        if let Ok(text) = std::fs::read_to_string(self.ref_path(spec)) {
            return Some(text.trim().to_owned()).filter(|l| !l.is_empty() && !l.contains('/'));
        }
        let revision = spec.revision();
        is_commit(revision).then(|| export_leaf(revision, spec.file(), spec.export_options()))
    }

    /// The export of `spec`, if one is complete.
    pub(crate) fn cached(&self, spec: &ModelSpec) -> Result<Option<PulledModel>> {
        match self.known_leaf(spec) {
            Some(leaf) => self.cached_at(spec, &leaf),
            None => Ok(None),
        }
    }

    /// The export in directory `leaf`, if it is complete; `spec`'s revision then points
    /// at it.
    pub(crate) fn cached_at(&self, spec: &ModelSpec, leaf: &str) -> Result<Option<PulledModel>> {
        let dir = self.models_dir().join(leaf);
        if !dir.join("tribute.json").is_file() {
            return Ok(None);
        }
        let recorded = std::fs::read_to_string(dir.join(RECORD))
            .ok()
            .and_then(|t| serde_json::from_str::<PulledModel>(&t).ok());
        let mut model = recorded.unwrap_or_else(|| PulledModel {
            repo: spec.repo().to_owned(),
            revision: spec.revision().to_owned(),
            commit: leaf.split("--").next().unwrap_or(leaf).to_owned(),
            file: spec.file().map(str::to_owned),
            dir: dir.clone(),
            files: Vec::new(),
            cached: true,
        });
        model.revision = spec.revision().to_owned();
        model.dir = dir;
        model.cached = true;
        // Best effort: a read-only cache still serves what it holds.
        let _ = write_ref(&self.ref_path(spec), leaf);
        Ok(Some(model))
    }

    /// Checkpoint files already in the download cache for `spec`'s revision — left by an
    /// earlier download, or copied in by hand — checked as far as possible offline: a
    /// file that links to a blob named by its ETag (huggingface_hub's layout) is
    /// verified against it.
    pub(crate) fn local_snapshot(&self, spec: &ModelSpec) -> Result<Option<Source>> {
        let revision = spec.revision();
        let hub_ref = self
            .hub_dir()
            .join(self.hub_folder())
            .join("refs")
            .join(revision);
        let mut candidates = Vec::new();
        if let Ok(commit) = std::fs::read_to_string(hub_ref) {
            candidates.push(commit.trim().to_owned());
        }
        candidates.push(revision.to_owned());
        for commit in candidates {
            let dir = self.snapshot_dir(&commit);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect();
            names.sort();
            let selection = files::select(spec, &names)?;
            let absent = files::missing_shards(&dir);
            if !absent.is_empty() {
                return Err(PullError::NoModelFiles {
                    spec: spec.to_string(),
                    reason: format!(
                        "{} lacks shards its model.safetensors.index.json lists: {}",
                        dir.display(),
                        absent.join(", ")
                    ),
                    found: names,
                }
                .into());
            }
            let mut checked = Vec::new();
            for name in selection.files() {
                let path = dir.join(name);
                let expected = std::fs::canonicalize(&path)
                    .ok()
                    .filter(|target| target != &path)
                    .and_then(|target| target.file_name()?.to_str().map(Expected::from_etag))
                    .unwrap_or(Expected::Nothing);
                checked.push(files::check(&path, name, &expected, None)?);
            }
            return Ok(Some(Source {
                commit,
                dir,
                gguf: selection.gguf().map(str::to_owned),
                files: checked,
            }));
        }
        Ok(None)
    }
}

impl Pull {
    /// Exports `source` into a temporary directory beside the final one and renames it
    /// when complete, so an interrupted export never looks like a model.
    pub(crate) fn export(&self, layout: &Layout, source: Source) -> Result<PulledModel> {
        let spec = &self.spec;
        let models_dir = layout.models_dir();
        let leaf = export_leaf(
            &source.commit,
            source.gguf.as_deref(),
            spec.export_options(),
        );
        let final_dir = models_dir.join(&leaf);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| PullError::Io { path, source }
        };
        std::fs::create_dir_all(&models_dir).map_err(io(&models_dir))?;
        discard_stale_exports(&models_dir, &leaf);
        let staging = models_dir.join(format!(".{leaf}.partial-{}", std::process::id()));
        remove_export(&staging);

        let python = self.python_path();
        let source_path = match &source.gguf {
            Some(file) => source.dir.join(file),
            None => source.dir.clone(),
        };
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "tribute_export", "--source"])
            .arg(&source_path)
            .arg("--out")
            .arg(&staging)
            .args(["--dtype", "fp32"])
            .args(spec.export_options().args());
        // A checkpoint directory's own name is the commit hash: name the model after the
        // repository unless its config names it (adapters' base_model is checked against it).
        if source.gguf.is_none() && !config_names_model(&source.dir) {
            cmd.args(["--name", spec.name()]);
        }
        if self.progress {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        tracing::info!("exporting {spec} from {}", source_path.display());
        let output = cmd.output().map_err(|source| PullError::ExporterMissing {
            python: python.clone(),
            source,
        })?;
        let written = staging.join("tribute.json").is_file();
        if !output.status.success() || !written {
            remove_export(&staging);
            let printed = if self.progress {
                "(printed above)".to_owned()
            } else {
                tail(&output.stdout, &output.stderr)
            };
            let status = if output.status.success() {
                "it wrote no tribute.json".to_owned()
            } else {
                output.status.to_string()
            };
            return Err(PullError::Export {
                spec: spec.to_string(),
                status,
                output: printed,
            }
            .into());
        }
        let model = PulledModel {
            repo: spec.repo().to_owned(),
            revision: spec.revision().to_owned(),
            commit: source.commit.clone(),
            file: source.gguf.clone(),
            dir: final_dir.clone(),
            files: source.files,
            cached: false,
        };
        let record = serde_json::to_string_pretty(&model).unwrap_or_default();
        let record_path = staging.join(RECORD);
        std::fs::write(&record_path, record).map_err(io(&record_path))?;
        if let Err(e) = std::fs::rename(&staging, &final_dir) {
            // Another pull finished the same export first: keep theirs.
            remove_export(&staging);
            if !final_dir.join("tribute.json").is_file() {
                return Err(io(&final_dir)(e).into());
            }
        }
        write_ref(&layout.ref_path(spec), &leaf)?;
        Ok(model)
    }

    fn python_path(&self) -> PathBuf {
        if let Some(p) = &self.python {
            return p.clone();
        }
        if let Some(p) = std::env::var_os("TRIBUTE_PYTHON").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let venv = self.home_dir().join("venv");
        if cfg!(windows) {
            venv.join("Scripts").join("python.exe")
        } else {
            venv.join("bin").join("python")
        }
    }
}

/// A full 40-hex commit hash (a revision that can never move).
pub(crate) fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

/// The export directory's name: the commit, the GGUF file's stem if one was picked, and the
/// export options' suffix (`COMMIT--model.Q4_1--int4`; nothing for the defaults).
pub(crate) fn export_leaf(commit: &str, gguf: Option<&str>, options: ExportOptions) -> String {
    let suffix = options.suffix();
    match gguf {
        None => format!("{commit}{suffix}"),
        Some(file) => {
            let stem = file.rsplit('/').next().unwrap_or(file);
            let stem = stem.strip_suffix(".gguf").unwrap_or(stem);
            format!("{commit}--{stem}{suffix}")
        }
    }
}

fn config_names_model(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("_name_or_path")?.as_str().map(|s| !s.is_empty()))
        .unwrap_or(false)
}

/// Removes a staging directory and the exporter's own `DIR.tmp` beside it.
fn remove_export(staging: &Path) {
    let _ = std::fs::remove_dir_all(staging);
    let mut tmp = staging.as_os_str().to_owned();
    tmp.push(".tmp");
    let _ = std::fs::remove_dir_all(PathBuf::from(tmp));
}

/// Discards what interrupted exports of `leaf` left (their process is gone).
fn discard_stale_exports(models_dir: &Path, leaf: &str) {
    let prefix = format!(".{leaf}.partial-");
    let Ok(entries) = std::fs::read_dir(models_dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.trim_end_matches(".tmp");
        if !process_alive(pid) {
            tracing::info!(
                "discarding an interrupted export: {}",
                entry.path().display()
            );
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether the process with id `pid` still runs (where that can be told; elsewhere its
/// leftovers are discarded).
fn process_alive(pid: &str) -> bool {
    if pid == std::process::id().to_string() {
        return false;
    }
    cfg!(target_os = "linux") && Path::new("/proc").join(pid).exists()
}

fn write_ref(path: &Path, commit: &str) -> Result<()> {
    let io = |source| PullError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, commit).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// The last lines the exporter printed.
fn tail(stdout: &[u8], stderr: &[u8]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
