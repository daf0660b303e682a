//! What a model directory says about its model (`tribute.json`, or ONNX Runtime GenAI's
//! `genai_config.json` for directories written by other tools). See `docs/MODEL_FORMAT.md`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The name for layer `i` from a `%d` pattern such as `past_key_values.%d.key`.
pub fn layer_name(pattern: &str, i: usize) -> String {
    pattern.replace("%d", &i.to_string())
}

/// One module of the model that takes a LoRA delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraModule {
    /// Hugging Face module path, e.g. `model.layers.0.self_attn.q_proj`.
    pub module: String,
    /// Graph input holding Aᵀ, `[in_features, rank]`.
    pub a: String,
    /// Graph input holding (scale·B)ᵀ, `[rank, out_features]`.
    pub b: String,
    /// Input width of the module.
    pub in_features: usize,
    /// Output width of the module.
    pub out_features: usize,
}

/// The model's LoRA inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraInputs {
    /// Module kinds that take LoRA (`q_proj`, ...).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Every module with LoRA inputs.
    #[serde(default)]
    pub modules: Vec<LoraModule>,
    /// The `[rows, 1, rank]` input that gives each row its columns of the LoRA inputs'
    /// rank axis (adapter slots); models exported before it have none.
    #[serde(default)]
    pub mask: Option<String>,
    /// The element type of every LoRA input and the mask (float16 in `--compute fp16`
    /// exports).
    #[serde(default)]
    pub dtype: FloatDtype,
}

/// How the graph computes attention (`tribute.json`'s `ops`; `portable` when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphOps {
    /// Standard opset-17 operators: any batch of rows over any past.
    #[default]
    Portable,
    /// ONNX Runtime's `com.microsoft.GroupQueryAttention`, which runs more than one new
    /// token on top of a past cache only for a single row.
    Fused,
    /// The fused operators over right-padded rows in a cache buffer allocated once and
    /// written in place (the layout of GPU kernels and CUDA graphs); no mask inside a row,
    /// so masked scoring leaves hidden columns out of the past instead.
    Static,
}

/// The element type of float tensors at a graph's boundary that the runtime allocates and
/// feeds: the KV cache (`tribute.json`'s `kv_dtype`) and the LoRA inputs (`lora.dtype`);
/// `float32` when absent. Host copies are always float32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatDtype {
    /// 32-bit floats.
    #[default]
    Float32,
    /// 16-bit floats, what `--compute fp16` graphs compute in: a cast at the boundary would
    /// be an operator (a kernel launch on a GPU) per input and step, and for the cache of the
    /// static layout, whose kernel appends to the very buffer the runtime binds, two copies
    /// per layer and step.
    Float16,
}

impl GraphOps {
    /// Whether one call may run several rows of several new tokens each over a past cache
    /// (batched masked scoring).
    pub fn batches_tokens_over_past(self) -> bool {
        self == GraphOps::Portable
    }
}

/// The shape and conventions of a decoder model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The model's name (e.g. `SmolLM2-135M-Instruct`), used to check adapters' base model.
    #[serde(default)]
    pub name: Option<String>,
    /// Architecture family (`llama`, `qwen2`, ...).
    #[serde(default = "default_arch")]
    pub architecture: String,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Key/value heads (GQA).
    pub num_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Hidden size.
    #[serde(default)]
    pub hidden_size: usize,
    /// Vocabulary size (logits width).
    pub vocab_size: usize,
    /// Longest sequence (prompt + generated tokens) the model handles.
    pub context_length: usize,
    /// Beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// Tokens that end a generation.
    #[serde(default)]
    pub eos_token_ids: Vec<u32>,
    /// Padding token for batches.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Storage dtype of the weights.
    #[serde(default = "default_dtype")]
    pub weights_dtype: String,
    /// Element type of the past inputs and present outputs (logits are always float32).
    #[serde(default)]
    pub kv_dtype: FloatDtype,
    /// Keys a sliding-window layer sees (Gemma 3), when the model has such layers; recorded
    /// by static exports, whose masked scoring is exact only within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Graph input names.
    pub inputs: InputNames,
    /// Graph output names.
    pub outputs: OutputNames,
    /// LoRA inputs, if the graph has any.
    #[serde(default)]
    pub lora: LoraInputs,
    /// Which operators compute attention (what the graph can run in one call).
    #[serde(default)]
    pub ops: GraphOps,
    /// Where the model came from.
    #[serde(default)]
    pub source: serde_json::Value,
}

/// Input names as written in `tribute.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputNames {
    /// Token ids.
    pub input_ids: String,
    /// Attention mask.
    pub attention_mask: String,
    /// Position ids (optional).
    #[serde(default)]
    pub position_ids: Option<String>,
    /// Past key pattern.
    pub past_key: String,
    /// Past value pattern.
    pub past_value: String,
    /// How many of the last positions get logits (optional: graphs exported before it
    /// return logits for every position, and so do graphs where it is not fed).
    #[serde(default)]
    pub logits_to_keep: Option<String>,
}

