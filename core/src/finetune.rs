//! Fine-tuning a LoRA adapter on attributed data (feature `finetune`): the one function
//! [`finetune`] behind `tribute finetune` and `tribute.finetune(...)`.
//!
//! It reads training examples (a JSONL file, or a datanet of a knowledge base), holds a
//! seeded share out for evaluation, trains epoch by epoch on the base model's source
//! checkpoint ([`tribute_inference::finetune`]), evaluates after each epoch, stops early
//! when the held-out loss stops improving, checkpoints each epoch (so `resume` continues an
//! interrupted run exactly), and writes a PEFT adapter with a signed `provenance.json`
//! naming every training document's content hash, contributor, datanet and tokens.

use std::path::{Path, PathBuf};

use alloy_primitives::{Address, B256, keccak256};
use serde::{Deserialize, Serialize};
use tribute_attribution::provenance::{
    AdapterHashes, ProvenanceManifest, SignedProvenance, TrainingConfig,
};
use tribute_attribution::receipt::PayerKey;
use tribute_inference::finetune::{
    ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, BaseModel, Example, Lora, LoraConfig, StepReport,
    TrainOptions, Trainer, TrainingExample, eval_loss,
};
use tribute_inference::{Error as InferenceError, Tokenizer};

use crate::{Error, Result};

/// Where the training examples come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinetuneData {
    /// A JSONL file: one `{"question","answer"}`, `{"messages":[…]}` or
    /// `{"id","text","contributor","datanet"}` per line (any line may name its
    /// `contributor` and `datanet`).
    Jsonl(PathBuf),
    /// Every live document of one datanet of a knowledge base, as plain text.
    KnowledgeBase {
        /// The knowledge base (a directory).
        kb: PathBuf,
        /// The datanet.
        datanet: String,
    },
}

/// What to train and how. `Default`: rank 8 / alpha 16 on all seven modules, the trainer's
/// defaults, 512 tokens, 10 % held out, patience 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FinetuneOptions {
    /// LoRA rank, alpha and target modules.
    pub lora: LoraConfig,
    /// Learning rate, schedule, epochs, steps, batch size, seed.
    pub train: TrainOptions,
    /// Longest example in tokens; longer ones are cut (and counted).
    pub max_length: usize,
    /// Share of the examples held out for the evaluation loss, in basis points.
    pub eval_split_bps: u16,
    /// Stop after this many epochs without a lower held-out loss (`None`: never early).
    pub patience: Option<usize>,
    /// The datanet recorded for examples that name none.
    pub default_datanet: String,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        FinetuneOptions {
            lora: LoraConfig::default(),
            train: TrainOptions::default(),
            max_length: 512,
            eval_split_bps: 1_000,
            patience: Some(2),
            default_datanet: "default".into(),
        }
    }
}

impl FinetuneOptions {
    /// Holds out `percent` of the examples for the evaluation loss (at least 0, below 100).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for a share outside `[0, 100)` or not a number.
    pub fn set_held_out_percent(&mut self, percent: f64) -> Result<()> {
        if !(0.0..100.0).contains(&percent) {
            return Err(Error::InvalidRequest(format!(
                "the held-out share {percent} % must be at least 0 and below 100"
            )));
        }
        // In [0, 9_999]: the cast cannot truncate.
        self.eval_split_bps = (percent * 100.0).round().min(9_999.0) as u16;
        Ok(())
    }
}

