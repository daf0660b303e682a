//! `tribute.finetune`: LoRA fine-tuning of a model directory's source checkpoint
//! (`tribute::finetune`), the CLI's `tribute finetune` for Python.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tribute::finetune::{FinetuneData, FinetuneEvent, FinetuneOptions};
use tribute::inference::finetune::Schedule;

use crate::error::py_err;
use crate::receipt::Signer;

/// Fine-tunes a LoRA adapter into `out` on `data` (JSONL: `{"question","answer"}`,
/// `{"messages":[…]}` or `{"id","text","contributor","datanet"}` lines) or on the documents
/// of a knowledge base's datanet (`kb` + `datanet`), from `base` (default: the installed
/// SmolLM2-135M-Instruct). With `signer`, `provenance.json` is signed beside the adapter.
/// `progress(event)` gets a dict per event (`{"event": "start" | "step" | "epoch", …}`);
/// an exception it raises is raised again when the run ends (it gets no later events).
/// Returns the report (what `tribute finetune --json` prints) as a dict. Blocking, without
/// the GIL.
#[pyfunction]
#[pyo3(signature = (
    out, *, data = None, kb = None, datanet = None, base = None, rank = 8, alpha = 16.0,
    targets = None, lr = 1e-3, schedule = "cosine", warmup = 0, epochs = 3, steps = None,
    batch = 4, seed = 0, max_len = 512, held_out = 10.0, patience = 2, signer = None,
    resume = false, progress = None
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn finetune<'py>(
    py: Python<'py>,
    out: PathBuf,
    data: Option<PathBuf>,
    kb: Option<PathBuf>,
    datanet: Option<String>,
    base: Option<PathBuf>,
    rank: usize,
    alpha: f64,
    targets: Option<Vec<String>>,
    lr: f64,
    schedule: &str,
    warmup: usize,
    epochs: usize,
    steps: Option<usize>,
    batch: usize,
    seed: u64,
    max_len: usize,
    held_out: f64,
    patience: usize,
    signer: Option<PyRef<'py, Signer>>,
    resume: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let data = match (data, kb) {
        (Some(path), None) => FinetuneData::Jsonl(path),
        (None, Some(kb)) => FinetuneData::KnowledgeBase {
            kb,
            datanet: datanet.clone().ok_or_else(|| {
                PyValueError::new_err("kb= needs datanet=: the datanet to train on")
            })?,
        },
        _ => {
            return Err(PyValueError::new_err(
                "give data= (a JSONL file) or kb= with datanet=, not both",
            ));
        }
    };
    let schedule: Schedule = schedule
        .parse()
        .map_err(|e: tribute::inference::Error| PyValueError::new_err(format!("schedule=: {e}")))?;
    let mut options = FinetuneOptions::default();
    options.lora.rank = rank;
    options.lora.alpha = alpha;
    if let Some(t) = targets {
        options.lora.target_modules = t;
    }
    options.train.learning_rate = lr;
    options.train.schedule = schedule;
    options.train.warmup_steps = warmup;
    options.train.epochs = epochs;
    options.train.max_steps = steps;
    options.train.batch_size = batch;
    options.train.seed = seed;
    options.max_length = max_len;
    options
        .set_held_out_percent(held_out)
        .map_err(|e| PyValueError::new_err(format!("held_out=: {e}")))?;
    options.patience = (patience > 0).then_some(patience);
    if let Some(d) = datanet {
        options.default_datanet = d;
    }
    let base = base.unwrap_or_else(tribute::inference::default_model_dir);
    let key = signer.map(|s| s.key.clone());
    // The first exception the progress callback raised, re-raised after the run.
    let mut callback_error: Option<PyErr> = None;
    let report = py
        .detach(|| {
            tribute::finetune::finetune(&base, &data, &out, &options, key.as_ref(), resume, |e| {
                if let (Some(cb), None) = (&progress, &callback_error) {
                    Python::attach(|py| {
                        let result = event_dict(py, e).and_then(|d| cb.call1(py, (d,)));
                        if let Err(err) = result {
                            callback_error = Some(err);
                        }
                    });
                }
            })
        })
        .map_err(py_err)?;
    if let Some(err) = callback_error {
        return Err(err);
    }
    let json = serde_json::to_string(&report).map_err(|e| PyValueError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (json,))
}

/// A progress event as a dict.
fn event_dict<'py>(py: Python<'py>, e: &FinetuneEvent) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match e {
        FinetuneEvent::Start {
            train_examples,
            held_out,
            eval_loss,
        } => {
            d.set_item("event", "start")?;
            d.set_item("train_examples", train_examples)?;
            d.set_item("held_out", held_out)?;
            d.set_item("eval_loss", eval_loss)?;
        }
        FinetuneEvent::Step(s) => {
            d.set_item("event", "step")?;
            d.set_item("step", s.step)?;
            d.set_item("total_steps", s.total_steps)?;
            d.set_item("epoch", s.epoch)?;
            d.set_item("loss", s.loss)?;
            d.set_item("learning_rate", s.learning_rate)?;
            d.set_item("tokens_per_second", s.tokens_per_second())?;
        }
        FinetuneEvent::Epoch {
            epoch,
            train_loss,
            eval_loss,
        } => {
            d.set_item("event", "epoch")?;
            d.set_item("epoch", epoch)?;
            d.set_item("train_loss", train_loss)?;
            d.set_item("eval_loss", eval_loss)?;
        }
    }
    Ok(d)
}
