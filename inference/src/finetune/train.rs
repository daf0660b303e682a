//! The training loop: shuffled batches, AdamW with warmup and decay, loss on the learned
//! tokens only, deterministic in the seed on the CPU.

use std::time::Instant;

use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::base::BaseModel;
use super::data::TrainingExample;
use super::lora::Lora;
use super::model::Batch;
use crate::error::{Error, Result};

/// How the learning rate decays after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Constant.
    Constant,
    /// Linearly to zero at the last step.
    Linear,
    /// Half a cosine to zero at the last step.
    #[default]
    Cosine,
}

impl std::str::FromStr for Schedule {
    type Err = Error;

    /// `constant`, `linear` or `cosine`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "linear" => Ok(Schedule::Linear),
            "cosine" => Ok(Schedule::Cosine),
            _ => Err(Error::Finetune(format!(
                "learning-rate schedule {s:?}: expected constant, linear or cosine"
            ))),
        }
    }
}

/// Training options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainOptions {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Passes over the examples.
    pub epochs: usize,
    /// Stop after this many optimizer steps, if set (before the epochs are done).
    pub max_steps: Option<usize>,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Steps of linear warmup from zero.
    pub warmup_steps: usize,
    /// Decay after warmup.
    pub schedule: Schedule,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the LoRA initialisation and of the shuffling.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            learning_rate: 1e-3,
            epochs: 3,
            max_steps: None,
            batch_size: 4,
            warmup_steps: 0,
            schedule: Schedule::default(),
            weight_decay: 0.0,
            seed: 0,
        }
    }
}

impl TrainOptions {
    /// Optimizer steps a run over `examples` examples takes.
    pub fn total_steps(&self, examples: usize) -> usize {
        let per_epoch = examples.div_ceil(self.batch_size.max(1));
        let all = per_epoch * self.epochs;
        self.max_steps.map_or(all, |m| m.min(all))
    }

