//! Checkpoints of a [`Trainer`]: the LoRA matrices, AdamW's moments and the run's counters,
//! written at epoch boundaries so that an interrupted run resumes exactly.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::train::Trainer;
use crate::error::{Error, Result};

const TENSORS: &str = "trainer.safetensors";
const STATE: &str = "state.json";

/// The counters of a run, beside its tensors.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// Identifies the run (data, options, base model): a checkpoint of another run is refused.
    fingerprint: String,
    step: usize,
    epochs_done: usize,
    adam_t: usize,
    tokens: usize,
    seconds: f64,
    tensors: usize,
}

impl Trainer<'_> {
    /// Writes the run's state into `dir` (created if needed): the LoRA matrices, AdamW's
    /// moments and counters, tagged with `fingerprint`, the caller's identity of the run.
    /// The state file is written last, so a checkpoint cut short is never read as whole.
    ///
    /// # Errors
    ///
    /// I/O and tensor errors.
    pub fn save_checkpoint(&self, dir: impl AsRef<Path>, fingerprint: &str) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::io(dir, source))?;
        let state_path = dir.join(STATE);
        if state_path.exists() {
            std::fs::remove_file(&state_path).map_err(|source| Error::io(&state_path, source))?;
        }
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (i, (var, m, v)) in self.adam.vars.iter().enumerate() {
            tensors.insert(format!("lora.{i}"), var.as_tensor().clone());
            tensors.insert(format!("m.{i}"), m.clone());
            tensors.insert(format!("v.{i}"), v.clone());
        }
        candle_core::safetensors::save(&tensors, dir.join(TENSORS))?;
        let state = State {
            fingerprint: fingerprint.to_owned(),
            step: self.step,
            epochs_done: self.epochs_done,
            adam_t: self.adam.t,
            tokens: self.tokens,
            seconds: self.seconds,
            tensors: self.adam.vars.len(),
        };
        let text = serde_json::to_string_pretty(&state)
            .map_err(|e| Error::Finetune(format!("checkpoint state: {e}")))?;
        std::fs::write(&state_path, text).map_err(|source| Error::io(&state_path, source))
    }

    /// Whether `dir` holds a complete checkpoint.
    pub fn has_checkpoint(dir: impl AsRef<Path>) -> bool {
        let dir = dir.as_ref();
        dir.join(STATE).is_file() && dir.join(TENSORS).is_file()
    }

    /// Restores the state [`save_checkpoint`](Self::save_checkpoint) wrote, into this
    /// trainer and its LoRA. The next [`run_epoch`](Self::run_epoch) continues the run.
    ///
    /// # Errors
    ///
    /// [`Error::ResumeMismatch`] when the checkpoint is missing or incomplete, was written
    /// by another run (fingerprint), or its matrices do not fit this LoRA.
    pub fn resume(&mut self, dir: impl AsRef<Path>, fingerprint: &str) -> Result<()> {
        let dir = dir.as_ref();
        let mismatch = |reason: String| Error::ResumeMismatch {
            dir: dir.to_path_buf(),
            reason,
        };
        if !Self::has_checkpoint(dir) {
            return Err(mismatch(format!(
                "no complete checkpoint ({STATE} and {TENSORS}) is there"
            )));
        }
        let path = dir.join(STATE);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::io(&path, source))?;
        let state: State = serde_json::from_str(&text)
            .map_err(|e| mismatch(format!("unreadable {STATE}: {e}")))?;
        if state.fingerprint != fingerprint {
            return Err(mismatch(
                "it was written by a run with other data, options or base model; start afresh (without --resume) or into another directory".into(),
            ));
        }
        if state.tensors != self.adam.vars.len() {
            return Err(mismatch(format!(
                "it holds {} LoRA matrices, this run has {}",
                state.tensors,
                self.adam.vars.len()
            )));
        }
        let device = self.base.device().clone();
        let saved = candle_core::safetensors::load(dir.join(TENSORS), &device)?;
        let get = |key: String, like: &Tensor| -> Result<Tensor> {
            let t = saved
                .get(&key)
                .ok_or_else(|| mismatch(format!("{TENSORS} lacks {key}")))?;
            if t.shape() != like.shape() || t.dtype() != like.dtype() {
                return Err(mismatch(format!(
                    "{key} is {:?} {:?}, this run's is {:?} {:?}",
                    t.dtype(),
                    t.dims(),
                    like.dtype(),
                    like.dims()
                )));
            }
            Ok(t.clone())
        };
        let mut restored = Vec::with_capacity(self.adam.vars.len());
        for (i, (var, m, v)) in self.adam.vars.iter().enumerate() {
            restored.push((
                get(format!("lora.{i}"), var.as_tensor())?,
                get(format!("m.{i}"), m)?,
                get(format!("v.{i}"), v)?,
            ));
        }
        // Only now that everything fits: change the trainer.
        for ((var, m, v), (w, m2, v2)) in self.adam.vars.iter_mut().zip(restored) {
            var.set(&w)?;
            *m = m2;
            *v = v2;
        }
        self.adam.t = state.adam_t;
        self.step = state.step;
        self.epochs_done = state.epochs_done;
        self.tokens = state.tokens;
        self.seconds = state.seconds;
        Ok(())
    }
}
