//! LoRA adapters: PEFT directories (`adapter_config.json` + `adapter_model.safetensors`)
//! converted to the model's LoRA inputs, ONNX Runtime `.onnx_adapter` files, and exact
//! weighted merges of several adapters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::value::DynValue;
use serde::{Deserialize, Serialize};

use crate::config::{FloatDtype, LoraModule};
use crate::error::{AdapterError, Result};
use crate::floats::{float_tensor, read_floats};

/// Identifies an adapter in a registry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AdapterId(String);

impl AdapterId {
    /// An adapter id; any non-empty string.
    pub fn new(id: impl Into<String>) -> Result<Self, AdapterError> {
        let id = id.into();
        if id.trim().is_empty() {
            return Err(AdapterError::Request("adapter id must not be empty".into()));
        }
        Ok(AdapterId(id))
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AdapterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an adapter is loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterSource {
    /// A PEFT directory (`adapter_config.json` + `adapter_model.safetensors`).
    Peft(PathBuf),
    /// An ONNX Runtime adapter file (`.onnx_adapter`), whose parameter names are the
    /// model's LoRA inputs.
    OnnxAdapter(PathBuf),
}

impl AdapterSource {
    /// Detects the kind of adapter at `path`.
    pub fn detect(path: impl AsRef<Path>) -> Result<Self, AdapterError> {
        let path = path.as_ref();
        if path.is_dir() {
            if path.join("adapter_config.json").is_file() {
                return Ok(AdapterSource::Peft(path.to_owned()));
            }
            return Err(files(path, "directory has no adapter_config.json (PEFT)"));
        }
        if path.is_file() {
            return Ok(AdapterSource::OnnxAdapter(path.to_owned()));
        }
        Err(files(path, "not found"))
    }

    /// The path.
    pub fn path(&self) -> &Path {
        match self {
            AdapterSource::Peft(p) | AdapterSource::OnnxAdapter(p) => p,
        }
    }
}

fn files(path: &Path, reason: impl Into<String>) -> AdapterError {
    AdapterError::Files {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Bounds on what an adapter from outside may make the process read and hold, checked
/// before its weights are read (a stranger's adapter can claim any rank and be any size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterLimits {
    /// Highest LoRA rank of any module: PEFT's `r`, each `rank_pattern` value and the
    /// weights' shapes. Default [`DEFAULT_MAX_ADAPTER_RANK`].
    pub max_rank: usize,
    /// Most bytes of an adapter's files (`adapter_config.json` plus
    /// `adapter_model.safetensors`, or the `.onnx_adapter` file), checked before they are
    /// read. Default [`DEFAULT_MAX_ADAPTER_BYTES`].
    pub max_bytes: u64,
}

/// Default [`AdapterLimits::max_rank`] (published LoRAs use 4–128).
pub const DEFAULT_MAX_ADAPTER_RANK: usize = 256;

/// Default [`AdapterLimits::max_bytes`]: 1 GiB (a rank-64 adapter on every linear layer
/// of a 7B model is about 320 MB in fp16).
pub const DEFAULT_MAX_ADAPTER_BYTES: u64 = 1 << 30;

impl Default for AdapterLimits {
    fn default() -> Self {
        AdapterLimits {
            max_rank: DEFAULT_MAX_ADAPTER_RANK,
            max_bytes: DEFAULT_MAX_ADAPTER_BYTES,
        }
    }
}

impl AdapterLimits {
    fn rank(&self, path: &Path, rank: usize) -> Result<(), AdapterError> {
        if rank > self.max_rank {
            return Err(AdapterError::OverLimit {
                path: path.to_owned(),
                what: "rank",
                value: rank as u64,
                limit: self.max_rank as u64,
                setting: "max_rank",
            });
        }
        Ok(())
    }

    /// Refuses files whose sizes add up to more than `max_bytes`, before reading them.
    pub(crate) fn bytes(&self, path: &Path, paths: &[&Path]) -> Result<(), AdapterError> {
        let mut total = 0u64;
        for p in paths {
            let len = std::fs::metadata(p)
                .map_err(|e| files(p, e.to_string()))?
                .len();
            total = total.saturating_add(len);
        }
        if total > self.max_bytes {
            return Err(AdapterError::OverLimit {
                path: path.to_owned(),
                what: "bytes",
                value: total,
                limit: self.max_bytes,
                setting: "max_bytes",
            });
        }
        Ok(())
    }
}

/// The LoRA matrices of one module, in the model's input layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// Rank of this module's delta.
    pub rank: usize,
    /// Aᵀ, row-major `[in_features, rank]`.
    pub a_t: Vec<f32>,
    /// (scale·B)ᵀ, row-major `[rank, out_features]`.
    pub b_t: Vec<f32>,
}

/// An adapter's matrices per module (module path → pair).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoraWeights {
    /// Module path → matrices.
    pub modules: BTreeMap<String, LoraPair>,
}

impl LoraWeights {
    /// Bytes held by the matrices.
    pub fn bytes(&self) -> usize {
        self.modules
            .values()
            .map(|p| 4 * (p.a_t.len() + p.b_t.len()))
            .sum()
    }
}

#[derive(Debug, Deserialize)]
struct PeftConfig {
    #[serde(default)]
    peft_type: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    target_modules: Option<serde_json::Value>,
    #[serde(default)]
    rank_pattern: BTreeMap<String, usize>,
    #[serde(default)]
    alpha_pattern: BTreeMap<String, f64>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
    #[serde(default)]
    fan_in_fan_out: bool,
}

/// PEFT's rule: a pattern key applies to a module whose name is, or ends with `.`, the key (a regex).
fn pattern_value<'a, T>(patterns: &'a BTreeMap<String, T>, module: &str) -> Option<&'a T> {
    patterns.iter().find_map(|(key, v)| {
        regex::Regex::new(&format!(r"^(.*\.)?(?:{key})$"))
            .ok()
            .filter(|re| re.is_match(module))
            .map(|_| v)
    })
}