/// Output names as written in `tribute.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputNames {
    /// Logits.
    pub logits: String,
    /// Present key pattern.
    pub present_key: String,
    /// Present value pattern.
    pub present_value: String,
    /// The argmax of the kept logits (static exports), `[batch, positions]` int64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

fn default_arch() -> String {
    "llama".to_owned()
}
fn default_dtype() -> String {
    "float32".to_owned()
}

impl ModelConfig {
    /// Reads `tribute.json`, or else `genai_config.json`, from a model directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let tribute = dir.join("tribute.json");
        let genai = dir.join("genai_config.json");
        let cfg = if tribute.is_file() {
            let text = read(&tribute)?;
            serde_json::from_str::<ModelConfig>(&text)
                .map_err(|e| Error::model_dir(dir, format!("tribute.json: {e}")))?
        } else if genai.is_file() {
            Self::from_genai(dir, &read(&genai)?)?
        } else {
            return Err(Error::model_dir(
                dir,
                "neither tribute.json nor genai_config.json found",
            ));
        };
        cfg.validate(dir)?;
        Ok(cfg)
    }

    /// Builds a config from ONNX Runtime GenAI's `genai_config.json`.
    fn from_genai(dir: &Path, text: &str) -> Result<Self> {
        let bad = |what: &str| Error::model_dir(dir, format!("genai_config.json: {what}"));
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        let model = v.get("model").ok_or_else(|| bad("no `model` object"))?;
        let dec = model
            .get("decoder")
            .ok_or_else(|| bad("no `model.decoder`"))?;
        let num = |obj: &serde_json::Value, k: &str| -> Result<usize> {
            obj.get(k)
                .and_then(serde_json::Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| bad(&format!("missing number `{k}`")))
        };
        let s = |obj: Option<&serde_json::Value>, k: &str, d: &str| -> String {
            obj.and_then(|o| o.get(k))
                .and_then(serde_json::Value::as_str)
                .unwrap_or(d)
                .to_owned()
        };
        let ins = dec.get("inputs");
        let outs = dec.get("outputs");
        let ids = |k: &str| -> Vec<u32> {
            match model.get(k) {
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_u64().map(|n| n as u32))
                    .collect(),
                Some(x) => x.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
                None => Vec::new(),
            }
        };
        let num_heads = num(dec, "num_attention_heads")?;
        Ok(ModelConfig {
            name: None,
            architecture: s(Some(model), "type", "llama"),
            num_layers: num(dec, "num_hidden_layers")?,
            num_heads,
            num_kv_heads: num(dec, "num_key_value_heads").unwrap_or(num_heads),
            head_dim: num(dec, "head_size")?,
            hidden_size: num(dec, "hidden_size").unwrap_or(0),
            vocab_size: num(model, "vocab_size")?,
            context_length: num(model, "context_length")?,
            bos_token_id: ids("bos_token_id").first().copied(),
            eos_token_ids: ids("eos_token_id"),
            pad_token_id: ids("pad_token_id").first().copied(),
            weights_dtype: default_dtype(),
            kv_dtype: FloatDtype::Float32,
            sliding_window: None,
            inputs: InputNames {
                input_ids: s(ins, "input_ids", "input_ids"),
                attention_mask: s(ins, "attention_mask", "attention_mask"),
                position_ids: Some(s(ins, "position_ids", "position_ids")),
                past_key: s(ins, "past_key_names", "past_key_values.%d.key"),
                past_value: s(ins, "past_value_names", "past_key_values.%d.value"),
                logits_to_keep: None,
            },
            outputs: OutputNames {
                logits: s(outs, "logits", "logits"),
                present_key: s(outs, "present_key_names", "present.%d.key"),
                present_value: s(outs, "present_value_names", "present.%d.value"),
                next_token: None,
            },
            lora: LoraInputs::default(),
            ops: GraphOps::Portable,
            source: serde_json::Value::Null,
        })
    }

    fn validate(&self, dir: &Path) -> Result<()> {
        let bad = |r: String| Err(Error::model_dir(dir, r));
        if self.num_layers == 0 || self.num_heads == 0 || self.num_kv_heads == 0 {
            return bad("layer and head counts must be positive".into());
        }
        if self.head_dim == 0 || self.vocab_size == 0 || self.context_length == 0 {
            return bad("head_dim, vocab_size and context_length must be positive".into());
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_heads {} is not a multiple of num_kv_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.kv_dtype == FloatDtype::Float16 && self.ops != GraphOps::Static {
            return bad(format!(
                "kv_dtype \"float16\" is for the static layout (`--ops static --compute fp16`, \
                 whose kernel writes the very buffer it reads); this graph's ops are {:?}: \
                 set kv_dtype to \"float32\", or re-export with --ops static",
                self.ops
            ));
        }
        if let Some(t) = self
            .eos_token_ids
            .iter()
            .find(|&&t| t as usize >= self.vocab_size)
        {
            return bad(format!("eos token {t} is outside the vocabulary"));
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::io(path, source))
}
