//! API keys and their scopes. The server keeps only each key's SHA-256 (a keys file of
//! `[[keys]]` entries); a request names its key in `Authorization: Bearer KEY`, which is
//! hashed and looked up, never stored, logged or echoed. A key's scope says which
//! datanets it may read (retrieval and asks are filtered to them) and whether it may
//! ingest, settle and see the journal's receipts. With no keys the server is open (every
//! request has every scope), which [`crate::serve`] allows on loopback addresses only.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::{Error, Result};

/// Paths served without a key: the console page (it asks for a key itself) and the
/// health check (for load balancers).
const OPEN_PATHS: [&str; 2] = ["/", "/healthz"];

/// One key of a keys file: its hash and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// A name for logs (never the key).
    pub name: String,
    /// The key's SHA-256, 64 hex digits ([`hash_key`]).
    pub sha256: String,
    /// The datanets the key may read; empty: all of them.
    #[serde(default)]
    pub datanets: Vec<String>,
    /// May add documents (`POST /v1/documents`).
    #[serde(default)]
    pub ingest: bool,
    /// May settle the journal's receipts on chain (`POST /v1/receipts/settle`).
    #[serde(default)]
    pub settle: bool,
    /// May list and read the journal's receipts (`GET /v1/receipts…`) and the metrics.
    #[serde(default)]
    pub receipts: bool,
}

/// A keys file: `[[keys]]` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// The keys.
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

/// What the caller of a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The key's name (`open` without keys).
    pub name: String,
    /// The datanets it may read; `None`: all.
    pub datanets: Option<Vec<String>>,
    /// May ingest.
    pub ingest: bool,
    /// May settle.
    pub settle: bool,
    /// May see the journal's receipts and the metrics.
    pub receipts: bool,
}

/// The keys a server accepts, by hash. Empty: an open server. Its `Debug` shows names only.
#[derive(Clone, Default, PartialEq)]
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], Arc<Scope>>,
}

/// A newly made key. Its `Debug` and `Display` hide it; [`ApiKey::reveal`] shows it once
/// to the person who made it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// The SHA-256 of `key` as 64 lowercase hex digits: what a keys file stores.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl ApiKey {
    /// A new random key: `tk-` and 64 hex digits (256 bits from the OS).
    pub fn generate() -> Result<ApiKey> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Keys(format!("the OS random source failed: {e}")))?;
        Ok(ApiKey(format!("tk-{}", hex(&bytes))))
    }

    /// The key itself, to hand to its user once.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Its SHA-256 ([`hash_key`]).
    pub fn sha256(&self) -> String {
        hash_key(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted API key>")
    }
}

impl KeysFile {
    /// Reads a keys file (TOML); a missing file is an empty one.
    pub fn read(path: &Path) -> Result<KeysFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeysFile::default()),
            Err(e) => return Err(Error::Keys(format!("{}: {e}", path.display()))),
        };
        toml::from_str(&text).map_err(|e| Error::Keys(format!("{}: {e}", path.display())))
    }

    /// Writes the file (TOML), replacing it.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text =
            toml::to_string_pretty(self).map_err(|e| Error::Keys(format!("keys as TOML: {e}")))?;
        let header = "# tribute serve API keys: the SHA-256 of each key, never the key itself.\n\
                      # Made by `tribute serve keys add`; see docs/SERVE.md.\n\n";
        std::fs::write(path, format!("{header}{text}"))
            .map_err(|e| Error::Keys(format!("{}: {e}", path.display())))
    }
}

impl ApiKeys {
    /// No keys: an open server.
    pub fn open() -> ApiKeys {
        ApiKeys::default()
    }

    /// The keys of a keys file, checked: each hash is 64 hex digits, no hash twice.
    pub fn from_entries(entries: &[KeyEntry]) -> Result<ApiKeys> {
        let mut by_hash = HashMap::with_capacity(entries.len());
        for e in entries {
            let hash = parse_hash(&e.sha256).ok_or_else(|| {
                Error::Keys(format!(
                    "key {:?}: sha256 must be 64 hex digits (`tribute serve keys hash`)",
                    e.name
                ))
            })?;
            let scope = Scope {
                name: e.name.clone(),
                datanets: (!e.datanets.is_empty()).then(|| e.datanets.clone()),
                ingest: e.ingest,
                settle: e.settle,
                receipts: e.receipts,
            };
            if by_hash.insert(hash, Arc::new(scope)).is_some() {
                return Err(Error::Keys(format!(
                    "key {:?}: the same key is listed twice",
                    e.name
                )));
            }
        }
        Ok(ApiKeys { by_hash })
    }

    /// The keys of a keys file on disk. A missing or empty file is an error here: asking
    /// for keys must never give an open server.
    pub fn from_file(path: &Path) -> Result<ApiKeys> {
        if !path.exists() {
            return Err(Error::Keys(format!(
                "{}: no such keys file (make one with `tribute serve keys add`)",
                path.display()
            )));
        }
        let keys = ApiKeys::from_entries(&KeysFile::read(path)?.keys)?;
        if keys.is_open() {
            return Err(Error::Keys(format!(
                "{} holds no keys (add one with `tribute serve keys add`)",
                path.display()
            )));
        }
        Ok(keys)
    }