fn targeted(targets: &Option<serde_json::Value>, module: &str) -> bool {
    match targets {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::String(s)) if s == "all-linear" => true,
        // A string is a regex matched against the whole module name.
        Some(serde_json::Value::String(re)) => regex::Regex::new(&format!("^(?:{re})$"))
            .map(|r| r.is_match(module))
            .unwrap_or(false),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|t| t.as_str())
            .any(|t| module == t || module.ends_with(&format!(".{t}"))),
        Some(_) => false,
    }
}

/// Normalises a model name for comparison: last path component, lowercase, letters and digits.
pub(crate) fn normalize_model_name(name: &str) -> String {
    name.rsplit('/')
        .next()
        .unwrap_or(name)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Reads a PEFT adapter and converts it to `modules`' LoRA inputs (Aᵀ, (alpha/r)·Bᵀ).
/// Refuses, with the reason, adapters whose base model, targets or shapes do not fit,
/// and adapters over the default [`AdapterLimits`].
pub fn load_peft(
    id: &AdapterId,
    dir: &Path,
    model_name: Option<&str>,
    modules: &[LoraModule],
) -> Result<LoraWeights, AdapterError> {
    load_peft_limited(id, dir, model_name, modules, &AdapterLimits::default())
}

/// [`load_peft`] with these limits: the files' sizes are checked before they are read,
/// the configured ranks before the weights are read, and each module's rank as read.
pub fn load_peft_limited(
    id: &AdapterId,
    dir: &Path,
    model_name: Option<&str>,
    modules: &[LoraModule],
    limits: &AdapterLimits,
) -> Result<LoraWeights, AdapterError> {
    let mismatch = |reason: String| AdapterError::Mismatch {
        id: id.to_string(),
        model: model_name.unwrap_or("(unnamed)").to_owned(),
        reason,
    };
    let cfg_path = dir.join("adapter_config.json");
    let st_path = dir.join("adapter_model.safetensors");
    limits.bytes(dir, &[&cfg_path, &st_path])?;
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| files(&cfg_path, e.to_string()))?;
    let cfg: PeftConfig =
        serde_json::from_str(&text).map_err(|e| files(&cfg_path, e.to_string()))?;
    if let Some(t) = cfg.peft_type.as_deref()
        && t != "LORA"
    {
        return Err(files(&cfg_path, format!("peft_type {t} is not LORA")));
    }
    if cfg.use_dora {
        return Err(files(&cfg_path, "DoRA adapters are not supported"));
    }
    if cfg.fan_in_fan_out {
        return Err(files(
            &cfg_path,
            "fan_in_fan_out adapters are not supported",
        ));
    }
    if let (Some(base), Some(model)) = (cfg.base_model_name_or_path.as_deref(), model_name)
        && !base.is_empty()
        && normalize_model_name(base) != normalize_model_name(model)
    {
        return Err(mismatch(format!(
            "trained for base model {base:?}, this model is {model:?}"
        )));
    }
    limits.rank(&cfg_path, cfg.r)?;
    for &r in cfg.rank_pattern.values() {
        limits.rank(&cfg_path, r)?;
    }
    let bytes = std::fs::read(&st_path).map_err(|e| files(&st_path, e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| files(&st_path, format!("not a safetensors file: {e}")))?;

    let by_module: BTreeMap<&str, &LoraModule> =
        modules.iter().map(|m| (m.module.as_str(), m)).collect();
    // module path → (A [r, in], B [out, r]) as read.
    let mut raw: BTreeMap<String, (Option<Mat>, Option<Mat>)> = BTreeMap::new();
    for (name, view) in st.tensors() {
        let stripped = name.strip_prefix("base_model.model.").unwrap_or(&name);
        let (module, which) = if let Some(m) = stripped
            .strip_suffix(".lora_A.weight")
            .or_else(|| stripped.strip_suffix(".lora_A.default.weight"))
        {
            (m, 0)
        } else if let Some(m) = stripped
            .strip_suffix(".lora_B.weight")
            .or_else(|| stripped.strip_suffix(".lora_B.default.weight"))
        {
            (m, 1)
        } else {
            return Err(files(
                &st_path,
                format!("tensor {name:?} is not a LoRA A/B matrix (only plain LoRA is supported)"),
            ));
        };
        let mat = Mat::from_view(&view).map_err(|r| files(&st_path, format!("{name}: {r}")))?;
        let e = raw.entry(module.to_owned()).or_default();
        if which == 0 {
            e.0 = Some(mat)
        } else {
            e.1 = Some(mat)
        }
    }
    if raw.is_empty() {
        return Err(files(&st_path, "no LoRA tensors"));
    }
    let mut out = LoraWeights::default();
    for (module, (a, b)) in raw {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(files(
                &st_path,
                format!("{module}: lora_A or lora_B is missing"),
            ));
        };
        if !targeted(&cfg.target_modules, &module) {
            return Err(files(
                &st_path,
                format!("{module} has weights but is not in target_modules"),
            ));
        }
        let Some(target) = by_module.get(module.as_str()) else {
            let kinds: Vec<&str> = modules
                .iter()
                .filter_map(|m| m.module.rsplit('.').next())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            return Err(mismatch(format!(
                "module {module} has no LoRA input in this model (its LoRA targets: {}); re-export the model with --lora-targets",
                if kinds.is_empty() {
                    "none".to_owned()
                } else {
                    kinds.join(",")
                }
            )));
        };
        let r = a.rows;
        limits.rank(&st_path, r)?;
        if b.cols != r {
            return Err(files(
                &st_path,
                format!("{module}: lora_A has rank {r} but lora_B has {}", b.cols),
            ));
        }
        if a.cols != target.in_features || b.rows != target.out_features {
            return Err(mismatch(format!(
                "{module}: adapter maps {} → {}, the model's module maps {} → {}",
                a.cols, b.rows, target.in_features, target.out_features
            )));
        }
        let want_r = pattern_value(&cfg.rank_pattern, &module)
            .copied()
            .unwrap_or(cfg.r);
        if want_r != r {
            return Err(files(
                &st_path,
                format!("{module}: rank {r} in the weights, {want_r} in adapter_config.json"),
            ));
        }
        let alpha = pattern_value(&cfg.alpha_pattern, &module)
            .copied()
            .unwrap_or(cfg.lora_alpha);
        let scale = if cfg.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        } as f32;
        let b_t: Vec<f32> = b.transposed().into_iter().map(|x| x * scale).collect();
        // A huge lora_alpha (or rank 0) would feed the model infinities: refuse it here.
        if !scale.is_finite() || b_t.iter().any(|x| !x.is_finite()) {
            return Err(files(
                &cfg_path,
                format!(
                    "{module}: lora_alpha {alpha} at rank {r} scales lora_B past the f32 range"
                ),
            ));
        }
        out.modules.insert(
            module,
            LoraPair {
                rank: r,
                a_t: a.transposed(),
                b_t,
            },
        );
    }
    Ok(out)
}

