//! Generation benchmark: prints a table of prefill and decode speed for SmolLM2-135M on
//! this machine (fp32 and fp16 weights, batch 1 and 4, greedy), next to a plain Python
//! onnxruntime loop on the same model directory (`python_generate_baseline.py`, same
//! threads) and onnxruntime-genai when installed; then the adapter numbers: switch
//! overhead between two resident adapters, cold load of an r=8 PEFT adapter, and memory
//! with 1,000 synthetic adapters registered and 16 resident.
//!
//! `cargo bench -p tribute-inference --bench generation` (after `make setup`).
//! Environment: `BENCH_NEW` (new tokens, default 32), `BENCH_REPS` (default 3),
//! `BENCH_THREADS` (default: all cores), `TRIBUTE_PYTHON` (the exporter's venv by default).
//!
//! `BENCH_PEERS=NAME=DIR,...` puts those model directories in the table against the same
//! peers instead of the default models, and stops after it.
//!
//! With `BENCH_MODEL=DIR` it measures that one model instead (no Python peer):
//! `BENCH_DEVICE` (`cpu`, `cuda`, `cuda:N`), `BENCH_BATCHES` (default `1,8,32`), then the
//! adapter switch time on it; `BENCH_PROMPT_TOKENS=N` repeats the prompt's tokens to N (a
//! RAG-sized prompt); `BENCH_CUDA_GRAPHS` (`on`, `off`; default: the generator's choice, on
//! for a static export on CUDA); `BENCH_CALLERS=N` adds N concurrent callers against the same
//! N one after another; `BENCH_BANDWIDTH=BYTES_PER_S` prints batch 1's step against the floor
//! the weights' bytes set at that bandwidth; `BENCH_PREFILL_CHUNK=N` prompt tokens per prefill
//! pass (0: whole prompts). `inference/benches/gpu.sh` uses this mode.
//! With `BENCH_ADAPTERS=DIR,DIR,...` (PEFT directories) it measures instead batches whose
//! rows take those adapters in turn (row i: adapter i mod n), with `BENCH_SLOTS` adapter
//! slots (default 0: one running batch per adapter) and `BENCH_SLOT_RANK` (default 16).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tribute_inference::adapter::AdapterId;
use tribute_inference::{
    DEFAULT_PREFILL_CHUNK, GenerateRequest, Generator, GeneratorOptions, Prompt,
};

fn env_f64(k: &str) -> Option<f64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn python() -> PathBuf {
    std::env::var_os("TRIBUTE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            tribute_common::tribute_home()
                .join("venv")
                .join("bin")
                .join("python")
        })
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

const PROMPT: &str = "You are given notes about a drone maker. The Zephyr drones use lithium-sulfur cells; \
store them at forty percent charge when grounded for more than a week. A full charge takes ninety minutes \
on the standard dock. Pilots should land when gusts exceed sixty kilometres per hour because the rotors \
saturate. Using only these notes, explain how to care for the batteries and when to land.";

struct Row {
    label: String,
    prefill_tps: f64,
    decode_tps: f64,
}

fn bench_rust(g: &Generator, ids: &[u32], batch: usize, new: usize, reps: usize) -> Row {
    let reqs: Vec<GenerateRequest> = (0..batch)
        .map(|_| {
            GenerateRequest::new(Prompt::Tokens(ids.to_vec()))
                .max_tokens(new)
                .ignore_eos(true)
        })
        .collect();
    // Warm-up.
    let _ = g.generate_batch(&reqs);
    let mut pre = Vec::new();
    let mut dec = Vec::new();
    for _ in 0..reps {
        let out = g.generate_batch(&reqs);
        let t = out[0].as_ref().expect("generation").timings;
        pre.push((batch * ids.len()) as f64 / t.prefill.as_secs_f64());
        dec.push((batch * t.decode_tokens) as f64 / t.decode.as_secs_f64());
    }
    Row {
        label: String::new(),
        prefill_tps: median(pre),
        decode_tps: median(dec),
    }
}

