//! Integration tests of `tribute-inference`.
//!
//! - `smollm2`: the real SmolLM2-135M-Instruct that `scripts/setup.sh` exports into
//!   `$TRIBUTE_HOME/models/`, with the PEFT adapters vendored in `examples/adapters/` and their
//!   documented greedy outputs.
//! - `tiny`: a tiny random llama exported by the project's exporter (`tribute_export`, from
//!   the venv `scripts/setup.sh` makes) for the mechanics: batching, streaming, stop
//!   strings, cancellation, KV cache, adapters, bad input.
//! - `finetune` (feature `finetune`): the LoRA trainer on SmolLM2's source GGUF against the
//!   generator.
//!
//! Without the prerequisites these tests fail with a message that says what to run.

mod cuda;
#[cfg(feature = "finetune")]
mod finetune;
mod smollm2;
mod tiny;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tribute_inference::{GenerateRequest, Generation, Generator};

/// `$TRIBUTE_HOME` (default `~/.cache/tribute`).
pub fn tribute_home() -> PathBuf {
    tribute_common::tribute_home()
}

/// The exported SmolLM2-135M-Instruct.
pub fn smollm2_dir() -> PathBuf {
    let dir = tribute_home().join("models").join("SmolLM2-135M-Instruct");
    assert!(
        dir.join("model.onnx").is_file(),
        "SmolLM2-135M-Instruct is required at {}; run scripts/setup.sh first",
        dir.display()
    );
    dir
}

/// A LoRA adapter vendored in `examples/adapters/` by name (`$TRIBUTE_LORA_DIR` overrides
/// the folder).
pub fn lora(name: &str) -> PathBuf {
    let root = std::env::var_os("TRIBUTE_LORA_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/adapters"));
    let dir = root.join(name);
    assert!(
        dir.join("adapter_config.json").is_file(),
        "the LoRA adapter {name} is required at {}",
        dir.display()
    );
    dir
}

/// The Python that has `tribute_export` installed (`$TRIBUTE_PYTHON`, else the venv of
/// `scripts/setup.sh`).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TRIBUTE_PYTHON") {
        return PathBuf::from(p);
    }
    let p = tribute_home().join("venv").join("bin").join("python");
    assert!(
        p.is_file(),
        "the exporter's Python is required at {}; run scripts/setup.sh first",
        p.display()
    );
    p
}

/// Runs the exporter with `args`; panics with its output on failure.
pub fn export(args: &[&str]) {
    let out = Command::new(python())
        .args(["-m", "tribute_export"])
        .args(args)
        .output()
        .expect("run the exporter");
    assert!(
        out.status.success(),
        "tribute_export {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SmolLM2 with the two shared adapters registered as `zephyr` and `caps`, loaded once.
pub fn smollm2() -> &'static Generator {
    static G: OnceLock<Generator> = OnceLock::new();
    G.get_or_init(|| {
        let g = Generator::load(smollm2_dir()).expect("load SmolLM2");
        g.add_adapter("zephyr", lora("smollm2-135m-zephyr-lora"))
            .expect("register zephyr");
        g.add_adapter("caps", lora("smollm2-135m-caps-lora"))
            .expect("register caps");
        g
    })
}

/// Streams `first` and reads `after` pieces of it (it is mid-decode), then streams
/// `joiners` and reads every stream in turn to its end: the joiners join the running
/// batch at a step boundary. Returns the generations, `first`'s then the joiners'.
pub fn join_mid_decode(
    g: &Generator,
    first: &GenerateRequest,
    joiners: &[GenerateRequest],
    after: usize,
) -> Vec<Generation> {
    let mut streams = vec![g.stream(first).expect("stream")];
    for _ in 0..after {
        streams[0].next().expect("a piece").expect("ok");
    }
    streams.extend(joiners.iter().map(|r| g.stream(r).expect("stream")));
    let mut open = vec![true; streams.len()];
    while open.iter().any(|&o| o) {
        for (s, open) in streams.iter_mut().zip(&mut open) {
            if *open {
                match s.next() {
                    Some(piece) => {
                        piece.expect("piece");
                    }
                    None => *open = false,
                }
            }
        }
    }
    streams
        .iter()
        .map(|s| s.generation().expect("finished"))
        .collect()
}