/// Progress of a run, for a progress line.
#[derive(Debug, Clone, PartialEq)]
pub enum FinetuneEvent {
    /// The held-out loss before training (when examples are held out).
    Start {
        /// Training examples.
        train_examples: usize,
        /// Held-out examples.
        held_out: usize,
        /// Mean held-out loss of the base model.
        eval_loss: Option<f32>,
    },
    /// An optimizer step was taken.
    Step(StepReport),
    /// An epoch ended.
    Epoch {
        /// The epoch (1-based).
        epoch: usize,
        /// Mean training loss over its steps.
        train_loss: f32,
        /// Mean held-out loss after it.
        eval_loss: Option<f32>,
    },
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinetuneReport {
    /// Where the adapter was written.
    pub adapter_dir: PathBuf,
    /// Examples read.
    pub examples: usize,
    /// Examples trained on.
    pub train_examples: usize,
    /// Examples held out.
    pub held_out: usize,
    /// Examples cut to `max_length`.
    pub truncated: usize,
    /// Optimizer steps taken (including those of a resumed run's earlier part).
    pub steps: usize,
    /// Epochs run.
    pub epochs: usize,
    /// Held-out loss of the base model.
    pub eval_loss_before: Option<f32>,
    /// Held-out loss after each epoch.
    pub eval_losses: Vec<f32>,
    /// The epoch whose weights `adapter_dir` holds: the one with the lowest held-out loss
    /// (the last one when nothing is held out). `None` only when no epoch ran.
    pub kept: Option<KeptEpoch>,
    /// Whether the run stopped early (patience).
    pub stopped_early: bool,
    /// Whether the run continued from a checkpoint.
    pub resumed: bool,
    /// Training throughput.
    pub tokens_per_second: f64,
    /// Training seconds (across resumes).
    pub seconds: f64,
    /// The provenance manifest's hash, when a trainer key signed one.
    pub provenance_hash: Option<B256>,
}

/// One example with where it came from.
struct Sourced {
    example: Example,
    content_hash: B256,
    contributor: Option<Address>,
    datanet: Option<String>,
}

/// The epoch a run keeps: an early stop (or a last epoch that overfits) must not leave the
/// user with worse weights than an earlier epoch had.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KeptEpoch {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Optimizer steps up to its end.
    pub steps: usize,
    /// Its held-out loss (`None` when nothing is held out: the last epoch is kept).
    pub eval_loss: Option<f32>,
}

/// The run's history, kept beside the checkpoint so that a resumed run still stops early
/// and still knows its best epoch.
#[derive(Debug, Default, Serialize, Deserialize)]
struct History {
    eval_loss_before: Option<f32>,
    eval_losses: Vec<f32>,
    /// The best epoch so far; its adapter is in `checkpoint/best-<epoch>`.
    #[serde(default)]
    best: Option<KeptEpoch>,
}

const CHECKPOINT_DIR: &str = "checkpoint";
const HISTORY_FILE: &str = "history.json";

/// Where the best epoch's adapter waits in the checkpoint. Named by epoch so that the
/// history, written after it, never points at another epoch's weights after a crash.
fn best_dir(checkpoint: &Path, epoch: usize) -> PathBuf {
    checkpoint.join(format!("best-{epoch}"))
}

