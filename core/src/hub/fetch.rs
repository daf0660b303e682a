//! Downloading from the hub with the `hf-hub` crate (blocking, over ureq + rustls).
//!
//! The revision is resolved to a commit first and every file is then fetched at that
//! commit, so a branch that moves mid-pull cannot mix two versions. hf-hub writes each
//! file as `blobs/ETAG.part` and resumes it with a `Range` request on the next pull; it
//! does not check what it got, so each file is hashed here against what the hub
//! publishes (`lfs.sha256`, else the git blob id; the ETag where the listing has neither)
//! and deleted when it does not match.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;

use super::export::{Layout, Source};
use super::files::{self, Expected};
use super::{Fetched, Pull, PullError};

/// `GET /api/models/ORG/NAME/revision/REV?blobs=true`.
#[derive(Deserialize)]
struct RepoDetail {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: String,
    size: Option<u64>,
}

impl Sibling {
    fn expected(&self) -> (Expected, Option<u64>) {
        match (&self.lfs, &self.blob_id) {
            (Some(lfs), _) => (
                Expected::Sha256(lfs.sha256.to_ascii_lowercase()),
                lfs.size.or(self.size),
            ),
            (None, Some(id)) => (Expected::GitSha1(id.to_ascii_lowercase()), self.size),
            (None, None) => (Expected::Nothing, self.size),
        }
    }
}

/// Downloads and verifies `pull`'s model into the hub cache.
pub(crate) fn download(pull: &Pull, layout: &Layout, endpoint: &str) -> Result<Source, Fetched> {
    let spec = &pull.spec;
    let cache = Cache::new(layout.hub_dir());
    let token = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| cache.token());
    let api = ApiBuilder::from_cache(cache)
        .with_endpoint(endpoint.to_owned())
        .with_token(token)
        .with_progress(pull.progress)
        .build()
        .map_err(|e| api_failure(e, "the hub client"))?;
    let model = |revision: &str| {
        api.repo(Repo::with_revision(
            spec.repo().to_owned(),
            RepoType::Model,
            revision.to_owned(),
        ))
    };
    let detail: RepoDetail = match model(spec.revision())
        .info_request()
        .query("blobs", "true")
        .call()
    {
        Ok(mut response) => response.body_mut().read_json().map_err(|e| {
            Fetched::Failed(
                PullError::Download {
                    file: "the repository listing".into(),
                    message: e.to_string(),
                }
                .into(),
            )
        })?,
        Err(ureq::Error::StatusCode(401 | 403 | 404)) => {
            return Err(Fetched::Failed(not_found(pull, &api, endpoint).into()));
        }
        Err(e) => return Err(request_failure(e, "the repository listing")),
    };
    let names: Vec<String> = detail
        .siblings
        .iter()
        .map(|s| s.rfilename.clone())
        .collect();
    let selection = files::select(spec, &names).map_err(|e| Fetched::Failed(e.into()))?;
    let at_commit = model(&detail.sha);
    let mut checked = Vec::new();
    let mut dir = layout.snapshot_dir(&detail.sha);
    for name in selection.files() {
        // The hub answered the listing: a failure now is this download's, not the hub's
        // absence (an offline export from half the files must not follow).
        let path =
            fetch_file(&api, &at_commit, name, &layout.blobs_dir()).map_err(|e| match e {
                Fetched::Unreachable(message) => Fetched::Failed(
                    PullError::Download {
                        file: name.to_owned(),
                        message,
                    }
                    .into(),
                ),
                failed => failed,
            })?;
        let sibling = detail.siblings.iter().find(|s| s.rfilename == name);
        let (mut expected, size) = sibling.map_or((Expected::Nothing, None), Sibling::expected);
        if expected == Expected::Nothing {
            expected = blob_etag(&path);
        }
        match files::check(&path, name, &expected, size) {
            Ok(file) => checked.push(file),
            Err(e) => {
                discard(&path);
                return Err(Fetched::Failed(e.into()));
            }
        }
        if let Some(parent) = snapshot_root(&path, name) {
            dir = parent;
        }
    }
    Ok(Source {
        commit: detail.sha,
        dir,
        gguf: selection.gguf().map(str::to_owned),
        files: checked,
    })
}

/// One file: from the cache when a verified copy is there, else downloaded (resuming a
/// `.part` left by an interrupted pull; one that cannot be resumed is discarded).
fn fetch_file(api: &Api, repo: &ApiRepo, name: &str, blobs: &Path) -> Result<PathBuf, Fetched> {
    match repo.get(name) {
        Ok(path) => Ok(path),
        Err(ApiError::InvalidResume) => {
            if let Ok(meta) = api.metadata(&repo.url(name)) {
                let part = blobs.join(format!("{}.part", meta.etag()));
                tracing::warn!("discarding an unusable partial download {}", part.display());
                let _ = std::fs::remove_file(part);
            }
            repo.download(name).map_err(|e| api_failure(e, name))
        }
        Err(e) => Err(api_failure(e, name)),
    }
}

/// The ETag hf-hub named the blob after (the file a snapshot entry links to).
fn blob_etag(path: &Path) -> Expected {
    std::fs::canonicalize(path)
        .ok()
        .and_then(|target| target.file_name()?.to_str().map(Expected::from_etag))
        .unwrap_or(Expected::Nothing)
}

/// Deletes a file that failed its check: the blob and the snapshot's link to it.
fn discard(path: &Path) {
    if let Ok(blob) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
}

/// The snapshot directory holding `path`, the local copy of the repository file `name`.
fn snapshot_root(path: &Path, name: &str) -> Option<PathBuf> {
    let mut dir = path.parent()?;
    for _ in name.split('/').skip(1) {
        dir = dir.parent()?;
    }
    Some(dir.to_owned())
}

/// A 404 (or 401) on the listing: no such revision, or no such repository at all.
fn not_found(pull: &Pull, api: &Api, endpoint: &str) -> PullError {
    let spec = &pull.spec;
    let repo_exists = spec.revision() != "main"
        && api
            .model(spec.repo().to_owned())
            .info_request()
            .call()
            .is_ok();
    if repo_exists {
        PullError::RevisionNotFound {
            repo: spec.repo().to_owned(),
            revision: spec.revision().to_owned(),
            endpoint: endpoint.to_owned(),
        }
    } else {
        PullError::RepoNotFound {
            repo: spec.repo().to_owned(),
            endpoint: endpoint.to_owned(),
        }
    }
}

fn api_failure(e: ApiError, file: &str) -> Fetched {
    match e {
        ApiError::RequestError(e) => request_failure(*e, file),
        ApiError::TooManyRetries(e) => api_failure(*e, file),
        e => Fetched::Failed(
            PullError::Download {
                file: file.to_owned(),
                message: e.to_string(),
            }
            .into(),
        ),
    }
}

/// A failed request: the hub out of reach (no connection, a server error) or a final
/// answer about this file.
fn request_failure(e: ureq::Error, file: &str) -> Fetched {
    match e {
        ureq::Error::StatusCode(code) if (400..500).contains(&code) => Fetched::Failed(
            PullError::Download {
                file: file.to_owned(),
                message: format!("the hub answered HTTP {code}"),
            }
            .into(),
        ),
        ureq::Error::StatusCode(code) => {
            Fetched::Unreachable(format!("the hub answered HTTP {code}"))
        }
        e => Fetched::Unreachable(format!("cannot reach the hub: {e}")),
    }
}
