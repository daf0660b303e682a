//! Mechanics on a tiny random llama (2 layers, hidden 64, GQA 4/2 heads, vocab 300, byte-level
//! tokenizer), exported once per test binary by `tribute_export` from a Hugging Face directory
//! that `inference/export/tests/reference_logits.py` writes with the exporter tests' weights.
//! The same script's independent numpy forward pass is the reference for logits and LoRA.
//!
//! KV cache, batching, streaming, stop strings, cancellation, sampling, LoRA (PEFT and
//! `.onnx_adapter`, weighted merges), the adapter registry, bad input and concurrent sessions.
//! This file holds the fixture and the helpers; the tests are grouped by topic below.

mod adapters;
mod batching;
mod chunks;
mod continuous;
mod decoding;
mod errors;
mod fused;
mod logits;
mod scoring;
mod slots;
mod static_layout;
mod streaming;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier, OnceLock};

use serde_json::{Value, json};
use tribute_inference::{
    AdapterError, AdapterId, CancelToken, Error, FinishReason, GenerateRequest, Generation,
    Generator, GeneratorOptions, Prompt,
};

use crate::{export, python, smollm2_dir};

/// Name recorded in the tiny model's `tribute.json` (adapters' base model is checked against it).
const MODEL_NAME: &str = "tiny-test";
const LAYERS: usize = 2;
const VOCAB: u32 = 300;
const CONTEXT: usize = 256;
/// Absolute tolerance of fp32 ONNX Runtime log-probs against the float64 numpy reference.
const TOL: f32 = 1e-4;

// -------------------------------------------------------------------------------------------
// Fixture: the tiny model and two PEFT adapters, made once per process

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    /// The Hugging Face source directory (weights for the numpy reference).
    hf: PathBuf,
    /// The exported model directory.
    model: PathBuf,
    /// PEFT adapter A: q_proj, v_proj; r 4, alpha 8.
    a: PathBuf,
    /// PEFT adapter B: q_proj, k_proj, down_proj; r 2, alpha 2; layer 1's down_proj r 3, alpha 6.
    b: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("export/tests/reference_logits.py")
}

/// Runs `reference_logits.py` with `args` (and `stdin`); returns its stdout.
fn reference(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(python())
        .arg(script())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run reference_logits.py");
    {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            pipe.write_all(s.as_bytes()).expect("write stdin");
        }
    }
    let out = child
        .wait_with_output()
        .expect("wait for reference_logits.py");
    assert!(
        out.status.success(),
        "reference_logits.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Under target/tmp, so that what the never-dropped static leaves goes with `cargo clean`.
        let tmp = tempfile::Builder::new()
            .prefix("tiny-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir");
        let root = tmp.path().to_owned();
        let hf = root.join("hf");
        let model = root.join("model");
        reference(&["hf", "--out", s(&hf), "--seed", "1"], None);
        export(&["--source", s(&hf), "--out", s(&model), "--name", MODEL_NAME]);
        let a = root.join("lora-a");
        write_peft(
            &a,
            &Lora {
                targets: &["q_proj", "v_proj"],
                r: 4,
                alpha: 8.0,
                seed: 11,
                ..Lora::default()
            },
        );
        let b = root.join("lora-b");
        write_peft(
            &b,
            &Lora {
                targets: &["q_proj", "k_proj", "down_proj"],
                r: 2,
                alpha: 2.0,
                rank_pattern: &[("layers.1.mlp.down_proj", 3)],
                alpha_pattern: &[("layers.1.mlp.down_proj", 6.0)],
                seed: 22,
                ..Lora::default()
            },
        );
        Fixture {
            _tmp: tmp,
            root,
            hf,
            model,
            a,
            b,
        }
    })
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The tiny model with adapters `a` and `b` registered, loaded once.
fn tiny() -> &'static Generator {
    static G: OnceLock<Generator> = OnceLock::new();
    G.get_or_init(|| {
        let f = fixture();
        let g = Generator::load(&f.model).expect("load the tiny model");
        g.add_adapter("a", &f.a).expect("register a");
        g.add_adapter("b", &f.b).expect("register b");
        g
    })
}

