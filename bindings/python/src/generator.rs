//! The [`Generator`]: a local language model with hot-swapped LoRA adapters.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use tribute::inference::{GenerateRequest, GeneratorOptions};

use crate::error::{py_err, request};
use crate::quoted;

/// A local language model (an exported ONNX model directory) and its LoRA adapters.
/// Share one generator between engines; it is safe to use from several threads.
#[pyclass(module = "tribute", frozen)]
pub struct Generator {
    pub(crate) inner: Arc<tribute::inference::Generator>,
}

/// Adapters from a dict `{id: weight}`, a list of ids (weight 1.0) or of `(id, weight)`
/// pairs, or one id.
pub(crate) fn adapters(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, f32)>> {
    let Some(obj) = obj else {
        return Ok(Vec::new());
    };
    if let Ok(d) = obj.cast::<pyo3::types::PyDict>() {
        return d
            .iter()
            .map(|(k, v)| Ok((k.extract::<String>()?, v.extract::<f32>()?)))
            .collect::<PyResult<_>>()
            .map_err(|_| request("adapters: expected {id: weight} with string ids and numbers"));
    }
    if let Ok(id) = obj.extract::<String>() {
        return Ok(vec![(id, 1.0)]);
    }
    let mut out = Vec::new();
    for item in obj.try_iter()? {
        let item = item?;
        if let Ok(id) = item.extract::<String>() {
            out.push((id, 1.0));
        } else {
            out.push(item.extract::<(String, f32)>().map_err(|_| {
                request("adapters: expected {id: weight}, a list of ids or of (id, weight) pairs")
            })?);
        }
    }
    Ok(out)
}

#[pymethods]
impl Generator {
    /// Loads a model directory (`model.onnx`, `tokenizer.json`, `tribute_model.json`, as
    /// written by `python -m tribute_export`); `None` loads the default SmolLM2-135M-Instruct
    /// (`$TRIBUTE_HOME/models/SmolLM2-135M-Instruct`). `device` is `"cpu"`, `"cuda"` or
    /// `"cuda:N"`; `sessions` is how many callers can generate at once; `prompt_cache_mib`
    /// bounds the prompts' KV caches kept for scoring answers and for prefills of prompts
    /// that start the same way (`None`: 128 MiB; `0`: off).
    ///
    /// Raises `ModelError` when the directory is missing or incomplete.
    #[staticmethod]
    #[pyo3(signature = (path = None, *, device = "cpu", sessions = 1, prompt_cache_mib = None))]
    fn load(
        py: Python<'_>,
        path: Option<PathBuf>,
        device: &str,
        sessions: usize,
        prompt_cache_mib: Option<usize>,
    ) -> PyResult<Self> {
        let defaults = GeneratorOptions::default();
        let options = GeneratorOptions {
            device: device.parse().map_err(py_err)?,
            sessions: sessions.max(1),
            prompt_cache_bytes: prompt_cache_mib
                .map_or(defaults.prompt_cache_bytes, |m| m.saturating_mul(1 << 20)),
            ..defaults
        };
        let dir = path.unwrap_or_else(tribute::inference::default_model_dir);
        let inner = py
            .detach(|| tribute::inference::Generator::load_with(&dir, options))
            .map_err(py_err)?;
        Ok(Generator {
            inner: Arc::new(inner),
        })
    }

    /// Registers a LoRA adapter under `id`: a PEFT directory (`adapter_config.json` +
    /// `adapter_model.safetensors`) or an `.onnx_adapter` file. Raises `AdapterError` when
    /// it is unusable or does not fit the model.
    fn add_adapter(&self, py: Python<'_>, id: &str, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.inner.add_adapter(id, &path))
            .map(|_| ())
            .map_err(py_err)
    }

    /// Unregisters the adapter `id` and frees its weights; returns whether it was
    /// registered. A generation already under way keeps the weights it took; a later
    /// request naming `id` raises `AdapterError` until it is added again.
    fn remove_adapter(&self, id: &str) -> bool {
        tribute::inference::AdapterId::new(id).is_ok_and(|id| self.inner.adapters().unregister(&id))
    }

    /// Generates a reply to `prompt` (one user message, through the chat template),
    /// with the given adapters merged (`{id: weight}`). Greedy when `temperature` is 0.
    /// The GIL is released while generating.
    #[pyo3(signature = (prompt, *, max_tokens = 128, adapters = None, temperature = 0.0, seed = 0))]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &str,
        max_tokens: usize,
        adapters: Option<&Bound<'_, PyAny>>,
        temperature: f32,
        seed: u64,
    ) -> PyResult<String> {
        let mut req = GenerateRequest::new(prompt)
            .max_tokens(max_tokens)
            .temperature(temperature)
            .seed(seed);
        for (id, w) in self::adapters(adapters)? {
            req = req.adapter(id, w);
        }
        py.detach(|| self.inner.generate(&req))
            .map(|g| g.text)
            .map_err(py_err)
    }

    /// The registered adapter ids.
    #[getter]
    fn adapters(&self) -> Vec<String> {
        self.inner
            .adapters()
            .ids()
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect()
    }

    /// The model directory.
    #[getter]
    fn path(&self) -> String {
        self.inner.dir().display().to_string()
    }

    /// The model's name (from its config, else the directory name).
    #[getter]
    fn name(&self) -> String {
        model_name(&self.inner)
    }

    /// Where the model runs (`cpu` or `cuda:N`).
    #[getter]
    fn device(&self) -> String {
        match self.inner.device() {
            tribute::inference::Device::Cuda { device_id } => format!("cuda:{device_id}"),
            _ => "cpu".to_owned(),
        }
    }

    /// The model's context length in tokens.
    #[getter]
    fn context_length(&self) -> usize {
        self.inner.config().context_length
    }

    fn __repr__(&self) -> String {
        format!(
            "Generator({}, path={}, device={}, adapters={:?})",
            quoted(&self.name()),
            quoted(&self.path()),
            self.device(),
            self.adapters()
        )
    }
}

pub(crate) fn model_name(g: &tribute::inference::Generator) -> String {
    g.config().name.clone().unwrap_or_else(|| {
        g.dir()
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    })
}