/// A row-major f32 matrix read from safetensors.
struct Mat {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Mat {
    fn from_view(v: &safetensors::tensor::TensorView<'_>) -> std::result::Result<Mat, String> {
        let shape = v.shape();
        if shape.len() != 2 {
            return Err(format!("expected a matrix, got shape {shape:?}"));
        }
        let b = v.data();
        let data: Vec<f32> = match v.dtype() {
            safetensors::Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            safetensors::Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            safetensors::Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            d => return Err(format!("unsupported dtype {d:?}")),
        };
        if data.iter().any(|x| !x.is_finite()) {
            return Err("holds non-finite values".into());
        }
        Ok(Mat {
            rows: shape[0],
            cols: shape[1],
            data,
        })
    }

    fn transposed(&self) -> Vec<f32> {
        let mut t = vec![0.0; self.data.len()];
        for i in 0..self.rows {
            for j in 0..self.cols {
                t[j * self.rows + i] = self.data[i * self.cols + j];
            }
        }
        t
    }
}

/// Builds the exact weighted merge Σ wᵢ·Bᵢ·Aᵢ per module as one LoRA pair of rank Σ rᵢ:
/// the Aᵀ's are concatenated along the rank axis and the w·Bᵀ's stacked. Modules an
/// adapter lacks contribute nothing.
pub fn merge(parts: &[(&LoraWeights, f32)], modules: &[LoraModule]) -> LoraWeights {
    let mut out = LoraWeights::default();
    for m in modules {
        let present: Vec<(&LoraPair, f32)> = parts
            .iter()
            .filter(|(_, w)| *w != 0.0)
            .filter_map(|(lw, w)| lw.modules.get(&m.module).map(|p| (p, *w)))
            .collect();
        if present.is_empty() {
            continue;
        }
        let rank: usize = present.iter().map(|(p, _)| p.rank).sum();
        let mut a_t = Vec::with_capacity(m.in_features * rank);
        for i in 0..m.in_features {
            for (p, _) in &present {
                a_t.extend_from_slice(&p.a_t[i * p.rank..(i + 1) * p.rank]);
            }
        }
        let mut b_t = Vec::with_capacity(rank * m.out_features);
        for (p, w) in &present {
            b_t.extend(p.b_t.iter().map(|x| x * w));
        }
        out.modules
            .insert(m.module.clone(), LoraPair { rank, a_t, b_t });
    }
    out
}

/// LoRA values ready to feed a session: graph input name → tensor. Empty = the base model.
#[derive(Debug, Default)]
pub struct LoraFeed {
    /// (input name, tensor) pairs.
    pub(crate) inputs: Vec<(String, DynValue)>,
    /// Bytes held.
    pub(crate) bytes: usize,
}

impl LoraFeed {
    /// Tensors for `weights` on `modules`' inputs, of the element type the inputs take
    /// (`dtype`, the model's `lora.dtype`).
    pub fn new(weights: LoraWeights, modules: &[LoraModule], dtype: FloatDtype) -> Result<Self> {
        let bytes = weights.bytes();
        let mut pairs = weights.modules;
        let mut inputs = Vec::with_capacity(2 * pairs.len());
        for m in modules {
            if let Some(p) = pairs.remove(&m.module) {
                // Float32 tensors take the vectors over: no copy.
                let a = float_tensor(dtype, [m.in_features, p.rank], p.a_t)?;
                let b = float_tensor(dtype, [p.rank, m.out_features], p.b_t)?;
                inputs.push((m.a.clone(), a));
                inputs.push((m.b.clone(), b));
            }
        }
        Ok(LoraFeed { inputs, bytes })
    }