/// Adapter "a" converted to an `.onnx_adapter` file in scratch directory `name`.
fn onnx_adapter(name: &str) -> PathBuf {
    let f = fixture();
    let file = scratch(name).join("a.onnx_adapter");
    let out = Command::new(python())
        .args(["-m", "tribute_export.adapter", "--peft", s(&f.a)])
        .args(["--model", s(&f.model), "--out", s(&file)])
        .output()
        .expect("run tribute_export.adapter");
    assert!(
        out.status.success(),
        "tribute_export.adapter failed (it needs onnxruntime in the venv: `make test` installs it, or pip install 'tribute-export[adapter]'):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

/// A graph of another attention layout gives the portable graph's results.
fn generates_what_the_portable_graph_does(g: &Generator) {
    generates_what(g, tiny());
}

/// `g` gives what `want` gives for each request run alone: a batch of prompts of different
/// lengths, with and without an adapter (one finishing at its first token), a prompt from a
/// cached prefix (`g` keeps prompts), rows joining mid-decode and leaving early, greedy and
/// seeded.
fn generates_what(g: &Generator, want: &Generator) {
    // Prompts of different lengths in one batch (each prefilled into its own row), with and
    // without an adapter; one finishes at its first token.
    let reqs: Vec<GenerateRequest> = [
        (71, 5, None, 10),
        (72, 17, None, 10),
        (73, 9, Some("a"), 10),
        (79, 3, None, 1),
    ]
    .iter()
    .map(|&(seed, n, ad, max)| {
        let r = GenerateRequest::new(tokens(seed, n))
            .max_tokens(max)
            .ignore_eos(true)
            .keep_prompt_cache(true);
        match ad {
            Some(a) => r.adapter(a, 1.0),
            None => r,
        }
    })
    .collect();
    for (i, (got, r)) in g.generate_batch(&reqs).iter().zip(&reqs).enumerate() {
        let got = got.as_ref().expect("static generation");
        assert_same(got, &run_one(want, r), &format!("batched row {i}"));
    }
    // A prompt that starts with a kept one: its columns are copied into the row, and only
    // the rest of the prompt runs.
    let mut longer = toks(72, 17);
    longer.extend(toks(74, 6));
    let r = GenerateRequest::new(Prompt::Tokens(longer))
        .max_tokens(8)
        .ignore_eos(true);
    let hits = g.prompt_cache_stats().prefill_hits;
    assert_same(&run_one(g, &r), &run_one(want, &r), "from a cached prefix");
    assert!(
        g.prompt_cache_stats().prefill_hits > hits,
        "the prefix was reused"
    );
    // Rows joining a running batch mid-decode (copied into its buffers, which regrow) and
    // leaving early (the last row moves into their place), greedy and seeded.
    let first = GenerateRequest::new(tokens(75, 4))
        .max_tokens(24)
        .ignore_eos(true);
    let joiners = [
        GenerateRequest::new(tokens(76, 20))
            .max_tokens(12)
            .ignore_eos(true),
        GenerateRequest::new(tokens(77, 2))
            .max_tokens(3)
            .ignore_eos(true),
        GenerateRequest::new(tokens(78, 7))
            .max_tokens(9)
            .temperature(0.9)
            .seed(5)
            .adapter("b", 1.0),
        GenerateRequest::new(tokens(80, 90))
            .max_tokens(40)
            .ignore_eos(true),
    ];
    let got = crate::join_mid_decode(g, &first, &joiners, 5);
    for (i, (r, got)) in std::iter::once(&first)
        .chain(&joiners)
        .zip(&got)
        .enumerate()
    {
        assert_same(got, &run_one(want, r), &format!("joined request {i}"));
    }
}

/// `g` scores as the portable graph does, within `tol`: `log_probs` of `cont` after `ctx`
/// with and without an adapter, and `score_masked` under each of `masks` with and without a
/// merge of two adapters.
fn scores_what_the_portable_graph_does(
    g: &Generator,
    ctx: &[u32],
    cont: &[u32],
    masks: &[Vec<bool>],
    tol: f32,
) {
    let want = tiny();
    for ad in [adapters(&[]), adapters(&[("b", 1.0)])] {
        let got = g.log_probs(ctx, cont, &ad).expect("log_probs");
        let expected = want.log_probs(ctx, cont, &ad).expect("portable log_probs");
        assert!(
            max_diff(&got, &expected) <= tol,
            "log_probs {ad:?}: {got:?} vs {expected:?}"
        );
    }
    for ad in [adapters(&[]), adapters(&[("a", 0.5), ("b", 0.5)])] {
        let got = g.score_masked(ctx, cont, masks, &ad).expect("score_masked");
        let expected = want
            .score_masked(ctx, cont, masks, &ad)
            .expect("portable score_masked");
        assert_eq!(got.len(), masks.len());
        for (m, (a, b)) in got.iter().zip(&expected).enumerate() {
            assert!(max_diff(a, b) <= tol, "mask {m} {ad:?}: {a:?} vs {b:?}");
        }
    }
}

/// A fresh directory under the fixture's root.
fn scratch(name: &str) -> PathBuf {
    let d = fixture().root.join(name);
    if d.exists() {
        std::fs::remove_dir_all(&d).expect("clear scratch dir");
    }
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// A copy of the tiny model directory.
fn model_copy(name: &str) -> PathBuf {
    model_copy_of(&fixture().model, name)
}

/// A copy of the model directory `from`.
fn model_copy_of(from: &Path, name: &str) -> PathBuf {
    let d = scratch(name);
    for e in std::fs::read_dir(from).expect("read model dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), d.join(e.file_name())).expect("copy model file");
    }
    d
}

/// A copy of the model directory `from` with its `tribute.json` edited.
fn edited_copy(from: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let d = model_copy_of(from, name);
    let p = d.join("tribute.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
    edit(&mut v);
    std::fs::write(&p, v.to_string()).expect("write");
    d
}

// -------------------------------------------------------------------------------------------
// Random numbers, prompts, PEFT adapters

/// splitmix64: deterministic numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn sym(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// `n` random byte tokens (ids 0..256: no special tokens).
fn toks(seed: u64, n: usize) -> Vec<u32> {
    let mut r = Rng(seed);
    (0..n).map(|_| (r.next() % 256) as u32).collect()
}

fn tokens(seed: u64, n: usize) -> Prompt {
    Prompt::Tokens(toks(seed, n))
}

/// (in_features, out_features) of a module kind in the tiny model.
fn dims(kind: &str) -> (usize, usize) {
    match kind {
        "q_proj" | "o_proj" => (64, 64),
        "k_proj" | "v_proj" => (64, 32),
        "gate_proj" | "up_proj" => (64, 128),
        "down_proj" => (128, 64),
        k => panic!("unknown module kind {k}"),
    }
}

fn module_path(layer: usize, kind: &str) -> String {
    let block = if ["gate_proj", "up_proj", "down_proj"].contains(&kind) {
        "mlp"
    } else {
        "self_attn"
    };
    format!("model.layers.{layer}.{block}.{kind}")
}

/// A random PEFT LoRA adapter's description.
struct Lora<'a> {
    targets: &'a [&'a str],
    r: usize,
    alpha: f64,
    rank_pattern: &'a [(&'a str, usize)],
    alpha_pattern: &'a [(&'a str, f64)],
    base_model: &'a str,
    seed: u64,
    /// Overrides every module's input width (to make a misfit adapter).
    in_features: Option<usize>,
}

