//! `provenance.json` on disk: writing, reading and verifying it against the adapter files.

use std::path::Path;

use alloy_primitives::{Address, B256, Signature, keccak256};
use serde::{Deserialize, Serialize};

use super::{AdapterHashes, ProvenanceError, ProvenanceManifest, Result, SignedProvenance};
use crate::receipt::recover_signer;

/// The manifest's file name inside an adapter directory.
pub const PROVENANCE_FILE: &str = "provenance.json";
/// The PEFT adapter config's file name.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// The PEFT adapter weights' file name.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// What [`SignedProvenance::verify`] established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedProvenance {
    /// The manifest's hash (what is registered with the adapter).
    pub manifest_hash: B256,
    /// The trainer whose signature checked out.
    pub trainer: Address,
}

/// The file: the manifest and its signature.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProvenanceFile {
    manifest: ProvenanceManifest,
    signature: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProvenanceError + '_ {
    move |source| ProvenanceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn file_hash(path: &Path) -> Result<B256> {
    std::fs::read(path).map(keccak256).map_err(io_err(path))
}

impl AdapterHashes {
    /// keccak-256 of `adapter_config.json` and `adapter_model.safetensors` in `dir`.
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::Io`] when a file cannot be read.
    pub fn of_dir(dir: &Path) -> Result<Self> {
        Ok(AdapterHashes {
            config: file_hash(&dir.join(ADAPTER_CONFIG_FILE))?,
            weights: file_hash(&dir.join(ADAPTER_WEIGHTS_FILE))?,
        })
    }
}

/// The verified manifest of the adapter at `path`, `None` when it has no `provenance.json`
/// (an adapter trained elsewhere, or an `.onnx_adapter` file).
///
/// # Errors
///
/// What [`SignedProvenance::read`] and [`SignedProvenance::verify`] refuse: a manifest
/// that is there must check out.
pub fn verified_manifest(path: &Path) -> Result<Option<ProvenanceManifest>> {
    if !path.join(PROVENANCE_FILE).is_file() {
        return Ok(None);
    }
    let signed = SignedProvenance::read(path)?;
    signed.verify(path)?;
    Ok(Some(signed.manifest))
}

impl SignedProvenance {
    /// The canonical JSON of the file: `{"manifest":…,"signature":"0x…"}`, no whitespace.
    pub fn to_json(&self) -> String {
        let file = ProvenanceFile {
            manifest: self.manifest.clone(),
            signature: alloy_primitives::hex::encode_prefixed(self.signature.as_bytes()),
        };
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// Parses the file's JSON (any whitespace; unknown fields are refused) and checks the
    /// manifest's schema and shares — not the signature: see [`verify`](Self::verify).
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::Json`], [`ProvenanceError::BadSignature`] for unusable signature
    /// bytes, and what [`ProvenanceManifest::validate`] refuses.
    pub fn from_json(text: &str) -> Result<Self> {
        // Read the schema first, so a future manifest is "unknown schema", not "malformed".
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ProvenanceError::Json(e.to_string()))?;
        let schema = value
            .get("manifest")
            .and_then(|m| m.get("schema"))
            .and_then(serde_json::Value::as_u64);
        if let Some(found) = schema.filter(|&s| s != u64::from(super::PROVENANCE_SCHEMA)) {
            return Err(ProvenanceError::UnknownSchema {
                found: u16::try_from(found).unwrap_or(u16::MAX),
            });
        }
        let file: ProvenanceFile =
            serde_json::from_value(value).map_err(|e| ProvenanceError::Json(e.to_string()))?;
        let bytes = alloy_primitives::hex::decode(file.signature.trim())
            .map_err(|e| ProvenanceError::BadSignature(format!("not hex: {e}")))?;
        let signature = Signature::try_from(bytes.as_slice())
            .map_err(|e| ProvenanceError::BadSignature(e.to_string()))?;
        file.manifest.validate()?;
        Ok(SignedProvenance {
            manifest: file.manifest,
            signature,
        })
    }

    /// Writes `provenance.json` into the adapter directory `dir`.
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::Io`].
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(PROVENANCE_FILE);
        std::fs::write(&path, self.to_json()).map_err(io_err(&path))
    }

    /// Reads `provenance.json` from the adapter directory `dir` (see
    /// [`from_json`](Self::from_json)).
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::Io`] and what [`from_json`](Self::from_json) refuses.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(PROVENANCE_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        Self::from_json(&text)
    }

    /// Checks the signature: it must recover to the manifest's trainer.
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::BadSignature`], and what [`ProvenanceManifest::validate`] refuses.
    pub fn verify_signature(&self) -> Result<VerifiedProvenance> {
        self.manifest.validate()?;
        let signer = recover_signer(&self.signature, self.manifest.digest())
            .map_err(|e| ProvenanceError::BadSignature(e.to_string()))?;
        if signer != self.manifest.trainer {
            return Err(ProvenanceError::BadSignature(format!(
                "signed by {signer}, not by the manifest's trainer {}",
                self.manifest.trainer
            )));
        }
        Ok(VerifiedProvenance {
            manifest_hash: self.manifest.hash(),
            trainer: signer,
        })
    }

    /// Checks the signature and that the adapter files in `dir` hash to what the manifest
    /// says.
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::AdapterMismatch`] for a changed file, [`ProvenanceError::Io`] for
    /// a missing one, and what [`verify_signature`](Self::verify_signature) refuses.
    pub fn verify(&self, dir: &Path) -> Result<VerifiedProvenance> {
        let verified = self.verify_signature()?;
        let on_disk = AdapterHashes::of_dir(dir)?;
        for (file, expected, actual) in [
            (
                ADAPTER_CONFIG_FILE,
                self.manifest.adapter.config,
                on_disk.config,
            ),
            (
                ADAPTER_WEIGHTS_FILE,
                self.manifest.adapter.weights,
                on_disk.weights,
            ),
        ] {
            if expected != actual {
                return Err(ProvenanceError::AdapterMismatch {
                    file: file.into(),
                    expected,
                    actual,
                });
            }
        }
        Ok(verified)
    }
}
