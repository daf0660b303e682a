//! The frozen base model: a llama checkpoint's weights as fp32 tensors in Hugging Face
//! orientation, read from the GGUF file a model directory was exported from.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// The numbers that shape a llama decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaSpec {
    /// Hidden size.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Key/value heads (GQA).
    pub num_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
}

impl LlamaSpec {
    fn check(&self) -> Result<()> {
        let bad = |r: String| Err(Error::Finetune(r));
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_layers == 0 {
            return bad("layer and head counts must be positive".into());
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{} heads are not a multiple of {} key/value heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        Ok(())
    }
}

/// A linear module of a decoder layer, the unit LoRA targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proj {
    /// `self_attn.q_proj`
    Q,
    /// `self_attn.k_proj`
    K,
    /// `self_attn.v_proj`
    V,
    /// `self_attn.o_proj`
    O,
    /// `mlp.gate_proj`
    Gate,
    /// `mlp.up_proj`
    Up,
    /// `mlp.down_proj`
    Down,
}

impl Proj {
    /// Every module of a layer, in Hugging Face order.
    pub const ALL: [Proj; 7] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::O,
        Proj::Gate,
        Proj::Up,
        Proj::Down,
    ];

    /// The module's name as PEFT's `target_modules` spells it (`q_proj`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Proj::Q => "q_proj",
            Proj::K => "k_proj",
            Proj::V => "v_proj",
            Proj::O => "o_proj",
            Proj::Gate => "gate_proj",
            Proj::Up => "up_proj",
            Proj::Down => "down_proj",
        }
    }

    /// The module for a `target_modules` name.
    pub fn from_name(name: &str) -> Option<Proj> {
        Proj::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Hugging Face module path in layer `layer`, e.g. `model.layers.3.self_attn.q_proj`.
    pub fn module_path(self, layer: usize) -> String {
        let block = match self {
            Proj::Q | Proj::K | Proj::V | Proj::O => "self_attn",
            Proj::Gate | Proj::Up | Proj::Down => "mlp",
        };
        format!("model.layers.{layer}.{block}.{}", self.name())
    }

    fn gguf_name(self) -> &'static str {
        match self {
            Proj::Q => "attn_q",
            Proj::K => "attn_k",
            Proj::V => "attn_v",
            Proj::O => "attn_output",
            Proj::Gate => "ffn_gate",
            Proj::Up => "ffn_up",
            Proj::Down => "ffn_down",
        }
    }

    /// `(out_features, in_features)` of the module.
    pub fn shape(self, spec: &LlamaSpec) -> (usize, usize) {
        let (h, i, d) = (spec.hidden_size, spec.intermediate_size, spec.head_dim);
        match self {
            Proj::Q => (spec.num_heads * d, h),
            Proj::K | Proj::V => (spec.num_kv_heads * d, h),
            Proj::O => (h, spec.num_heads * d),
            Proj::Gate | Proj::Up => (i, h),
            Proj::Down => (h, i),
        }
    }
}

/// One decoder layer's frozen weights.
#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) input_norm: Tensor,
    pub(crate) post_attention_norm: Tensor,
    /// Linear weights `[out, in]`, indexed by [`Proj`] in [`Proj::ALL`] order.
    pub(crate) linear: [Tensor; 7],
}

/// A frozen llama: weights that training never changes, on one device.
#[derive(Debug)]
pub struct BaseModel {
    pub(crate) spec: LlamaSpec,
    /// The name adapters record as `base_model_name_or_path`.
    pub(crate) name: Option<String>,
    pub(crate) embed: Tensor,
    pub(crate) norm: Tensor,
    /// The output projection when it is not the (tied) embedding.
    pub(crate) lm_head: Option<Tensor>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) device: Device,
}

impl BaseModel {
    /// The model's shape.
    pub fn spec(&self) -> &LlamaSpec {
        &self.spec
    }