impl Default for Lora<'_> {
    fn default() -> Self {
        Lora {
            targets: &["q_proj"],
            r: 4,
            alpha: 8.0,
            rank_pattern: &[],
            alpha_pattern: &[],
            base_model: MODEL_NAME,
            seed: 1,
            in_features: None,
        }
    }
}

/// Writes `adapter_config.json` + `adapter_model.safetensors` as PEFT does, for every layer.
fn write_peft(dir: &Path, l: &Lora<'_>) {
    std::fs::create_dir_all(dir).expect("adapter dir");
    let mut rng = Rng(l.seed);
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for layer in 0..LAYERS {
        for kind in l.targets {
            let module = module_path(layer, kind);
            let r = l
                .rank_pattern
                .iter()
                .find(|(k, _)| module.ends_with(&format!(".{k}")))
                .map_or(l.r, |(_, r)| *r);
            let (fin, fout) = dims(kind);
            let fin = l.in_features.unwrap_or(fin);
            let mut mat = |n: usize, scale: f32| -> Vec<u8> {
                (0..n)
                    .flat_map(|_| (rng.sym() * scale).to_le_bytes())
                    .collect()
            };
            let a = mat(r * fin, 0.3);
            let b = mat(fout * r, 0.3);
            let key = format!("base_model.model.{module}");
            tensors.insert(format!("{key}.lora_A.weight"), (vec![r, fin], a));
            tensors.insert(format!("{key}.lora_B.weight"), (vec![fout, r], b));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (shape, data))| {
            let v =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .expect("tensor view");
            (k.clone(), v)
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &dir.join("adapter_model.safetensors"))
        .expect("write adapter_model.safetensors");
    let cfg = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": l.base_model,
        "r": l.r,
        "lora_alpha": l.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "target_modules": l.targets,
        "rank_pattern": l.rank_pattern.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "alpha_pattern": l.alpha_pattern.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_string_pretty(&cfg).expect("json"),
    )
    .expect("write adapter_config.json");
}