fn bench_python(
    dir: &Path,
    ids: &[u32],
    batch: usize,
    new: usize,
    threads: usize,
    reps: usize,
    genai: bool,
) -> Option<Row> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_generate_baseline.py");
    let ids_arg = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .arg(dir)
        .arg(ids_arg)
        .args([new, batch, threads, reps].map(|n| n.to_string()));
    if genai {
        cmd.arg("--genai");
    }
    let out = cmd.output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok().or_else(|| {
        eprintln!(
            "python baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        None
    })?;
    if let Some(e) = v.get("error") {
        eprintln!("python baseline: {e}");
        return None;
    }
    Some(Row {
        label: v["runtime"].as_str().unwrap_or("python").to_owned(),
        prefill_tps: v["prefill_tokens_per_s"].as_f64()?,
        decode_tps: v["decode_tokens_per_s"].as_f64()?,
    })
}

fn fp16_dir(fp32: &Path) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-models/SmolLM2-135M-Instruct-fp16");
    if dir.join("tribute.json").is_file() {
        return Some(dir);
    }
    let gguf = tribute_common::tribute_home().join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    let _ = fp32;
    let st = Command::new(python())
        .args(["-m", "tribute_export", "--source"])
        .arg(&gguf)
        .arg("--out")
        .arg(&dir)
        .args(["--dtype", "fp16"])
        .status()
        .ok()?;
    st.success().then_some(dir)
}

/// Writes a random r=8 PEFT adapter over q_proj and v_proj of every layer.
fn synthetic_adapter(dir: &Path, g: &Generator, seed: u64) {
    use safetensors::tensor::{Dtype, TensorView};
    std::fs::create_dir_all(dir).expect("mkdir");
    let r = 8usize;
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut rnd = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for m in &g.config().lora.modules {
        if !(m.module.ends_with("q_proj") || m.module.ends_with("v_proj")) {
            continue;
        }
        let a: Vec<u8> = (0..r * m.in_features)
            .flat_map(|_| rnd().to_le_bytes())
            .collect();
        let b: Vec<u8> = (0..m.out_features * r)
            .flat_map(|_| rnd().to_le_bytes())
            .collect();
        tensors.push((
            format!("base_model.model.{}.lora_A.weight", m.module),
            vec![r, m.in_features],
            a,
        ));
        tensors.push((
            format!("base_model.model.{}.lora_B.weight", m.module),
            vec![m.out_features, r],
            b,
        ));
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("adapter_model.safetensors"))
        .expect("write");
    let cfg = serde_json::json!({
        "peft_type": "LORA", "r": r, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": g.config().name,
    });
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).expect("write config");
}

/// Registers two synthetic adapters `a` and `b` (in `dir`) and returns the median time of
/// a 1-token request alternating between them, and always on `a`.
fn switch_overhead(g: &Generator, dir: &Path, ids: &[u32]) -> (f64, f64) {
    synthetic_adapter(&dir.join("a"), g, 1);
    synthetic_adapter(&dir.join("b"), g, 2);
    g.add_adapter("a", dir.join("a")).expect("register");
    g.add_adapter("b", dir.join("b")).expect("register");
    let one = |id: &str| {
        GenerateRequest::new(Prompt::Tokens(ids.to_vec()))
            .max_tokens(1)
            .adapter(id, 1.0)
    };
    let _ = g.generate(&one("a"));
    let _ = g.generate(&one("b"));
    let time_reqs = |ids: &[&str]| {
        let mut v = Vec::new();
        for id in ids {
            let t0 = Instant::now();
            g.generate(&one(id)).expect("generate");
            v.push(t0.elapsed().as_secs_f64());
        }
        median(v)
    };
    let same: Vec<&str> = vec!["a"; 40];
    let alternating: Vec<&str> = (0..40)
        .map(|i| if i % 2 == 0 { "a" } else { "b" })
        .collect();
    let t_same = time_reqs(&same);
    (time_reqs(&alternating), t_same)
}