    /// The model's name, if known (recorded in adapters as their base model).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Sets the name adapters record as their base model.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = Some(name.into());
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the weights (and of LoRA matrices trained on them).
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// Loads the base weights of an exported model directory (`tribute.json`): its
    /// `source.path` GGUF, looked up as given, beside the directory's files, then in
    /// `$TRIBUTE_HOME/gguf/`. [`Error::SourceCheckpointMissing`] when it names none or the
    /// file is in none of those places.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("tribute.json");
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|source| Error::io(&cfg_path, source))?;
        let cfg: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::model_dir(dir, format!("tribute.json: {e}")))?;
        let home_gguf = tribute_common::tribute_home().join("gguf");
        let source = cfg["source"]["path"].as_str().unwrap_or_default();
        let path = find_source(dir, source).ok_or_else(|| Error::SourceCheckpointMissing {
            checkpoint: source.to_owned(),
            looked: vec![dir.to_path_buf(), home_gguf],
        })?;
        let mut model = Self::from_gguf(&path)?;
        if let Some(name) = cfg["name"].as_str() {
            model.name = Some(name.to_owned());
        }
        Ok(model)
    }

    /// Loads a llama GGUF file on the CPU, dequantized to fp32, with llama.cpp's
    /// interleaved Q/K rows put back in Hugging Face order.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |reason: String| Error::Finetune(format!("{}: {reason}", path.display()));
        let mut file = std::fs::File::open(path).map_err(|source| Error::io(path, source))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| bad(format!("not a readable GGUF file: {e}")))?;
        let meta = |key: &str| content.metadata.get(key);
        let arch = meta("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(bad(format!(
                "architecture {arch:?}: the trainer handles llama models"
            )));
        }
        let int = |key: &str| -> Result<usize> {
            meta(&format!("llama.{key}"))
                .and_then(value_as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("metadata llama.{key} is missing")))
        };
        let float = |key: &str, default: f64| -> f64 {
            meta(&format!("llama.{key}"))
                .and_then(value_as_f64)
                .unwrap_or(default)
        };
        let hidden = int("embedding_length")?;
        let heads = int("attention.head_count")?;
        let device = Device::Cpu;
        let mut read = |name: &str| -> Result<Tensor> {
            let q = content
                .tensor(&mut file, name, &device)
                .map_err(|e| bad(format!("tensor {name}: {e}")))?;
            Ok(q.dequantize(&device)?)
        };
        let embed = read("token_embd.weight")?;
        let spec = LlamaSpec {
            hidden_size: hidden,
            intermediate_size: int("feed_forward_length")?,
            num_layers: int("block_count")?,
            num_heads: heads,
            num_kv_heads: int("attention.head_count_kv").unwrap_or(heads),
            head_dim: int("attention.key_length").unwrap_or(hidden / heads.max(1)),
            vocab_size: embed.dim(0)?,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-6),
            rope_theta: float("rope.freq_base", 10000.0),
        };
        spec.check()?;
        if content.metadata.contains_key("llama.rope.scaling.type")
            || content.tensor_infos.contains_key("rope_freqs.weight")
        {
            return Err(bad("RoPE scaling is not supported by the trainer".into()));
        }
        if content.tensor_infos.keys().any(|k| k.ends_with(".bias")) {
            return Err(bad("linear biases are not supported by the trainer".into()));
        }
        let lm_head = if content.tensor_infos.contains_key("output.weight") {
            Some(read("output.weight")?)
        } else {
            None
        };
        let norm = read("output_norm.weight")?;
        let mut layers = Vec::with_capacity(spec.num_layers);
        for i in 0..spec.num_layers {
            let mut linear = Vec::with_capacity(7);
            for p in Proj::ALL {
                let w = read(&format!("blk.{i}.{}.weight", p.gguf_name()))?;
                let w = match p {
                    Proj::Q => unpermute_rope_rows(&w, spec.num_heads)?,
                    Proj::K => unpermute_rope_rows(&w, spec.num_kv_heads)?,
                    _ => w,
                };
                if w.dims2()? != p.shape(&spec) {
                    return Err(bad(format!(
                        "blk.{i}.{} has shape {:?}, expected {:?}",
                        p.gguf_name(),
                        w.dims(),
                        p.shape(&spec)
                    )));
                }
                linear.push(w);
            }
            layers.push(Layer {
                input_norm: read(&format!("blk.{i}.attn_norm.weight"))?,
                post_attention_norm: read(&format!("blk.{i}.ffn_norm.weight"))?,
                linear: linear
                    .try_into()
                    .map_err(|_| bad("a layer lacks a linear module".into()))?,
            });
        }
        let name = meta("general.name")
            .and_then(|v| v.to_string().ok())
            .cloned();
        Ok(BaseModel {
            spec,
            name,
            embed,
            norm,
            lm_head,
            layers,
            device,
        })
    }

    /// A model of random weights (linear weights normal with std 0.02, embeddings with std
    /// `1/√hidden` so that logits are of order one; unit norms; tied embeddings), for tests
    /// and benchmarks of the trainer itself.
    pub fn random(spec: LlamaSpec, seed: u64, dtype: DType) -> Result<Self> {
        spec.check()?;
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut normal = |rows: usize, cols: usize, std: f64| -> Result<Tensor> {
            let data: Vec<f64> = (0..rows * cols)
                .map(|_| std * standard_normal(&mut rng))
                .collect();
            Ok(Tensor::from_vec(data, (rows, cols), &device)?.to_dtype(dtype)?)
        };
        let embed = normal(
            spec.vocab_size,
            spec.hidden_size,
            1.0 / (spec.hidden_size as f64).sqrt(),
        )?;
        let mut layers = Vec::with_capacity(spec.num_layers);
        for _ in 0..spec.num_layers {
            let mut linear = Vec::with_capacity(7);
            for p in Proj::ALL {
                let (o, i) = p.shape(&spec);
                linear.push(normal(o, i, 0.02)?);
            }
            layers.push(Layer {
                input_norm: Tensor::ones(spec.hidden_size, dtype, &device)?,
                post_attention_norm: Tensor::ones(spec.hidden_size, dtype, &device)?,
                linear: linear
                    .try_into()
                    .map_err(|_| Error::Finetune("a layer lacks a linear module".into()))?,
            });
        }
        Ok(BaseModel {
            norm: Tensor::ones(spec.hidden_size, dtype, &device)?,
            spec,
            name: None,
            embed,
            lm_head: None,
            layers,
            device,
        })
    }

    /// The frozen weight `[out, in]` of a module.
    pub(crate) fn weight(&self, layer: usize, proj: Proj) -> &Tensor {
        &self.layers[layer].linear[proj as usize]
    }
}

