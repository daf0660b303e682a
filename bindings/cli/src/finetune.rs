//! `tribute finetune`: LoRA fine-tuning of a model directory's source checkpoint on a JSONL
//! file or a datanet ([`tribute::finetune::finetune`] does the work).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tribute::finetune::{FinetuneData, FinetuneEvent, FinetuneOptions, finetune};
use tribute::inference::finetune::{LoraConfig, Schedule, TrainOptions};

use crate::keys::KeyArgs;

#[derive(Args)]
pub struct FinetuneArgs {
    /// Training examples, one JSON object a line: {"question","answer"}, {"messages":[…]} or
    /// {"id","text","contributor","datanet"}.
    #[arg(
        long,
        value_name = "FILE.jsonl",
        required_unless_present = "kb",
        conflicts_with = "kb"
    )]
    data: Option<PathBuf>,
    /// Train on the documents of a knowledge base's datanet (with --datanet).
    #[arg(long, value_name = "KB", requires = "datanet")]
    kb: Option<PathBuf>,
    /// The datanet to train on (with --kb); with --data, the datanet recorded for lines
    /// that name none.
    #[arg(long)]
    datanet: Option<String>,
    /// The exported model directory to adapt (its tribute.json names the source checkpoint).
    #[arg(long, value_name = "MODEL_DIR")]
    base: Option<PathBuf>,
    /// Where to write the adapter (adapter_config.json, adapter_model.safetensors,
    /// provenance.json) and its checkpoint.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha (each delta is scaled by alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    /// Modules to adapt, comma-separated (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    targets: Vec<String>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning-rate decay after warmup: constant, linear or cosine.
    #[arg(long, default_value = "cosine", value_parser = parse_schedule)]
    schedule: Schedule,
    /// Warmup steps.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Passes over the training examples.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Examples per optimizer step.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Seed of the initialisation, shuffling and held-out split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Longest example in tokens (longer ones are cut, and counted).
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    /// Share of the examples held out for the evaluation loss, in percent.
    #[arg(long, default_value_t = 10.0)]
    held_out: f64,
    /// Stop after this many epochs without a lower held-out loss (0: never early).
    #[arg(long, default_value_t = 2)]
    patience: usize,
    /// Continue the interrupted run whose checkpoint is in --out.
    #[arg(long)]
    resume: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The trainer's key signs provenance.json (without one, no manifest is written).
    #[command(flatten)]
    key: KeyArgs,
}

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    s.parse()
        .map_err(|e: tribute::inference::Error| e.to_string())
}

pub fn run(a: FinetuneArgs) -> anyhow::Result<()> {
    let data = match (&a.data, &a.kb) {
        (Some(path), _) => FinetuneData::Jsonl(path.clone()),
        (None, Some(kb)) => FinetuneData::KnowledgeBase {
            kb: kb.clone(),
            datanet: a.datanet.clone().unwrap_or_default(),
        },
        (None, None) => anyhow::bail!("give --data FILE.jsonl or --kb KB --datanet NAME"),
    };
    let mut options = FinetuneOptions {
        lora: LoraConfig {
            rank: a.rank,
            alpha: a.alpha,
            target_modules: a.targets.clone(),
        },
        train: TrainOptions {
            learning_rate: a.lr,
            epochs: a.epochs,
            max_steps: a.steps,
            batch_size: a.batch,
            warmup_steps: a.warmup,
            schedule: a.schedule,
            seed: a.seed,
            ..TrainOptions::default()
        },
        max_length: a.max_len,
        eval_split_bps: 0,
        patience: (a.patience > 0).then_some(a.patience),
        default_datanet: a.datanet.clone().unwrap_or_else(|| "default".into()),
    };
    options
        .set_held_out_percent(a.held_out)
        .context("--held-out")?;
    let key = a.key.load_optional()?;
    if key.is_none() {
        eprintln!(
            "no trainer key (TRIBUTE_KEY, --key-file or --keystore): provenance.json is not written"
        );
    }
    let base = a
        .base
        .clone()
        .unwrap_or_else(tribute::inference::default_model_dir);
    let report = finetune(
        &base,
        &data,
        &a.out,
        &options,
        key.as_ref(),
        a.resume,
        progress,
    )?;
    eprintln!();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let loss = |l: Option<f32>| l.map_or("-".to_owned(), |l| format!("{l:.4}"));
    println!("adapter      {}", report.adapter_dir.display());
    println!(
        "examples     {} ({} trained, {} held out, {} truncated to {} tokens)",
        report.examples, report.train_examples, report.held_out, report.truncated, a.max_len
    );
    println!(
        "steps        {} in {} epoch(s){}{}",
        report.steps,
        report.epochs,
        if report.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        if report.resumed { ", resumed" } else { "" }
    );
    println!(
        "held-out     loss {} → {}",
        loss(report.eval_loss_before),
        loss(report.eval_losses.last().copied())
    );
    if let Some(kept) = report.kept {
        println!(
            "kept         epoch {} of {} (held-out loss {}){}",
            kept.epoch,
            report.epochs,
            loss(kept.eval_loss),
            if kept.epoch < report.epochs {
                ": the lowest held-out loss; later epochs did worse"
            } else {
                ""
            }
        );
    }
    println!(
        "speed        {:.1} tokens/s over {:.1} s",
        report.tokens_per_second, report.seconds
    );
    if let Some(h) = report.provenance_hash {
        println!("provenance   {h}");
    }
    Ok(())
}

/// The progress line on stderr: step, loss, tokens/s, ETA; a line per epoch.
fn progress(e: &FinetuneEvent) {
    let mut err = std::io::stderr().lock();
    // A progress line that cannot be printed is not worth stopping the run.
    let _ = match e {
        FinetuneEvent::Start {
            train_examples,
            held_out,
            eval_loss,
        } => writeln!(
            err,
            "training on {train_examples} examples, {held_out} held out{}",
            eval_loss.map_or(String::new(), |l| format!(", held-out loss {l:.4}"))
        ),
        FinetuneEvent::Step(s) => write!(
            err,
            "\rstep {}/{}  epoch {}  loss {:.4}  lr {:.2e}  {:.1} tok/s  ETA {:.0}s   ",
            s.step,
            s.total_steps,
            s.epoch,
            s.loss,
            s.learning_rate,
            s.tokens_per_second(),
            s.eta_s()
        ),
        FinetuneEvent::Epoch {
            epoch,
            train_loss,
            eval_loss,
        } => writeln!(
            err,
            "\nepoch {epoch}: train loss {train_loss:.4}{}",
            eval_loss.map_or(String::new(), |l| format!(", held-out loss {l:.4}"))
        ),
    };
}