/// `BENCH_CALLERS=N`: N callers at once, each asking for one answer from a thread of its own
/// (batched by the queue; with fixed decode steps every run goes through the engine's thread),
/// against the same N requests one after another; says whether every answer was the same
/// greedy one and whether CUDA graphs were still being captured after.
fn concurrent_callers(g: &Generator, ids: &[u32], callers: usize, new: usize, reps: usize) {
    let req = GenerateRequest::new(Prompt::Tokens(ids.to_vec()))
        .max_tokens(new)
        .ignore_eos(true);
    let want = g.generate(&req).expect("generate").tokens;
    let (mut seq, mut conc, mut same) = (Vec::new(), Vec::new(), true);
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..callers {
            same &= g.generate(&req).expect("generate").tokens == want;
        }
        seq.push((callers * new) as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let got: Vec<Vec<u32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..callers)
                .map(|_| s.spawn(|| g.generate(&req).expect("generate").tokens))
                .collect();
            hs.into_iter().map(|h| h.join().expect("caller")).collect()
        });
        conc.push((callers * new) as f64 / t.elapsed().as_secs_f64());
        same &= got.iter().all(|t| *t == want);
    }
    println!(
        "
{callers} callers of {new} tokens: one after another {:.1} tok/s; at once, each from a thread of its own, {:.1} tok/s; every answer the same: {}; CUDA graphs after: {}",
        median(seq),
        median(conc),
        if same { "yes" } else { "NO" },
        if g.captures_cuda_graphs() { "on" } else { "off" }
    );
}

