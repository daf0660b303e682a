//! Trainable LoRA matrices over a frozen [`BaseModel`], initialised as PEFT does and saved
//! as a standard PEFT adapter directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use candle_core::{Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::base::{BaseModel, Proj};
use crate::error::{Error, Result};

/// The PEFT config file [`Lora::save_peft`] writes.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// The PEFT weights file [`Lora::save_peft`] writes.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// What to train: rank, scale and which modules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank of each delta (PEFT's `r`).
    pub rank: usize,
    /// Scale numerator: each delta is `alpha / rank · B·A` (PEFT's `lora_alpha`).
    pub alpha: f64,
    /// Module kinds that get a delta (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`,
    /// `up_proj`, `down_proj`), in every layer.
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    /// Rank 8, alpha 16 on every linear module of every layer.
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            target_modules: Proj::ALL.iter().map(|p| p.name().to_owned()).collect(),
        }
    }
}

impl LoraConfig {
    /// Checks the rank, alpha and target modules ([`Error::UnknownTargetModule`] for a
    /// module a llama layer lacks), before any weights are loaded.
    pub fn validate(&self) -> Result<()> {
        self.projections().map(|_| ())
    }

    /// The targeted modules, checked.
    fn projections(&self) -> Result<BTreeSet<Proj>> {
        if self.rank == 0 {
            return Err(Error::Finetune("the LoRA rank must be at least 1".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::Finetune(format!(
                "lora alpha {} must be a positive number",
                self.alpha
            )));
        }
        if self.target_modules.is_empty() {
            return Err(Error::Finetune("no target modules".into()));
        }
        self.target_modules
            .iter()
            .map(|name| {
                Proj::from_name(name).ok_or_else(|| Error::UnknownTargetModule {
                    name: name.clone(),
                    known: Proj::ALL.map(Proj::name).join(", "),
                })
            })
            .collect()
    }
}

/// LoRA matrices being trained: per targeted module of each layer, `A [rank, in]` and
/// `B [out, rank]` (PEFT's orientation), the delta being `alpha/rank · B·A`.
#[derive(Debug)]
pub struct Lora {
    config: LoraConfig,
    pairs: BTreeMap<(usize, Proj), (Var, Var)>,
}

impl Lora {
    /// Fresh matrices for `base`, initialised like PEFT: `A` Kaiming-uniform (bound
    /// `1/√in`), `B` zero, so training starts from the base model. Deterministic in `seed`.
    pub fn new(base: &BaseModel, config: LoraConfig, seed: u64) -> Result<Self> {
        let projections = config.projections()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (device, dtype) = (base.device(), base.dtype());
        let mut pairs = BTreeMap::new();
        for layer in 0..base.spec.num_layers {
            for &p in &projections {
                let (out, inp) = p.shape(&base.spec);
                let bound = 1.0 / (inp as f64).sqrt();
                let a: Vec<f64> = (0..config.rank * inp)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                let a = Tensor::from_vec(a, (config.rank, inp), device)?.to_dtype(dtype)?;
                let b = Tensor::zeros((out, config.rank), dtype, device)?;
                pairs.insert((layer, p), (Var::from_tensor(&a)?, Var::from_tensor(&b)?));
            }
        }
        Ok(Lora { config, pairs })
    }

    /// The configuration.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.config.alpha / self.config.rank as f64
    }

    /// `(A, B)` of a module, if it is targeted.
    pub(crate) fn pair(&self, layer: usize, proj: Proj) -> Option<(&Tensor, &Tensor)> {
        self.pairs
            .get(&(layer, proj))
            .map(|(a, b)| (a.as_tensor(), b.as_tensor()))
    }

    /// Every trainable matrix.
    pub(crate) fn vars(&self) -> Vec<Var> {
        self.pairs
            .values()
            .flat_map(|(a, b)| [a.clone(), b.clone()])
            .collect()
    }

    /// `(A, B)` as variables, for tests that set or perturb them.
    #[cfg(test)]
    pub(crate) fn var_pair(&self, layer: usize, proj: Proj) -> Option<&(Var, Var)> {
        self.pairs.get(&(layer, proj))
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.pairs
            .values()
            .map(|(a, b)| a.elem_count() + b.elem_count())
            .sum()
    }

    /// Fills every `B` with small seeded noise (std `0.02`): a LoRA that changes the model,
    /// for checking the forward pass and its gradients without training first.
    pub fn randomize_b(&self, seed: u64) -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (_, b) in self.pairs.values() {
            let (out, rank) = b.dims2()?;
            let data: Vec<f64> = (0..out * rank)
                .map(|_| 0.02 * super::base::standard_normal(&mut rng))
                .collect();
            let t = Tensor::from_vec(data, (out, rank), b.device())?.to_dtype(b.dtype())?;
            b.set(&t)?;
        }
        Ok(())
    }

    /// Writes a PEFT adapter directory: `adapter_config.json` and
    /// `adapter_model.safetensors` (keys `base_model.model.<module>.lora_A.weight` `[r, in]`
    /// and `.lora_B.weight` `[out, r]`, fp32). `base_model` is recorded as
    /// `base_model_name_or_path`, which loaders check against the model they apply it to.
    pub fn save_peft(&self, dir: impl AsRef<Path>, base_model: &str) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::io(dir, source))?;
        let mut tensors = HashMap::new();
        for ((layer, proj), (a, b)) in &self.pairs {
            let prefix = format!("base_model.model.{}", proj.module_path(*layer));
            tensors.insert(
                format!("{prefix}.lora_A.weight"),
                a.as_tensor().to_dtype(candle_core::DType::F32)?,
            );
            tensors.insert(
                format!("{prefix}.lora_B.weight"),
                b.as_tensor().to_dtype(candle_core::DType::F32)?,
            );
        }
        let weights = dir.join(ADAPTER_WEIGHTS_FILE);
        candle_core::safetensors::save(&tensors, &weights)?;
        let targets: BTreeSet<Proj> = self.pairs.keys().map(|(_, p)| *p).collect();
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": self.config.rank,
            "lora_alpha": self.config.alpha,
            "lora_dropout": 0.0,
            "target_modules": targets.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": false,
            "use_dora": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "rank_pattern": {},
            "alpha_pattern": {},
            "modules_to_save": null,
            "layers_to_transform": null,
            "layers_pattern": null,
            "revision": null,
        });
        let path = dir.join(ADAPTER_CONFIG_FILE);
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| Error::Finetune(format!("{ADAPTER_CONFIG_FILE}: {e}")))?;
        std::fs::write(&path, text + "\n").map_err(|source| Error::io(&path, source))?;
        Ok(())
    }
}