/// Fine-tunes the model exported in `base_dir` on `data`, writing a PEFT adapter into `out`
/// (and, with `trainer_key`, its signed `provenance.json`; examples that name no
/// contributor are credited to the trainer). With `resume`, continues from the checkpoint
/// in `out` of the same run.
///
/// # Errors
///
/// Typed [`tribute_inference::Error`]s (as [`Error::Inference`]):
/// `TrainingData` (a bad JSONL line), `NotEnoughData`, `SourceCheckpointMissing`,
/// `UnknownTargetModule`, `NonFiniteLoss`, `ResumeMismatch`; [`Error::Provenance`] when the
/// manifest cannot be built.
pub fn finetune(
    base_dir: &Path,
    data: &FinetuneData,
    out: &Path,
    options: &FinetuneOptions,
    trainer_key: Option<&PayerKey>,
    resume: bool,
    mut on_event: impl FnMut(&FinetuneEvent),
) -> Result<FinetuneReport> {
    // Options and data are checked before the weights load.
    options.lora.validate()?;
    let sourced = read_data(data)?;
    let base = BaseModel::from_model_dir(base_dir)?;
    let tokenizer = Tokenizer::from_dir(base_dir)?;
    let eos = model_eos(base_dir)?;
    let mut tokenized = Vec::with_capacity(sourced.len());
    for s in &sourced {
        tokenized.push(s.example.tokenize(&tokenizer, &eos, options.max_length)?);
    }
    let truncated = tokenized.iter().filter(|t| t.truncated).count();
    let usable: Vec<usize> = (0..tokenized.len())
        .filter(|&i| tokenized[i].learned_count() > 0)
        .collect();
    let (train_idx, held_idx) = split(
        &usable,
        options.eval_split_bps,
        options.train.seed,
        &sourced,
    )?;
    let train_set: Vec<TrainingExample> = train_idx.iter().map(|&i| tokenized[i].clone()).collect();
    let held_set: Vec<TrainingExample> = held_idx.iter().map(|&i| tokenized[i].clone()).collect();

    let lora = Lora::new(&base, options.lora.clone(), options.train.seed)?;
    let mut trainer = Trainer::new(&base, &lora, &train_set, &options.train)?;
    let checkpoint = out.join(CHECKPOINT_DIR);
    let model_hash = crate::audit::model_hashes(base_dir)?.model;
    let fingerprint = fingerprint(model_hash, options, &sourced, &train_idx)?;
    let mut history = History::default();
    if resume {
        trainer.resume(&checkpoint, &fingerprint)?;
        let path = checkpoint.join(HISTORY_FILE);
        history = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| {
                Error::Inference(InferenceError::ResumeMismatch {
                    dir: checkpoint.clone(),
                    reason: format!("{HISTORY_FILE} is missing or unreadable"),
                })
            })?;
    } else if !held_set.is_empty() {
        history.eval_loss_before =
            Some(eval_loss(&base, None, &held_set, options.train.batch_size)?);
    }
    on_event(&FinetuneEvent::Start {
        train_examples: train_set.len(),
        held_out: held_set.len(),
        eval_loss: history.eval_loss_before,
    });
    let mut stopped_early = stop_early(&history.eval_losses, options.patience);
    while !trainer.is_done() && !stopped_early {
        let steps = trainer.run_epoch(|s| on_event(&FinetuneEvent::Step(s.clone())))?;
        let train_loss = steps.iter().map(|s| s.loss).sum::<f32>() / steps.len().max(1) as f32;
        let eval = if held_set.is_empty() {
            None
        } else {
            Some(eval_loss(
                &base,
                Some(&lora),
                &held_set,
                options.train.batch_size,
            )?)
        };
        history.eval_losses.extend(eval);
        on_event(&FinetuneEvent::Epoch {
            epoch: trainer.epochs_done(),
            train_loss,
            eval_loss: eval,
        });
        trainer.save_checkpoint(&checkpoint, &fingerprint)?;
        let previous_best = history.best;
        if let Some(loss) = eval
            && previous_best.is_none_or(|b| b.eval_loss.is_none_or(|best| loss < best))
        {
            let epoch = trainer.epochs_done();
            lora.save_peft(
                best_dir(&checkpoint, epoch),
                base.name().unwrap_or_default(),
            )?;
            history.best = Some(KeptEpoch {
                epoch,
                steps: trainer.steps_done(),
                eval_loss: Some(loss),
            });
        }
        write_json(&checkpoint.join(HISTORY_FILE), &history)?;
        if let Some(old) = previous_best.filter(|_| history.best != previous_best) {
            // Only a disk that refuses the delete keeps it; the next run overwrites it.
            let _ = std::fs::remove_dir_all(best_dir(&checkpoint, old.epoch));
        }
        stopped_early = stop_early(&history.eval_losses, options.patience);
    }

    let last = KeptEpoch {
        epoch: trainer.epochs_done(),
        steps: trainer.steps_done(),
        eval_loss: history.eval_losses.last().copied(),
    };
    let kept = match history.best {
        Some(best) if best.epoch != last.epoch => {
            copy_adapter(&best_dir(&checkpoint, best.epoch), out)?;
            best
        }
        _ => {
            lora.save_peft(out, base.name().unwrap_or_default())?;
            last
        }
    };
    let provenance_hash = match trainer_key {
        Some(key) => {
            let signed = provenance(
                out, options, model_hash, &base, key, &sourced, &train_idx, &tokenized, kept.steps,
            )?;
            signed.write(out)?;
            Some(signed.manifest.hash())
        }
        None => {
            // A manifest of an earlier run no longer describes this adapter.
            let stale = out.join(tribute_attribution::provenance::PROVENANCE_FILE);
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(|e| {
                    Error::Config(format!("cannot remove the stale {}: {e}", stale.display()))
                })?;
            }
            None
        }
    };
    let (tokens, seconds) = trainer.progress();
    Ok(FinetuneReport {
        adapter_dir: out.to_path_buf(),
        examples: sourced.len(),
        train_examples: train_set.len(),
        held_out: held_set.len(),
        truncated,
        steps: trainer.steps_done(),
        epochs: trainer.epochs_done(),
        eval_loss_before: history.eval_loss_before,
        eval_losses: history.eval_losses,
        kept: (kept.epoch > 0).then_some(kept),
        stopped_early: stopped_early && !trainer.is_done(),
        resumed: resume,
        tokens_per_second: tokens as f64 / seconds.max(1e-9),
        seconds,
        provenance_hash,
    })
}

/// Whether the last `patience` epochs all failed to beat the best loss before them.
fn stop_early(losses: &[f32], patience: Option<usize>) -> bool {
    let Some(p) = patience.filter(|&p| p > 0) else {
        return false;
    };
    if losses.len() <= p {
        return false;
    }
    let (before, last) = losses.split_at(losses.len() - p);
    let best = before.iter().copied().fold(f32::INFINITY, f32::min);
    last.iter().all(|&l| l >= best)
}

