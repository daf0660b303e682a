//! Local generation with ONNX Runtime and hot-swapped LoRA adapters.
//!
//! A [`Generator`] loads a model directory (see `docs/MODEL_FORMAT.md`; the project's
//! exporter `inference/export` writes them) into a pool of ONNX Runtime sessions and
//! decodes with a KV cache: greedy or sampled, streamed, batched, with LoRA adapters
//! chosen per request and merged with weights.
//!
//! ```no_run
//! use tribute_inference::{GenerateRequest, Generator};
//! # fn main() -> tribute_inference::Result<()> {
//! let generator = Generator::load("models/SmolLM2-135M-Instruct")?;
//! generator.add_adapter("zephyr", "adapters/smollm2-135m-zephyr-lora")?;
//! let answer = generator.generate(
//!     &GenerateRequest::new("What is Zephyr SDK?").max_tokens(40).adapter("zephyr", 1.0),
//! )?;
//! println!("{}", answer.text);
//! # Ok(())
//! # }
//! ```

pub mod adapter;
pub mod config;
mod error;
#[cfg(feature = "finetune")]
pub mod finetune;
mod floats;
pub mod generator;
pub mod registry;
pub mod sampling;
pub mod tokenizer;

/// Name of the default model directory under `$TRIBUTE_HOME/models` (installed by `make setup`).
pub const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct";

/// `$TRIBUTE_HOME/models/SmolLM2-135M-Instruct`, where `make setup` exports the default model.
pub fn default_model_dir() -> std::path::PathBuf {
    tribute_common::tribute_home()
        .join("models")
        .join(DEFAULT_MODEL)
}

pub use adapter::{
    AdapterId, AdapterLimits, AdapterSource, DEFAULT_MAX_ADAPTER_BYTES, DEFAULT_MAX_ADAPTER_RANK,
};
pub use config::{FloatDtype, GraphOps, ModelConfig};
pub use error::{AdapterError, Error, Result};
pub use generator::{
    CancelGuard, CancelToken, DEFAULT_PREFILL_CHUNK, DEFAULT_SLOT_RANK, DEFAULT_SPARE_BUFFER_BYTES,
    Device, FinishReason, GenerateRequest, Generation, Generator, GeneratorOptions, Prompt,
    PromptCacheStats, TextStream, Timings,
};
pub use registry::{AdapterRegistry, AdapterSet, RegistryStats};
pub use sampling::{DevicePick, SamplingParams};
pub use tokenizer::{Message, PLAIN_CHAT_TEMPLATE, Tokenizer};
