//! `tribute generate`: run the local LM, optionally with LoRA adapters.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use tribute::inference::{Device, GenerateRequest, Generator, GeneratorOptions};

/// Arguments of `tribute generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// Model directory (default: $TRIBUTE_HOME/models/SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// LoRA adapter: a PEFT directory or an .onnx_adapter file (repeatable).
    #[arg(long = "adapter")]
    adapters: Vec<PathBuf>,
    /// Merge weight of each --adapter, in the same order (default 1.0 each).
    #[arg(long = "adapter-weight")]
    weights: Vec<f32>,
    /// Most new tokens.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Top-k cut (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Top-p cut (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Treat the prompt as raw text instead of a chat message.
    #[arg(long)]
    raw: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Decode steps as CUDA graphs: on or off (default: on for a --ops static export on
    /// CUDA).
    #[arg(long, value_parser = ["on", "off"])]
    cuda_graphs: Option<String>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    /// The prompt.
    prompt: String,
}

/// Runs `tribute generate`.
pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    let dir = a
        .model
        .clone()
        .unwrap_or_else(tribute::inference::default_model_dir);
    if !a.weights.is_empty() && a.weights.len() != a.adapters.len() {
        bail!(
            "{} --adapter-weight values for {} --adapter paths: give one weight per adapter, or none",
            a.weights.len(),
            a.adapters.len()
        );
    }
    let device: Device = a.device.parse()?;
    let generator = Generator::load_with(
        &dir,
        GeneratorOptions {
            device,
            cuda_graphs: a.cuda_graphs.as_deref().map(|g| g == "on"),
            ..Default::default()
        },
    )
    .with_context(|| format!("loading {}", dir.display()))?;
    let prompt = if a.raw {
        tribute::inference::Prompt::Text(a.prompt.clone())
    } else {
        a.prompt.clone().into()
    };
    let mut req = GenerateRequest::new(prompt)
        .max_tokens(a.max_tokens)
        .temperature(a.temperature)
        .top_k(a.top_k)
        .top_p(a.top_p)
        .repetition_penalty(a.repetition_penalty)
        .seed(a.seed);
    for s in &a.stop {
        req = req.stop(s.clone());
    }
    let mut adapter_names = Vec::new();
    for (i, path) in a.adapters.iter().enumerate() {
        let id = format!("{i}:{}", path.display());
        generator.add_adapter(id.clone(), path)?;
        let w = a.weights.get(i).copied().unwrap_or(1.0);
        req = req.adapter(id, w);
        adapter_names.push(serde_json::json!({"path": path, "weight": w}));
    }
    if a.json {
        let g = generator.generate(&req)?;
        let out = serde_json::json!({
            "text": g.text,
            "tokens": g.tokens.len(),
            "token_ids": g.tokens,
            "prompt_tokens": g.prompt_tokens,
            "finish_reason": g.finish_reason,
            "prefill_ms": g.timings.prefill.as_secs_f64() * 1e3,
            "decode_tokens_per_s": g.timings.decode_tokens_per_s(),
            "adapters": adapter_names,
            "device": generator.device(),
            "cuda_graphs": generator.captures_cuda_graphs(),
        });
        println!("{out}");
        return Ok(());
    }
    let mut stream = generator.stream(&req)?;
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    for piece in stream.by_ref() {
        lock.write_all(piece?.as_bytes())?;
        lock.flush()?;
    }
    writeln!(lock)?;
    if let Some(g) = stream.generation() {
        eprintln!(
            "[{} prompt tokens, {} generated, prefill {:.0} ms, {:.1} tokens/s, {:?}]",
            g.prompt_tokens,
            g.tokens.len(),
            g.timings.prefill.as_secs_f64() * 1e3,
            g.timings.decode_tokens_per_s(),
            g.finish_reason
        );
    }
    Ok(())
}