/// `BENCH_MODEL` mode: one model, one device, several batch sizes, then adapter switching.
fn device_bench(model: PathBuf) {
    let new = env_usize("BENCH_NEW", 32);
    let reps = env_usize("BENCH_REPS", 3);
    let device: tribute_inference::Device = std::env::var("BENCH_DEVICE")
        .unwrap_or_else(|_| "cpu".into())
        .parse()
        .expect("BENCH_DEVICE");
    let batches: Vec<usize> = std::env::var("BENCH_BATCHES")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .collect();
    let adapters: Vec<PathBuf> = std::env::var("BENCH_ADAPTERS")
        .unwrap_or_default()
        .split(',')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    let t0 = Instant::now();
    let g = Generator::load_with(
        &model,
        GeneratorOptions {
            device,
            intra_threads: std::env::var("BENCH_THREADS")
                .ok()
                .and_then(|t| t.parse().ok()),
            adapter_slots: env_usize("BENCH_SLOTS", 0),
            slot_rank: env_usize("BENCH_SLOT_RANK", 16),
            cuda_graphs: match std::env::var("BENCH_CUDA_GRAPHS").as_deref() {
                Ok("on") => Some(true),
                Ok("off") => Some(false),
                _ => None,
            },
            prefill_chunk: env_usize("BENCH_PREFILL_CHUNK", DEFAULT_PREFILL_CHUNK),
            ..Default::default()
        },
    )
    .expect("load model");
    for (i, d) in adapters.iter().enumerate() {
        g.add_adapter(format!("a{i}"), d).expect("register adapter");
    }
    let mut ids = g
        .prompt_tokens(&Prompt::Text(PROMPT.to_owned()))
        .expect("tokenize");
    // A RAG-sized prompt: the chat prompt's tokens repeated to the length asked for.
    if let Some(n) = std::env::var("BENCH_PROMPT_TOKENS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        ids = ids.iter().copied().cycle().take(n).collect();
    }
    println!(
        "# {} on {:?} (asked {device:?}), CUDA graphs {}, loaded in {:.1} s; {} prompt tokens, {new} new tokens, median of {reps}\n",
        model.display(),
        g.device(),
        if g.captures_cuda_graphs() {
            "on"
        } else {
            "off"
        },
        t0.elapsed().as_secs_f64(),
        ids.len()
    );
    println!(
        "| batch | prefill tok/s | decode tok/s (all rows) | decode ms/step |\n|---|---|---|---|"
    );
    if !adapters.is_empty() {
        println!(
            "\nrows take {} adapters in turn, {} adapter slots",
            adapters.len(),
            env_usize("BENCH_SLOTS", 0)
        );
        println!("| batch | wall ms | tokens/s (all rows) |\n|---|---|---|");
        for b in batches {
            let reqs: Vec<GenerateRequest> = (0..b)
                .map(|i| {
                    GenerateRequest::new(Prompt::Tokens(ids.clone()))
                        .max_tokens(new)
                        .ignore_eos(true)
                        .adapter(format!("a{}", i % adapters.len()), 1.0)
                })
                .collect();
            let _ = g.generate_batch(&reqs);
            let mut wall = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                for r in g.generate_batch(&reqs) {
                    r.expect("generation");
                }
                wall.push(t.elapsed().as_secs_f64());
            }
            let w = median(wall);
            println!("| {b} | {:.0} | {:.1} |", w * 1e3, (b * new) as f64 / w);
        }
        return;
    }
    let mut batch1_step = None;
    for b in batches {
        let r = bench_rust(&g, &ids, b, new, reps);
        let step_ms = 1e3 * b as f64 / r.decode_tps;
        println!(
            "| {b} | {:.0} | {:.1} | {step_ms:.2} |",
            r.prefill_tps, r.decode_tps
        );
        if b == 1 {
            batch1_step = Some(step_ms);
        }
    }
    if let (Some(bw), Some(step_ms)) = (env_f64("BENCH_BANDWIDTH"), batch1_step) {
        // A batch-1 step reads every weight once: the weights' bytes over the card's
        // bandwidth are the floor of a step.
        let weights = std::fs::metadata(model.join("model.onnx.data"))
            .map(|m| m.len() as f64)
            .unwrap_or(0.0);
        let floor_ms = 1e3 * weights / bw;
        println!(
            "\nbatch 1: {step_ms:.2} ms/step; weights {:.2} GiB, floor {floor_ms:.2} ms/step at {:.2} TB/s: {:.0} % of the bandwidth limit",
            weights / (1u64 << 30) as f64,
            bw / 1e12,
            100.0 * floor_ms / step_ms
        );
    }
    let callers = env_usize("BENCH_CALLERS", 0);
    if callers > 0 {
        concurrent_callers(&g, &ids, callers, new, reps);
    }
    if g.config().lora.modules.is_empty() {
        println!("\nno adapter switch: the model takes no adapters (no LoRA inputs)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (t_alt, t_same) = switch_overhead(&g, tmp.path(), &ids[..8.min(ids.len())]);
    println!(
        "\nadapter switch (1-token requests, alternating a/b minus always a): {:.3} ms ({:.2} vs {:.2} ms per request)",
        (t_alt - t_same) * 1e3,
        t_alt * 1e3,
        t_same * 1e3
    );
}

fn main() {
    if let Some(model) = std::env::var_os("BENCH_MODEL") {
        return device_bench(PathBuf::from(model));
    }
    let new = env_usize("BENCH_NEW", 32);
    let reps = env_usize("BENCH_REPS", 3);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = env_usize("BENCH_THREADS", cores);
    let fp32 = tribute_inference::default_model_dir();
    assert!(
        fp32.join("model.onnx").is_file(),
        "run `make setup` first: {} is missing",
        fp32.display()
    );
    let opts = GeneratorOptions {
        intra_threads: Some(threads),
        ..Default::default()
    };

    println!(
        "# tribute-inference generation benchmark ({cores} cores, {threads} threads, greedy, {new} new tokens, median of {reps})\n"
    );
    println!("| model | batch | runtime | prefill tok/s | decode tok/s | decode vs python ORT |");
    println!("|---|---|---|---|---|---|");
    // `BENCH_PEERS=NAME=DIR,...`: these model directories instead (then only this table).
    let peers: Option<Vec<(String, PathBuf)>> = std::env::var("BENCH_PEERS").ok().map(|v| {
        v.split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(name, dir)| (name.to_owned(), PathBuf::from(dir)))
            .collect()
    });
    let mut models = vec![("SmolLM2-135M fp32".to_owned(), fp32.clone())];
    if let Some(p) = &peers {
        models.clone_from(p);
    } else if let Some(d) = fp16_dir(&fp32) {
        models.push(("SmolLM2-135M fp16".to_owned(), d));
    }
    for (name, dir) in &models {
        let g = Generator::load_with(dir, opts.clone()).expect("load model");
        let ids = g.prompt_tokens(&Prompt::from(PROMPT)).expect("tokenize");
        for batch in [1usize, 4] {
            // Interleave the runs (ours, the peer's, ours, ...) so that the machine's drift
            // hits both alike; each Python run is a fresh process (2 reps, median).
            let mut runs = Vec::new();
            let mut peer = Vec::new();
            for _ in 0..reps {
                runs.push(bench_rust(&g, &ids, batch, new, 2));
                peer.extend(bench_python(dir, &ids, batch, new, threads, 2, false));
            }
            let mid = |v: &[Row], f: fn(&Row) -> f64| median(v.iter().map(f).collect());
            let ours = Row {
                label: String::new(),
                prefill_tps: mid(&runs, |r| r.prefill_tps),
                decode_tps: mid(&runs, |r| r.decode_tps),
            };
            let py = (!peer.is_empty()).then(|| Row {
                label: peer[0].label.clone(),
                prefill_tps: mid(&peer, |r| r.prefill_tps),
                decode_tps: mid(&peer, |r| r.decode_tps),
            });
            let ratio = py.as_ref().map_or("n/a".to_owned(), |p| {
                format!("{:.2}x", ours.decode_tps / p.decode_tps)
            });
            println!(
                "| {name} ({} prompt tokens) | {batch} | tribute | {:.0} | {:.1} | {ratio} |",
                ids.len(),
                ours.prefill_tps,
                ours.decode_tps
            );
            if let Some(p) = py {
                println!(
                    "| | {batch} | {} | {:.0} | {:.1} | 1.00x |",
                    p.label, p.prefill_tps, p.decode_tps
                );
            }
            if let Some(p) = bench_python(dir, &ids, batch, new, threads, reps, true) {
                println!(
                    "| | {batch} | {} | {:.0} | {:.1} | |",
                    p.label, p.prefill_tps, p.decode_tps
                );
            }
        }
    }

    if peers.is_some() {
        return;
    }

    // Concurrent callers: 4 threads each calling `generate`, batched by the queue, against
    // the same 4 requests one after another.
    let g = Generator::load_with(&fp32, opts.clone()).expect("load model");
    let ids = g.prompt_tokens(&Prompt::from(PROMPT)).expect("tokenize");
    let req = GenerateRequest::new(Prompt::Tokens(ids.clone()))
        .max_tokens(new)
        .ignore_eos(true);
    let _ = g.generate(&req);
    let mut seq = Vec::new();
    let mut conc = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        for _ in 0..4 {
            g.generate(&req).expect("generate");
        }
        seq.push((4 * new) as f64 / t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| g.generate(&req).expect("generate"));
            }
        });
        conc.push((4 * new) as f64 / t0.elapsed().as_secs_f64());
    }
    println!(
        "\n4 requests of {new} tokens, end to end: one after another {:.1} tok/s; from 4 threads at once (batched by the queue) {:.1} tok/s",
        median(seq),
        median(conc)
    );

    // Adapters on the fp32 model.
    let tmp = tempfile::tempdir().expect("tempdir");
    let ids = g.prompt_tokens(&Prompt::from("Hi")).expect("tokenize");
    let (t_alt, t_same) = switch_overhead(&g, tmp.path(), &ids);
    let act_a =
        tribute_inference::AdapterSet::new([(AdapterId::new("a").expect("id"), 1.0)]).expect("set");
    let act_b =
        tribute_inference::AdapterSet::new([(AdapterId::new("b").expect("id"), 1.0)]).expect("set");
    let t0 = Instant::now();
    for i in 0..100_000 {
        let _ = g
            .adapters()
            .activate(if i % 2 == 0 { &act_a } else { &act_b });
    }
    let activate = t0.elapsed() / 100_000;
    println!("\n| adapter metric | value |\n|---|---|");
    println!(
        "| switch between two resident adapters: registry lookup | {} ns |",
        activate.as_nanos()
    );
    println!(
        "| switch between two resident adapters: 1-token request, alternating minus same | {:.3} ms ({:.1} vs {:.1} ms per request) |",
        (t_alt - t_same) * 1e3,
        t_alt * 1e3,
        t_same * 1e3
    );
    // Cold load of the shared r=8 PEFT adapters (and a synthetic one).
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/adapters");
    let mut cold: Vec<(String, PathBuf)> = vec![("synthetic r=8 q,v".into(), tmp.path().join("a"))];
    for name in ["smollm2-135m-zephyr-lora", "smollm2-135m-caps-lora"] {
        if shared.join(name).is_dir() {
            cold.push((name.to_owned(), shared.join(name)));
        }
    }
    for (label, path) in cold {
        let id = AdapterId::new(format!("cold-{label}")).expect("id");
        g.add_adapter(id.as_str(), &path).expect("register");
        let mut v = Vec::new();
        for _ in 0..20 {
            g.adapters().unload(&id);
            let t0 = Instant::now();
            g.adapters().get(&id).expect("load");
            v.push(t0.elapsed().as_secs_f64());
        }
        println!("| cold load, {label} | {:.2} ms |", median(v) * 1e3);
    }
    // 1,000 registered, 16 resident.
    let many = tempfile::tempdir().expect("tempdir");
    // Budget: exactly 16 synthetic adapters (r=8 on q_proj and v_proj of every layer).
    let per_adapter: usize = g
        .config()
        .lora
        .modules
        .iter()
        .filter(|m| m.module.ends_with("q_proj") || m.module.ends_with("v_proj"))
        .map(|m| 4 * 8 * (m.in_features + m.out_features))
        .sum();
    let gm = Generator::load_with(
        &fp32,
        GeneratorOptions {
            adapter_budget_bytes: 16 * per_adapter,
            ..opts.clone()
        },
    )
    .expect("load model");
    synthetic_adapter(&many.path().join("proto"), &gm, 3);
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    for i in 0..1000 {
        let d = many.path().join(format!("a{i}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::hard_link(many.path().join("proto").join(f), d.join(f)).expect("link");
        }
        gm.add_adapter(format!("a{i}"), &d).expect("register");
    }
    let register = t0.elapsed();
    let rss1 = rss_bytes();
    for i in 0..24 {
        gm.adapters()
            .get(&AdapterId::new(format!("a{i}")).expect("id"))
            .expect("load");
    }
    let rss2 = rss_bytes();
    let st = gm.adapters().stats();
    println!(
        "| 1,000 registered ({:.1} ms to register): RSS +{:.1} MiB | {} resident, {:.1} MiB of adapters, RSS +{:.1} MiB |",
        register.as_secs_f64() * 1e3,
        (rss1 as f64 - rss0 as f64) / 1048576.0,
        st.resident,
        st.resident_bytes as f64 / 1048576.0,
        (rss2 as f64 - rss0 as f64) / 1048576.0
    );
    let _ = Duration::ZERO;
}
