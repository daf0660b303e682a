//! The training loop: shuffled batches, AdamW with warmup and decay, loss on the learned
//! tokens only, deterministic in the seed on the CPU.

use std::time::Instant;

use candle_core::Tensor;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
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
    /// Seconds since training started.
    pub elapsed_s: f64,
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
    let usable: Vec<&TrainingExample> = examples.iter().filter(|e| e.learned_count() > 0).collect();
    if usable.is_empty() {
        return Err(Error::Finetune(
            "no example has a token to learn (empty data, or every answer cut by the maximum length)".into(),
        ));
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
    let total = options.total_steps(usable.len());
    let mut optimizer = AdamW::new(
        lora.vars(),
        ParamsAdamW {
            lr: options.learning_rate,
            weight_decay: options.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let start = Instant::now();
    let mut report = TrainReport {
        steps: Vec::with_capacity(total),
        tokens: 0,
        seconds: 0.0,
    };
    let mut order: Vec<usize> = (0..usable.len()).collect();
    'epochs: for epoch in 1..=options.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(options.batch_size) {
            let step = report.steps.len() + 1;
            if step > total {
                break 'epochs;
            }
            let rows: Vec<&TrainingExample> = chunk.iter().map(|&i| usable[i]).collect();
            let batch = make_batch(base, &rows)?;
            let lr = options.learning_rate_at(step, total);
            optimizer.set_learning_rate(lr);
            let loss = base.loss(&batch, Some(lora))?;
            let value = loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(Error::NonFiniteLoss { step, loss: value });
            }
            optimizer.backward_step(&loss)?;
            let tokens: usize = rows.iter().map(|r| r.tokens.len()).sum();
            report.tokens += tokens;
            let s = StepReport {
                step,
                total_steps: total,
                epoch,
                loss: value,
                learning_rate: lr,
                tokens,
                elapsed_s: start.elapsed().as_secs_f64(),
            };
            on_step(&s);
            report.steps.push(s);
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
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
        return Err(Error::Finetune("no example to evaluate".into()));
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