    /// Whether no key is configured (an open server).
    pub fn is_open(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are none ([`ApiKeys::is_open`]).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The scope of the request with these headers: everything on an open server, else
    /// the scope of its bearer key, or 401.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Arc<Scope>> {
        if self.is_open() {
            return Ok(Arc::new(Scope::everything("open")));
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(Error::Unauthorized(
                "no API key: send it as `Authorization: Bearer KEY`",
            ))?;
        let key = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(Error::Unauthorized(
                "the Authorization header must be `Bearer KEY`",
            ))?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_hash
            .get(&digest)
            .cloned()
            .ok_or(Error::Unauthorized("the API key is not valid"))
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.by_hash.values().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        f.debug_struct("ApiKeys").field("names", &names).finish()
    }
}

impl Scope {
    /// Every permission and every datanet.
    pub fn everything(name: &str) -> Scope {
        Scope {
            name: name.to_owned(),
            datanets: None,
            ingest: true,
            settle: true,
            receipts: true,
        }
    }

    /// 403 unless `allowed`.
    pub fn require(&self, allowed: bool, what: &str) -> Result<()> {
        if allowed {
            Ok(())
        } else {
            Err(Error::Forbidden {
                message: format!("this API key may not {what}"),
                param: None,
            })
        }
    }

    /// The datanets a search may read: `requested` when the key may read all of them,
    /// else the requested ones if the key may read each (403 otherwise), or, when none are
    /// requested, the key's own (narrowed to `configured`, the server's default, when that
    /// is set). Never "every datanet" for a key that is limited to some.
    pub fn datanets(
        &self,
        requested: Option<Vec<String>>,
        configured: &[String],
    ) -> Result<Option<Vec<String>>> {
        let Some(allowed) = &self.datanets else {
            return Ok(requested);
        };
        let wanted = match requested {
            Some(r) if !r.is_empty() => {
                if let Some(bad) = r.iter().find(|d| !allowed.contains(d)) {
                    return Err(Error::Forbidden {
                        message: format!("this API key may not read the datanet {bad:?}"),
                        param: Some("datanets"),
                    });
                }
                r
            }
            _ if configured.is_empty() => allowed.clone(),
            _ => allowed
                .iter()
                .filter(|d| configured.contains(d))
                .cloned()
                .collect(),
        };
        if wanted.is_empty() {
            return Err(Error::Forbidden {
                message: "this API key may read none of the datanets the server searches".into(),
                param: Some("datanets"),
            });
        }
        Ok(Some(wanted))
    }
}

/// The middleware: the request's [`Scope`] goes into its extensions, or it is refused
/// with 401 before its body is read.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    if matched.is_some_and(|m| OPEN_PATHS.contains(&m.as_str())) {
        return next.run(request).await;
    }
    match state.options.keys.caller(request.headers()) {
        Ok(scope) => {
            tracing::debug!(key = %scope.name, "authenticated");
            request.extensions_mut().insert(scope);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn entry(name: &str, key: &str, datanets: &[&str]) -> KeyEntry {
        KeyEntry {
            name: name.into(),
            sha256: hash_key(key),
            datanets: datanets.iter().map(|d| (*d).to_owned()).collect(),
            ingest: false,
            settle: false,
            receipts: false,
        }
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).expect("header"),
        );
        h
    }

    #[test]
    fn keys_are_found_by_hash_and_never_shown() {
        let key = ApiKey::generate().expect("key");
        assert!(key.reveal().starts_with("tk-") && key.reveal().len() == 67);
        assert_ne!(key, ApiKey::generate().expect("key"));
        // SHA-256("abc"), the FIPS 180-2 example.
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let keys = ApiKeys::from_entries(&[entry("app", key.reveal(), &["docs"])]).expect("keys");
        let scope = keys.caller(&bearer(key.reveal())).expect("known key");
        assert_eq!(scope.name, "app");
        assert_eq!(scope.datanets, Some(vec!["docs".to_owned()]));
        for shown in [
            format!("{key:?}"),
            format!("{key}"),
            format!("{keys:?}"),
            format!(
                "{:?}",
                keys.caller(&bearer("tk-wrong")).expect_err("unknown")
            ),
            format!("{:?}", keys.caller(&bearer(key.reveal()))),
        ] {
            assert!(!shown.contains(key.reveal()), "{shown}");
        }
        assert_eq!(
            keys.caller(&HeaderMap::new()).expect_err("no key").status(),
            401
        );
        assert!(ApiKeys::open().caller(&HeaderMap::new()).is_ok());
        let mut bad = entry("x", "k", &[]);
        bad.sha256 = "00".into();
        assert!(ApiKeys::from_entries(&[bad]).is_err());
        assert!(ApiKeys::from_entries(&[entry("a", "k", &[]), entry("b", "k", &[])]).is_err());
    }

    #[test]
    fn a_limited_key_never_reads_every_datanet() {
        let scope = Scope {
            datanets: Some(vec!["a".into(), "b".into()]),
            ..Scope::everything("k")
        };
        let some = |d: &[&str]| Some(d.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(scope.datanets(None, &[]).expect("ok"), some(&["a", "b"]));
        assert_eq!(
            scope.datanets(some(&[]), &[]).expect("ok"),
            some(&["a", "b"])
        );
        assert_eq!(scope.datanets(some(&["b"]), &[]).expect("ok"), some(&["b"]));
        assert_eq!(
            scope.datanets(some(&["c"]), &[]).expect_err("c").status(),
            403
        );
        assert_eq!(
            scope.datanets(None, &["b".into(), "c".into()]).expect("ok"),
            some(&["b"])
        );
        assert!(scope.datanets(None, &["c".into()]).is_err());
        let all = Scope::everything("open");
        assert_eq!(all.datanets(None, &[]).expect("ok"), None);
        assert_eq!(all.datanets(some(&["c"]), &[]).expect("ok"), some(&["c"]));
    }
}