/// Undoes llama.cpp's `permute` of Q/K rows (each head's rotary pairs interleaved), as the
/// exporter's `reverse_llama_permute` does: `[heads, dim/2, 2, in] → [heads, 2, dim/2, in]`.
pub(crate) fn unpermute_rope_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = rows / heads / 2;
    Ok(w.reshape((heads, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

fn find_source(dir: &Path, source: &str) -> Option<PathBuf> {
    if source.is_empty() {
        return None;
    }
    let given = PathBuf::from(source);
    let file_name = given.file_name()?.to_owned();
    [
        given.clone(),
        dir.join(&given),
        tribute_common::tribute_home().join("gguf").join(file_name),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn value_as_u64(v: &gguf_file::Value) -> Option<u64> {
    use gguf_file::Value as V;
    match *v {
        V::U8(x) => Some(u64::from(x)),
        V::U16(x) => Some(u64::from(x)),
        V::U32(x) => Some(u64::from(x)),
        V::U64(x) => Some(x),
        V::I8(x) => u64::try_from(x).ok(),
        V::I16(x) => u64::try_from(x).ok(),
        V::I32(x) => u64::try_from(x).ok(),
        V::I64(x) => u64::try_from(x).ok(),
        _ => None,
    }
}

fn value_as_f64(v: &gguf_file::Value) -> Option<f64> {
    match *v {
        gguf_file::Value::F32(x) => Some(f64::from(x)),
        gguf_file::Value::F64(x) => Some(x),
        _ => value_as_u64(v).map(|x| x as f64),
    }
}

/// A standard normal sample (Box–Muller), so weights depend on the seed alone.
pub(crate) fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(heads, 2, dim/2, in).swapaxes(1, 2).
        let (heads, dim, cols) = (3, 4, 2);
        let rows = heads * dim;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let hf = Tensor::from_vec(hf, (rows, cols), &Device::Cpu).expect("tensor");
        let gguf = hf
            .reshape((heads, 2, dim / 2, cols))
            .and_then(|t| t.transpose(1, 2))
            .and_then(|t| t.contiguous())
            .and_then(|t| t.reshape((rows, cols)))
            .expect("permute");
        let back = unpermute_rope_rows(&gguf, heads).expect("unpermute");
        assert_eq!(
            back.to_vec2::<f32>().expect("vec"),
            hf.to_vec2::<f32>().expect("vec")
        );
        // Row 1 of head 0 in GGUF order is the first row of the second half in HF order.
        assert_eq!(gguf.to_vec2::<f32>().expect("vec")[1], [4.0, 5.0]);
    }

    #[test]
    fn module_names_round_trip() {
        for p in Proj::ALL {
            assert_eq!(Proj::from_name(p.name()), Some(p));
        }
        assert_eq!(
            Proj::Gate.module_path(2),
            "model.layers.2.mlp.gate_proj".to_owned()
        );
        assert_eq!(Proj::from_name("lm_head"), None);
    }
}
