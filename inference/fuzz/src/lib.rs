//! What the inference fuzz targets share: a small model's LoRA inputs and a scratch folder.

use std::path::PathBuf;
use std::sync::OnceLock;

use tribute_inference::config::LoraModule;

/// The model name adapters are checked against (the vendored adapters' base model).
pub const MODEL_NAME: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

/// LoRA inputs of a small model: layer 0's `q_proj` (8 → 8) and `v_proj` (8 → 4), the
/// shapes of the seed adapters in `inference/fuzz/corpus/`.
pub fn modules() -> Vec<LoraModule> {
    [("q_proj", 8, 8), ("v_proj", 8, 4)]
        .into_iter()
        .map(|(name, in_features, out_features)| LoraModule {
            module: format!("model.layers.0.self_attn.{name}"),
            a: format!("lora_a.{name}"),
            b: format!("lora_b.{name}"),
            in_features,
            out_features,
        })
        .collect()
}

/// A scratch folder: `$TRIBUTE_FUZZ_SCRATCH` (set per target by `core/fuzz/run.sh`), else
/// one per fuzzer instance under the temporary directory.
pub fn scratch_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("TRIBUTE_FUZZ_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "tribute-fuzz-{}",
                    std::os::unix::process::parent_id()
                ))
            });
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        dir
    })
}
