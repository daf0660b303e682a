//! Integration tests of `tribute-inference`.
//!
//! - `smollm2`: the real SmolLM2-135M-Instruct that `scripts/setup.sh` exports into
//!   `$TRIBUTE_HOME/models/`, with the PEFT adapters in `../shared/models/lora/` and their
//!   documented greedy outputs.
//! - `tiny`: a tiny random llama exported by the project's exporter (`tribute_export`, from
//!   the venv `scripts/setup.sh` makes) for the mechanics: batching, streaming, stop
//!   strings, cancellation, KV cache, adapters, bad input.
//!
//! Without the prerequisites these tests fail with a message that says what to run.

mod cuda;
mod smollm2;
mod tiny;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tribute_inference::Generator;

/// `$TRIBUTE_HOME` (default `~/.cache/tribute`).
pub fn tribute_home() -> PathBuf {
    tribute_runtime::tribute_home()
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

/// The project's shared fixtures (`../shared` next to the repository, or `$TRIBUTE_SHARED_DIR`).
pub fn shared_dir() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(d) = std::env::var_os("TRIBUTE_SHARED_DIR") {
        candidates.push(PathBuf::from(d));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    candidates.push(repo.join("..").join("shared"));
    candidates.push(PathBuf::from("/work/shared"));
    candidates
        .into_iter()
        .find(|d| d.join("models").join("lora").is_dir())
        .unwrap_or_else(|| {
            panic!("the shared fixtures (shared/models/lora) were not found next to the repository; set TRIBUTE_SHARED_DIR")
        })
}

/// A shared LoRA adapter directory by name.
pub fn lora(name: &str) -> PathBuf {
    shared_dir().join("models").join("lora").join(name)
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
