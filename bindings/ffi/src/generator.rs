//! The [`Generator`]: a local language model with hot-swapped LoRA adapters.

use std::path::PathBuf;
use std::sync::Arc;

use tribute::inference::{GenerateRequest, GeneratorOptions};

use crate::error::{Result, guard};
use crate::types::{AdapterWeight, count, size};

/// A local language model (an exported ONNX model directory) and its LoRA adapters.
/// Share one generator between engines; it is safe to use from several threads.
#[derive(Debug, uniffi::Object)]
pub struct Generator {
    pub(crate) inner: Arc<tribute::inference::Generator>,
}

#[uniffi::export]
impl Generator {
    /// Loads a model directory (`model.onnx`, `tokenizer.json`, `tribute_model.json`, as
    /// written by `python -m tribute_export`); no path loads the default
    /// SmolLM2-135M-Instruct (`$TRIBUTE_HOME/models/SmolLM2-135M-Instruct`). `device` is
    /// `cpu`, `cuda` or `cuda:N`; `sessions` is how many callers can generate at once.
    ///
    /// Throws `Model` when the directory is missing or incomplete.
    #[uniffi::constructor(default(path = None, device = "cpu", sessions = 1))]
    pub fn load(path: Option<String>, device: String, sessions: u32) -> Result<Arc<Self>> {
        guard(|| {
            let options = GeneratorOptions {
                device: device.parse()?,
                sessions: size(sessions).max(1),
                ..GeneratorOptions::default()
            };
            let dir = path
                .map(PathBuf::from)
                .unwrap_or_else(tribute::inference::default_model_dir);
            let inner = tribute::inference::Generator::load_with(&dir, options)?;
            Ok(Arc::new(Generator {
                inner: Arc::new(inner),
            }))
        })
    }

    /// Registers a LoRA adapter under `id`: a PEFT directory (`adapter_config.json` +
    /// `adapter_model.safetensors`) or an `.onnx_adapter` file. Throws `Adapter` when it
    /// is unusable or does not fit the model.
    pub fn add_adapter(&self, id: String, path: String) -> Result<()> {
        guard(|| {
            self.inner.add_adapter(id, &path)?;
            Ok(())
        })
    }

    /// Generates a reply to `prompt` (one user message, through the chat template), with
    /// `adapters` merged. Greedy when `temperature` is 0.
    #[uniffi::method(default(max_tokens = 128, adapters = [], temperature = 0.0, seed = 0))]
    pub fn generate(
        &self,
        prompt: String,
        max_tokens: u32,
        adapters: Vec<AdapterWeight>,
        temperature: f32,
        seed: u64,
    ) -> Result<String> {
        guard(|| {
            let mut req = GenerateRequest::new(prompt)
                .max_tokens(size(max_tokens))
                .temperature(temperature)
                .seed(seed);
            for a in adapters {
                req = req.adapter(a.id, a.weight);
            }
            Ok(self.inner.generate(&req)?.text)
        })
    }

    /// The registered adapter ids.
    pub fn adapters(&self) -> Vec<String> {
        self.inner
            .adapters()
            .ids()
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect()
    }

    /// The model directory.
    pub fn path(&self) -> String {
        self.inner.dir().display().to_string()
    }

    /// The model's name (from its config, else the directory name).
    pub fn name(&self) -> String {
        model_name(&self.inner)
    }

    /// Where the model runs (`cpu` or `cuda:N`).
    pub fn device(&self) -> String {
        match self.inner.device() {
            tribute::inference::Device::Cuda { device_id } => format!("cuda:{device_id}"),
            _ => "cpu".to_owned(),
        }
    }

    /// The model's context length in tokens.
    pub fn context_length(&self) -> u32 {
        count(self.inner.config().context_length)
    }
}

pub(crate) fn model_name(g: &tribute::inference::Generator) -> String {
    g.config().name.clone().unwrap_or_else(|| {
        g.dir()
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    })
}
