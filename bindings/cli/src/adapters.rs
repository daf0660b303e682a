//! `tribute adapters`: fine-tuned adapters and their provenance manifests.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tribute::attribution::provenance::SignedProvenance;

/// `tribute adapters …`.
#[derive(Subcommand)]
pub enum AdaptersCommand {
    /// Provenance manifests (`provenance.json`) of fine-tuned adapters.
    #[command(subcommand)]
    Provenance(ProvenanceCommand),
}

/// `tribute adapters provenance …`.
#[derive(Subcommand)]
pub enum ProvenanceCommand {
    /// Check an adapter directory's provenance.json: its schema and token shares, the
    /// trainer's signature, and that the adapter files are the ones it names.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The PEFT adapter directory (adapter_config.json, adapter_model.safetensors,
    /// provenance.json).
    dir: PathBuf,
    /// Print the summary and verdict as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(c: AdaptersCommand) -> anyhow::Result<()> {
    match c {
        AdaptersCommand::Provenance(ProvenanceCommand::Verify(a)) => verify(&a),
    }
}

fn verify(a: &VerifyArgs) -> anyhow::Result<()> {
    let signed = SignedProvenance::read(&a.dir)?;
    let m = &signed.manifest;
    let verdict = signed.verify(&a.dir);
    if a.json {
        let v = serde_json::json!({
            "dir": a.dir,
            "manifest_hash": m.hash(),
            "trainer": m.trainer.to_checksum(None),
            "base_model": m.base_model,
            "documents": m.documents.len(),
            "total_tokens": m.total_tokens,
            "contributors": m.contributors,
            "verified": verdict.is_ok(),
            "error": verdict.as_ref().err().map(ToString::to_string),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("adapter      {}", a.dir.display());
        println!("manifest     {} (schema {})", m.hash(), m.schema);
        println!("base model   {} ({})", m.base_model.id, m.base_model.hash);
        println!("trainer      {}", m.trainer.to_checksum(None));
        let t = &m.training;
        println!(
            "training     rank {} alpha {} on {}, lr {} ({}), {} epoch(s), {} steps, batch {}, seed {}, max length {}",
            t.rank,
            t.alpha,
            t.target_modules.join(","),
            t.learning_rate,
            t.lr_schedule,
            t.epochs,
            t.steps,
            t.batch_size,
            t.seed,
            t.max_length
        );
        println!(
            "data         {} document(s), {} tokens, {} contributor(s)",
            m.documents.len(),
            m.total_tokens,
            m.contributors.len()
        );
        for c in &m.contributors {
            println!(
                "  {}  {:>12} tokens  {:>6.2} %",
                c.address.to_checksum(None),
                c.tokens,
                f64::from(c.share_bps) / 100.0
            );
        }
    }
    match verdict {
        Ok(_) => {
            if !a.json {
                println!("verdict      OK: signed by the trainer, adapter files match");
            }
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(
            "provenance of {} does not verify: {e}",
            a.dir.display()
        )),
    }
}
