//! LoRA fine-tuning on the CPU (feature `finetune`), with candle.
//!
//! The base model's weights come from the checkpoint its model directory was exported
//! from (`tribute.json`'s `source`, a GGUF file), dequantized to fp32 and put back in
//! Hugging Face orientation; they stay frozen. LoRA matrices on the chosen modules are
//! trained with AdamW on the answer tokens of chat examples (rendered with the model's
//! chat template exactly as the generator renders prompts) or on whole documents, and
//! saved as a standard PEFT adapter that the [`Generator`](crate::Generator) and PEFT load.
//!
//! - `base`: [`BaseModel`], the frozen weights (GGUF reading, Q/K row order).
//! - `model`: the forward pass and the loss.
//! - `lora`: [`Lora`], its initialisation and [`Lora::save_peft`].
//! - `data`: [`Example`]s from JSONL and their tokenization.
//! - `train`: [`train`], [`Trainer`] (epoch by epoch), [`eval_loss`], [`TrainOptions`].
//! - `checkpoint`: [`Trainer::save_checkpoint`] and [`Trainer::resume`].
//!
//! ```no_run
//! use tribute_inference::finetune::{BaseModel, Example, Lora, LoraConfig, TrainOptions, train};
//! use tribute_inference::Tokenizer;
//! # fn main() -> tribute_inference::Result<()> {
//! let dir = tribute_inference::default_model_dir();
//! let base = BaseModel::from_model_dir(&dir)?;
//! let tokenizer = Tokenizer::from_dir(&dir)?;
//! let examples = Example::read_jsonl("facts.jsonl")?
//!     .iter()
//!     .map(|e| e.tokenize(&tokenizer, &[2], 256))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let options = TrainOptions::default();
//! let lora = Lora::new(&base, LoraConfig::default(), options.seed)?;
//! train(&base, &lora, &examples, &options, |s| eprintln!("step {} loss {:.3}", s.step, s.loss))?;
//! lora.save_peft("facts-lora", base.name().unwrap_or_default())?;
//! # Ok(())
//! # }
//! ```

mod base;
mod checkpoint;
mod data;
mod lora;
mod model;
mod train;

pub use base::{BaseModel, LlamaSpec, Proj};
pub use candle_core::DType;
pub use data::{Example, TrainingExample};
pub use lora::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, Lora, LoraConfig};
pub use train::{Schedule, StepReport, TrainOptions, TrainReport, Trainer, eval_loss, train};

#[cfg(test)]
mod tests;
