//! `tribute models`: models from the Hugging Face hub.

use clap::{Args, Subcommand};
use tribute::hub::{ModelSpec, Verification};

/// `tribute models …`.
#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Download a model from the Hugging Face hub, verify it and export it once (cached
    /// by commit: pulling it again is instant and needs no network).
    Pull(PullArgs),
}

#[derive(Args)]
pub struct PullArgs {
    /// ORG/NAME[/FILE.gguf][@REVISION][:OPTIONS], e.g. HuggingFaceTB/SmolLM2-135M-Instruct@main
    /// (revision: a branch, tag or commit; default main; FILE picks one GGUF of several;
    /// OPTIONS what it is exported as, comma-separated: int8 or int4 weights, fused or static
    /// attention, fp16 compute, e.g. :int4 for a CPU, :static,fp16 for a GPU; default fp32
    /// weights, portable attention).
    spec: String,
    /// The hub's URL, e.g. a mirror (default: $HF_ENDPOINT, else https://huggingface.co).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// Ask the hub where the branch or tag points now, even if an export is cached.
    #[arg(long)]
    refresh: bool,
    /// Print the result as JSON (and no progress bars).
    #[arg(long)]
    json: bool,
}

pub fn run(c: ModelsCommand) -> anyhow::Result<()> {
    match c {
        ModelsCommand::Pull(a) => pull(a),
    }
}

fn pull(a: PullArgs) -> anyhow::Result<()> {
    let spec: ModelSpec = a.spec.parse()?;
    let mut pull = spec.pull().refresh(a.refresh).progress(!a.json);
    if let Some(url) = a.endpoint {
        pull = pull.endpoint(url);
    }
    let model = pull.run()?;
    if a.json {
        let mut v = serde_json::to_value(&model)?;
        v["cached"] = model.cached.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let verified = model
        .files
        .iter()
        .filter(|f| f.verification != Verification::Unverified)
        .count();
    if model.cached {
        println!("{spec} is already pulled (commit {})", model.commit);
    } else {
        println!(
            "pulled {spec} (commit {}): {} file(s), {verified} verified against the hub's hashes",
            model.commit,
            model.files.len()
        );
    }
    println!("{}", model.dir.display());
    println!(
        "use it with --model {} or `model = \"hf:{spec}\"` in a config",
        model.dir.display()
    );
    Ok(())
}