// -------------------------------------------------------------------------------------------
// Helpers

/// One numpy reference query: (context, continuation, [(PEFT dir, weight)]).
type Query<'a> = (&'a [u32], &'a [u32], Vec<(&'a Path, f32)>);

/// (log-probs, argmax) per continuation position of each query, from numpy.
fn numpy(queries: &[Query<'_>]) -> Vec<(Vec<f32>, Vec<u32>)> {
    let q: Vec<Value> = queries
        .iter()
        .map(|(c, k, ad)| {
            json!({
                "context": c, "continuation": k,
                "adapters": ad.iter().map(|(p, w)| json!([s(p), w])).collect::<Vec<_>>(),
            })
        })
        .collect();
    let out = reference(
        &["logprobs"],
        Some(&json!({"hf": s(&fixture().hf), "queries": q}).to_string()),
    );
    let v: Value = serde_json::from_str(&out).expect("reference json");
    let f = |x: &Value| -> Vec<Vec<f64>> {
        x.as_array()
            .expect("array")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|n| n.as_f64().expect("number"))
                    .collect()
            })
            .collect()
    };
    f(&v["log_probs"])
        .into_iter()
        .zip(f(&v["argmax"]))
        .map(|(lp, am)| {
            (
                lp.into_iter().map(|x| x as f32).collect(),
                am.into_iter().map(|x| x as u32).collect(),
            )
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= TOL,
        "{what}: max |Δ| {worst:e} > {TOL:e}\n got  {got:?}\n want {want:?}"
    );
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

fn run_one(g: &Generator, r: &GenerateRequest) -> Generation {
    g.generate(r)
        .unwrap_or_else(|e| panic!("generate {r:?}: {e}"))
}

/// Same output: everything but timings.
fn assert_same(got: &Generation, want: &Generation, what: &str) {
    assert_eq!(got.tokens, want.tokens, "{what}: tokens");
    assert_eq!(got.text, want.text, "{what}: text");
    assert_eq!(
        got.finish_reason, want.finish_reason,
        "{what}: finish reason"
    );
    assert_eq!(
        got.prompt_tokens, want.prompt_tokens,
        "{what}: prompt tokens"
    );
    assert_eq!(got.adapters, want.adapters, "{what}: adapters");
}

fn err<T: std::fmt::Debug>(r: tribute_inference::Result<T>, what: &str) -> Error {
    match r {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e,
    }
}

fn adapters(list: &[(&str, f32)]) -> Vec<(String, f32)> {
    list.iter().map(|(id, w)| ((*id).to_owned(), *w)).collect()
}

fn id(s: &str) -> AdapterId {
    AdapterId::new(s).expect("id")
}

/// Two printable ASCII characters from past the first quarter of `text`, or `None`.
fn ascii_stop(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    (chars.len() / 4..chars.len().saturating_sub(2))
        .find(|&i| chars[i].is_ascii_graphic() && chars[i + 1].is_ascii_graphic())
        .map(|i| format!("{}{}", chars[i], chars[i + 1]))
}
