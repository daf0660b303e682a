//! PEFT adapters (`load_peft`): `adapter_config.json` and the safetensors file, any bytes.
//! The input is the config, a NUL byte, then `adapter_model.safetensors` (no NUL: the
//! config alone and no weights file).
//!
//! Properties: a loaded adapter has only modules of the model, each with matrices of
//! exactly `in × rank` and `rank × out` finite values; merging it alone with weight 1 gives
//! it back, and merging two halves of it gives a pair of twice the rank.

use tribute_inference::adapter::{AdapterId, load_peft, merge};
use tribute_inference_fuzz::{MODEL_NAME, modules, scratch_dir};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let (config, weights) = match data.iter().position(|&b| b == 0) {
            Some(i) => (&data[..i], Some(&data[i + 1..])),
            None => (data, None),
        };
        let dir = scratch_dir().join("peft");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("adapter folder");
        std::fs::write(dir.join("adapter_config.json"), config).expect("write the config");
        if let Some(w) = weights {
            std::fs::write(dir.join("adapter_model.safetensors"), w).expect("write the weights");
        }
        let id = AdapterId::new("fuzz").expect("id");
        let modules = modules();
        let Ok(lora) = load_peft(&id, &dir, Some(MODEL_NAME), &modules) else {
            return;
        };
        assert!(
            !lora.modules.is_empty(),
            "an adapter without modules loaded"
        );
        for (name, pair) in &lora.modules {
            let m = modules
                .iter()
                .find(|m| &m.module == name)
                .unwrap_or_else(|| panic!("{name} is not a module of the model"));
            assert_eq!(pair.a_t.len(), m.in_features * pair.rank, "{name}: Aᵀ");
            assert_eq!(pair.b_t.len(), pair.rank * m.out_features, "{name}: Bᵀ");
            assert!(
                pair.a_t.iter().chain(&pair.b_t).all(|x| x.is_finite()),
                "{name}: non-finite LoRA values loaded"
            );
        }
        assert_eq!(merge(&[(&lora, 1.0)], &modules), lora, "merge(a, 1) != a");
        let twice = merge(&[(&lora, 0.5), (&lora, 0.5)], &modules);
        for (name, pair) in &twice.modules {
            assert_eq!(pair.rank, 2 * lora.modules[name].rank);
        }
    });
}