    /// The learning rate at `step` (1-based) of `total`.
    pub fn learning_rate_at(&self, step: usize, total: usize) -> f64 {
        let peak = self.learning_rate;
        if step <= self.warmup_steps {
            return peak * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / decay_steps).min(1.0);
        match self.schedule {
            Schedule::Constant => peak,
            // The step's rate before it is taken: step 1 after warmup trains at the peak.
            Schedule::Linear => peak * (1.0 - progress + 1.0 / decay_steps),
            Schedule::Cosine => {
                let p = progress - 1.0 / decay_steps;
                peak * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// The step (1-based).
    pub step: usize,
    /// Steps in the run.
    pub total_steps: usize,
    /// The epoch (1-based).
    pub epoch: usize,
    /// Mean loss over the step's learned tokens.
    pub loss: f32,
    /// The learning rate used.
    pub learning_rate: f64,
    /// Tokens the step ran through the model (padding excluded).
    pub tokens: usize,
    /// Tokens run through the model since training started (across resumes).
    pub run_tokens: usize,
    /// Seconds of training since it started (across resumes).
    pub elapsed_s: f64,
}

impl StepReport {
    /// Training throughput so far, in tokens per second.
    pub fn tokens_per_second(&self) -> f64 {
        self.run_tokens as f64 / self.elapsed_s.max(1e-9)
    }

    /// Estimated seconds left, at the throughput so far.
    pub fn eta_s(&self) -> f64 {
        let per_step = self.elapsed_s / self.step.max(1) as f64;
        per_step * self.total_steps.saturating_sub(self.step) as f64
    }
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    /// Every step's report.
    pub steps: Vec<StepReport>,
    /// Tokens run through the model.
    pub tokens: usize,
    /// Wall time.
    pub seconds: f64,
}

impl TrainReport {
    /// Training throughput.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// Trains `lora` on `examples` over the frozen `base`, calling `on_step` after each
/// optimizer step. Stops with [`Error::NonFiniteLoss`] if the loss is not finite.
pub fn train(
    base: &BaseModel,
    lora: &Lora,
    examples: &[TrainingExample],
    options: &TrainOptions,
    mut on_step: impl FnMut(&StepReport),
) -> Result<TrainReport> {
    let mut trainer = Trainer::new(base, lora, examples, options)?;
    let mut steps = Vec::with_capacity(trainer.total_steps());
    while !trainer.is_done() {
        steps.extend(trainer.run_epoch(&mut on_step)?);
    }
    Ok(TrainReport {
        steps,
        tokens: trainer.tokens,
        seconds: trainer.seconds,
    })
}

/// A training run that goes epoch by epoch, so that a caller can evaluate, checkpoint
/// ([`Trainer::save_checkpoint`]) and stop early between epochs, and resume a run
/// ([`Trainer::resume`]) exactly where its last checkpoint left it.
#[derive(Debug)]
pub struct Trainer<'a> {
    pub(super) base: &'a BaseModel,
    lora: &'a Lora,
    options: TrainOptions,
    examples: Vec<&'a TrainingExample>,
    total: usize,
    pub(super) adam: AdamW,
    pub(super) step: usize,
    pub(super) epochs_done: usize,
    pub(super) tokens: usize,
    pub(super) seconds: f64,
}

impl<'a> Trainer<'a> {
    /// A run of `options` over the examples that have tokens to learn.
    ///
    /// # Errors
    ///
    /// [`Error::NotEnoughData`] when no example has a token to learn, [`Error::Finetune`]
    /// for a zero batch size or epoch count, or a learning rate that is not positive.
    pub fn new(
        base: &'a BaseModel,
        lora: &'a Lora,
        examples: &'a [TrainingExample],
        options: &TrainOptions,
    ) -> Result<Self> {
        let usable: Vec<&TrainingExample> =
            examples.iter().filter(|e| e.learned_count() > 0).collect();
        if usable.is_empty() {
            return Err(Error::NotEnoughData {
                found: 0,
                needed: 1,
            });
        }
        if options.batch_size == 0 || options.epochs == 0 {
            return Err(Error::Finetune(
                "batch size and epochs must be at least 1".into(),
            ));
        }
        if !(options.learning_rate.is_finite() && options.learning_rate > 0.0) {
            return Err(Error::Finetune(format!(
                "learning rate {} must be a positive number",
                options.learning_rate
            )));
        }
        Ok(Trainer {
            base,
            lora,
            total: options.total_steps(usable.len()),
            adam: AdamW::new(lora.vars(), options.weight_decay)?,
            options: options.clone(),
            examples: usable,
            step: 0,
            epochs_done: 0,
            tokens: 0,
            seconds: 0.0,
        })
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> usize {
        self.total
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Epochs finished so far.
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Tokens trained on so far and seconds spent (across resumes).
    pub fn progress(&self) -> (usize, f64) {
        (self.tokens, self.seconds)
    }

    /// Whether every epoch (or `max_steps`) is done.
    pub fn is_done(&self) -> bool {
        self.epochs_done >= self.options.epochs || self.step >= self.total
    }

    /// Runs the next epoch (or what is left of `max_steps` in it), calling `on_step` after
    /// each optimizer step. Each epoch's order is a shuffle seeded by the seed and the
    /// epoch alone, so a resumed run takes the steps the uninterrupted one would have.
    ///
    /// # Errors
    ///
    /// [`Error::NonFiniteLoss`] (the step is not taken), tensor errors.
    pub fn run_epoch(&mut self, mut on_step: impl FnMut(&StepReport)) -> Result<Vec<StepReport>> {
        let epoch = self.epochs_done + 1;
        let mut rng = ChaCha8Rng::seed_from_u64(self.options.seed);
        rng.set_stream(epoch as u64);
        let mut order: Vec<usize> = (0..self.examples.len()).collect();
        order.shuffle(&mut rng);
        let start = Instant::now();
        let before = self.seconds;
        let mut reports = Vec::new();
        for chunk in order.chunks(self.options.batch_size) {
            let step = self.step + 1;
            if step > self.total {
                break;
            }
            let rows: Vec<&TrainingExample> = chunk.iter().map(|&i| self.examples[i]).collect();
            let batch = make_batch(self.base, &rows)?;
            let lr = self.options.learning_rate_at(step, self.total);
            let loss = self.base.loss(&batch, Some(self.lora))?;
            let value = loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(Error::NonFiniteLoss { step, loss: value });
            }
            let grads = loss.backward()?;
            self.adam.step(&grads, lr)?;
            let tokens: usize = rows.iter().map(|r| r.tokens.len()).sum();
            self.step = step;
            self.tokens += tokens;
            self.seconds = before + start.elapsed().as_secs_f64();
            let s = StepReport {
                step,
                total_steps: self.total,
                epoch,
                loss: value,
                learning_rate: lr,
                tokens,
                run_tokens: self.tokens,
                elapsed_s: self.seconds,
            };
            on_step(&s);
            reports.push(s);
        }
        self.epochs_done = epoch;
        Ok(reports)
    }
}

/// AdamW (decoupled weight decay, bias-corrected moments; β = 0.9, 0.999, ε = 1e-8, the
/// formula of candle's and PyTorch's), kept here so that its moments can be checkpointed.
#[derive(Debug)]
pub(super) struct AdamW {
    pub(super) vars: Vec<(Var, Tensor, Tensor)>,
    pub(super) t: usize,
    weight_decay: f64,
}

impl AdamW {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    fn new(vars: Vec<Var>, weight_decay: f64) -> Result<Self> {
        let vars = vars
            .into_iter()
            .map(|v| {
                let zeros = v.as_tensor().zeros_like()?;
                Ok((v, zeros.clone(), zeros))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            vars,
            t: 0,
            weight_decay,
        })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        let bias1 = 1.0 - Self::BETA1.powi(self.t as i32);
        let bias2 = 1.0 - Self::BETA2.powi(self.t as i32);
        for (var, m, v) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            *m = ((&*m * Self::BETA1)? + (g * (1.0 - Self::BETA1))?)?;
            *v = ((&*v * Self::BETA2)? + (g.sqr()? * (1.0 - Self::BETA2))?)?;
            let m_hat = (&*m / bias1)?;
            let v_hat = (&*v / bias2)?;
            let decayed = (var.as_tensor() * (1.0 - lr * self.weight_decay))?;
            let update = (m_hat / (v_hat.sqrt()? + Self::EPS)?)?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Mean loss per learned token over `examples` (with `lora`, or of the base model alone).
pub fn eval_loss(
    base: &BaseModel,
    lora: Option<&Lora>,
    examples: &[TrainingExample],
    batch_size: usize,
) -> Result<f32> {
    let usable: Vec<&TrainingExample> = examples.iter().filter(|e| e.learned_count() > 0).collect();
    if usable.is_empty() {
        return Err(Error::NotEnoughData {
            found: 0,
            needed: 1,
        });
    }
    let (mut sum, mut count) = (0f64, 0usize);
    for rows in usable.chunks(batch_size.max(1)) {
        let batch = make_batch(base, rows)?;
        let loss = base.loss(&batch, lora)?.detach();
        let mean = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        sum += mean * batch.target_count as f64;
        count += batch.target_count;
    }
    Ok((sum / count as f64) as f32)
}

/// Pads `rows` on the right to one length (padding is never attended to by real tokens,
/// the mask being causal, and never learned).
pub(crate) fn make_batch(base: &BaseModel, rows: &[&TrainingExample]) -> Result<Batch> {
    let len = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * len);
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        base.check_tokens(&row.tokens)?;
        ids.extend_from_slice(&row.tokens);
        ids.extend(std::iter::repeat_n(0, len - row.tokens.len()));
        for (i, (&t, &learned)) in row.tokens.iter().zip(&row.learned).enumerate() {
            if learned && i > 0 {
                positions.push((r * len + i - 1) as u32);
                targets.push(t);
            }
        }
    }
    if targets.is_empty() {
        return Err(Error::Finetune("a batch has no token to learn".into()));
    }
    let device = base.device();
    let count = targets.len();
    Ok(Batch {
        ids: Tensor::from_vec(ids, (rows.len(), len), device)?,
        target_count: count,
        positions: Tensor::from_vec(positions, count, device)?,
        targets: Tensor::from_vec(targets, count, device)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_by_name_and_refuse_others() {
        for (name, s) in [
            ("constant", Schedule::Constant),
            ("linear", Schedule::Linear),
            ("cosine", Schedule::Cosine),
        ] {
            assert_eq!(name.parse::<Schedule>().ok(), Some(s));
        }
        let err = "Cosine"
            .parse::<Schedule>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("constant, linear or cosine"), "{err}");
    }

    #[test]
    fn schedules_warm_up_then_decay_to_zero() {
        let mut o = TrainOptions {
            learning_rate: 1.0,
            warmup_steps: 2,
            schedule: Schedule::Linear,
            ..TrainOptions::default()
        };
        let lrs: Vec<f64> = (1..=6).map(|s| o.learning_rate_at(s, 6)).collect();
        assert_eq!(lrs[..2], [0.5, 1.0]);
        assert!((lrs[2] - 1.0).abs() < 1e-12, "{lrs:?}");
        assert!((lrs[5] - 0.25).abs() < 1e-12, "{lrs:?}");
        assert!(lrs.windows(2).skip(2).all(|w| w[1] < w[0]));
        o.schedule = Schedule::Cosine;
        assert!((o.learning_rate_at(3, 6) - 1.0).abs() < 1e-12);
        assert!(o.learning_rate_at(6, 6) > 0.0 && o.learning_rate_at(6, 6) < 0.2);
        o.schedule = Schedule::Constant;
        assert_eq!(o.learning_rate_at(6, 6), 1.0);
        // 9 examples in batches of 4: 3 steps an epoch, 3 epochs.
        assert_eq!(o.total_steps(9), 9);
    }
}