fn read_data(data: &FinetuneData) -> Result<Vec<Sourced>> {
    match data {
        FinetuneData::Jsonl(path) => read_jsonl(path),
        FinetuneData::KnowledgeBase { kb, datanet } => {
            if !kb.is_dir() {
                return Err(Error::InvalidRequest(format!(
                    "{}: no knowledge base there (a directory made by `tribute ingest`)",
                    kb.display()
                )));
            }
            let index = tribute_index::Index::open(kb, None, Default::default())?;
            let mut out = Vec::new();
            for record in index.documents()? {
                if record.datanet.as_str() != datanet.as_str() || record.duplicate_of.is_some() {
                    continue;
                }
                let Some(text) = index.document_text(&record.id)? else {
                    continue;
                };
                let contributor = record.contributor.address();
                out.push(Sourced {
                    content_hash: keccak256(text.as_bytes()),
                    example: Example::Document(text),
                    contributor: (contributor != Address::ZERO).then_some(contributor),
                    datanet: Some(datanet.clone()),
                });
            }
            Ok(out)
        }
    }
}

#[derive(Deserialize)]
struct LineSource {
    #[serde(default)]
    contributor: Option<String>,
    #[serde(default)]
    datanet: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

fn read_jsonl(path: &Path) -> Result<Vec<Sourced>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Inference(InferenceError::TrainingData {
            path: path.to_path_buf(),
            line: 0,
            reason: format!("cannot read the file: {e}"),
        })
    })?;
    let bad = |line: usize, reason: String| {
        Error::Inference(InferenceError::TrainingData {
            path: path.to_path_buf(),
            line,
            reason,
        })
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let example = Example::from_json(line).map_err(|e| bad(i + 1, e.to_string()))?;
        let source: LineSource =
            serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        let contributor = match source.contributor.as_deref() {
            Some(c) => Some(
                tribute_common::parse_address(c)
                    .map_err(|e| bad(i + 1, format!("contributor {c:?}: {}", e.reason)))?,
            ),
            None => None,
        };
        // A document is named by its text's hash, as the knowledge base names it; a chat
        // by its canonical JSON.
        let content_hash = match (&example, source.text) {
            (_, Some(t)) => keccak256(t.as_bytes()),
            (Example::Chat(m), None) => keccak256(serde_json::to_string(m).unwrap_or_default()),
            (Example::Document(t), None) => keccak256(t.as_bytes()),
        };
        out.push(Sourced {
            example,
            content_hash,
            contributor,
            datanet: source.datanet,
        });
    }
    Ok(out)
}

/// Splits the usable examples into training and held-out ones: `bps` of them (at least one
/// when `bps > 0`) held out, chosen by a hash of the seed and the example's content.
fn split(
    usable: &[usize],
    bps: u16,
    seed: u64,
    sourced: &[Sourced],
) -> Result<(Vec<usize>, Vec<usize>)> {
    let needed = if bps > 0 { 2 } else { 1 };
    if usable.len() < needed {
        return Err(Error::Inference(InferenceError::NotEnoughData {
            found: usable.len(),
            needed,
        }));
    }
    let mut held = usable.len() * usize::from(bps) / 10_000;
    if bps > 0 {
        held = held.clamp(1, usable.len() - 1);
    }
    let mut order = usable.to_vec();
    order.sort_by_key(|&i| {
        let mut key = seed.to_be_bytes().to_vec();
        key.extend_from_slice(sourced[i].content_hash.as_slice());
        key.extend_from_slice(&(i as u64).to_be_bytes());
        keccak256(key)
    });
    let held_out = order.split_off(order.len() - held);
    let (mut train, mut held_out) = (order, held_out);
    train.sort_unstable();
    held_out.sort_unstable();
    Ok((train, held_out))
}

/// Identifies a run: the base model, the options and the training data, in order.
fn fingerprint(
    model_hash: B256,
    options: &FinetuneOptions,
    sourced: &[Sourced],
    train_idx: &[usize],
) -> Result<String> {
    let options = serde_json::to_string(options).map_err(|e| Error::Config(e.to_string()))?;
    let mut bytes = model_hash.to_vec();
    bytes.extend_from_slice(options.as_bytes());
    for &i in train_idx {
        bytes.extend_from_slice(sourced[i].content_hash.as_slice());
    }
    Ok(keccak256(bytes).to_string())
}