    /// Bytes held by the tensors.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The matrices back on the host (a copy), for merging.
    pub fn weights(&self, modules: &[LoraModule]) -> Result<LoraWeights> {
        let by_name: std::collections::HashMap<&str, &DynValue> =
            self.inputs.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let mut out = LoraWeights::default();
        for m in modules {
            if let (Some(a), Some(b)) = (by_name.get(m.a.as_str()), by_name.get(m.b.as_str())) {
                let (shape, a_t) = read_floats(a)?;
                let (_, b_t) = read_floats(b)?;
                let rank = shape.get(1).copied().unwrap_or(0);
                out.modules
                    .insert(m.module.clone(), LoraPair { rank, a_t, b_t });
            }
        }
        Ok(out)
    }

    /// The largest rank over its modules (0 for none).
    pub fn rank(&self) -> Result<usize> {
        let mut rank = 0;
        for (_, a) in self.inputs.iter().step_by(2) {
            let rank_of = a
                .dtype()
                .tensor_shape()
                .and_then(|shape| shape.get(1).copied())
                .unwrap_or(0);
            rank = rank.max(usize::try_from(rank_of).unwrap_or(0));
        }
        Ok(rank)
    }

    /// Whether the feed leaves the base model unchanged.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }
}

/// A loaded adapter.
pub enum LoadedAdapter {
    /// A PEFT adapter, as the tensors fed when it is used alone with weight 1.
    Lora(Arc<LoraFeed>),
    /// An `.onnx_adapter` file, applied by ONNX Runtime through run options.
    Onnx {
        /// Run options with the adapter active.
        options: Arc<ort::session::RunOptions>,
        /// File size.
        bytes: usize,
    },
}

impl std::fmt::Debug for LoadedAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadedAdapter::Lora(feed) => f
                .debug_struct("Lora")
                .field("tensors", &feed.inputs.len())
                .field("bytes", &feed.bytes)
                .finish(),
            LoadedAdapter::Onnx { bytes, .. } => {
                f.debug_struct("Onnx").field("bytes", bytes).finish()
            }
        }
    }
}

impl LoadedAdapter {
    /// Resident bytes.
    pub fn bytes(&self) -> usize {
        match self {
            LoadedAdapter::Lora(feed) => feed.bytes,
            LoadedAdapter::Onnx { bytes, .. } => *bytes,
        }
    }
}

#[cfg(test)]
mod tests;