#[allow(clippy::too_many_arguments)]
fn provenance(
    out: &Path,
    options: &FinetuneOptions,
    model_hash: B256,
    base: &BaseModel,
    key: &PayerKey,
    sourced: &[Sourced],
    train_idx: &[usize],
    tokenized: &[TrainingExample],
    steps: usize,
) -> Result<SignedProvenance> {
    let o = &options.train;
    let training = TrainingConfig {
        rank: u32::try_from(options.lora.rank).unwrap_or(u32::MAX),
        alpha: options.lora.alpha.round() as u32,
        dropout_bps: 0,
        target_modules: options.lora.target_modules.clone(),
        learning_rate: o.learning_rate.to_string(),
        lr_schedule: serde_json::to_value(o.schedule)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        warmup_steps: o.warmup_steps as u64,
        epochs: u32::try_from(o.epochs).unwrap_or(u32::MAX),
        steps: steps as u64,
        batch_size: u32::try_from(o.batch_size).unwrap_or(u32::MAX),
        seed: o.seed,
        max_length: u32::try_from(options.max_length).unwrap_or(u32::MAX),
        eval_split_bps: options.eval_split_bps,
    };
    let mut builder =
        ProvenanceManifest::builder(base.name().unwrap_or_default(), model_hash, key.address())
            .adapter(AdapterHashes::of_dir(out)?)
            .training(training);
    for &i in train_idx {
        let s = &sourced[i];
        // The tokens the loss was computed on: what the example taught the adapter.
        builder = builder.document(
            s.content_hash,
            s.contributor.unwrap_or(key.address()),
            s.datanet
                .clone()
                .unwrap_or_else(|| options.default_datanet.clone()),
            tokenized[i].learned_count() as u64,
        );
    }
    Ok(builder.build()?.sign(key)?)
}

/// Copies the adapter files saved in `from` (the best epoch's) into `out`.
fn copy_adapter(from: &Path, out: &Path) -> Result<()> {
    let copy = |name: &str| {
        std::fs::copy(from.join(name), out.join(name)).map_err(|e| {
            Error::Inference(InferenceError::ResumeMismatch {
                dir: from.to_path_buf(),
                reason: format!("cannot copy the best epoch's {name}: {e}"),
            })
        })
    };
    std::fs::create_dir_all(out)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", out.display())))?;
    copy(ADAPTER_CONFIG_FILE)?;
    copy(ADAPTER_WEIGHTS_FILE)?;
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Config(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| {
        Error::Inference(InferenceError::ResumeMismatch {
            dir: path.to_path_buf(),
            reason: format!("cannot write the checkpoint history: {e}"),
        })
    })
}

/// The end-of-turn tokens of an exported model (`tribute.json`'s `eos_token_ids`).
fn model_eos(dir: &Path) -> Result<Vec<u32>> {
    let path = dir.join("tribute.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    Ok(cfg["eos_token_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patience_stops_after_epochs_without_improvement() {
        assert!(!stop_early(&[3.0, 2.0, 2.5], Some(2)));
        assert!(stop_early(&[3.0, 2.0, 2.5, 2.1], Some(2)));
        assert!(!stop_early(&[3.0, 2.0, 2.5, 1.9], Some(2)));
        assert!(!stop_early(&[3.0, 4.0, 5.0], None));
        assert!(stop_early(&[3.0, 3.0], Some(1)));
    }

    fn sourced(n: usize) -> Vec<Sourced> {
        (0..n)
            .map(|i| Sourced {
                example: Example::Document(format!("doc {i}")),
                content_hash: keccak256(format!("doc {i}")),
                contributor: None,
                datanet: None,
            })
            .collect()
    }

    #[test]
    fn the_held_out_split_is_seeded_and_never_empties_the_training_set() {
        let s = sourced(20);
        let all: Vec<usize> = (0..20).collect();
        let (train, held) = split(&all, 1_000, 7, &s).expect("split");
        assert_eq!((train.len(), held.len()), (18, 2));
        assert_eq!(split(&all, 1_000, 7, &s).expect("split").1, held);
        assert_ne!(split(&all, 1_000, 8, &s).expect("split").1, held);
        let (train, held) = split(&all[..2], 100, 0, &s).expect("split");
        assert_eq!((train.len(), held.len()), (1, 1));
        assert_eq!(split(&all[..1], 0, 0, &s).expect("split").0, [0]);
        for (n, bps) in [(0, 0), (1, 1_000)] {
            let err = split(&all[..n], bps, 0, &s).unwrap_err();
            assert!(
                matches!(err, Error::Inference(InferenceError::NotEnoughData { .. })),
                "{err}"
            );
        }
    }
}
