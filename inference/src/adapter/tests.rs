//! Unit tests of `adapter`.

use super::*;

fn module(name: &str, i: usize, o: usize) -> LoraModule {
    LoraModule {
        module: name.into(),
        a: format!("{name}.lora_A"),
        b: format!("{name}.lora_B"),
        in_features: i,
        out_features: o,
    }
}

/// ΔW (out × in) = Bᵀᵀ·Aᵀᵀ from the input layout: ΔWᵀ = Aᵀ·Bᵀ.
fn delta_t(p: &LoraPair, i: usize, o: usize) -> Vec<f32> {
    let mut d = vec![0.0; i * o];
    for x in 0..i {
        for y in 0..o {
            d[x * o + y] = (0..p.rank)
                .map(|k| p.a_t[x * p.rank + k] * p.b_t[k * o + y])
                .sum();
        }
    }
    d
}

#[test]
fn merge_is_the_weighted_sum_of_deltas() {
    let (i, o) = (3, 2);
    let mods = [module("m.q", i, o), module("m.k", i, o)];
    let pair = |r: usize, seed: f32| LoraPair {
        rank: r,
        a_t: (0..i * r).map(|x| (x as f32 * 0.37 + seed).sin()).collect(),
        b_t: (0..r * o).map(|x| (x as f32 * 0.91 - seed).cos()).collect(),
    };
    let mut a = LoraWeights::default();
    a.modules.insert("m.q".into(), pair(2, 0.1));
    a.modules.insert("m.k".into(), pair(2, 0.2));
    let mut b = LoraWeights::default();
    b.modules.insert("m.q".into(), pair(3, 0.7));
    let merged = merge(&[(&a, 0.25), (&b, -1.5)], &mods);
    let q = &merged.modules["m.q"];
    assert_eq!(q.rank, 5);
    let want: Vec<f32> = delta_t(&a.modules["m.q"], i, o)
        .iter()
        .zip(delta_t(&b.modules["m.q"], i, o))
        .map(|(x, y)| 0.25 * x - 1.5 * y)
        .collect();
    for (g, w) in delta_t(q, i, o).iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
    // m.k only in `a`: rank 2, scaled by 0.25.
    let k = &merged.modules["m.k"];
    assert_eq!(k.rank, 2);
    for (g, w) in delta_t(k, i, o)
        .iter()
        .zip(delta_t(&a.modules["m.k"], i, o))
    {
        assert!((g - 0.25 * w).abs() < 1e-6);
    }
}

#[test]
fn peft_patterns_follow_peft_rules() {
    let mut p = BTreeMap::new();
    p.insert("q_proj".to_owned(), 4usize);
    p.insert("layers.1.self_attn.v_proj".to_owned(), 2usize);
    assert_eq!(
        pattern_value(&p, "model.layers.0.self_attn.q_proj"),
        Some(&4)
    );
    assert_eq!(
        pattern_value(&p, "model.layers.1.self_attn.v_proj"),
        Some(&2)
    );
    assert_eq!(pattern_value(&p, "model.layers.0.self_attn.v_proj"), None);
    assert_eq!(pattern_value(&p, "model.layers.0.self_attn.xq_proj"), None);
    let t = Some(serde_json::json!(["q_proj", "v_proj"]));
    assert!(targeted(&t, "model.layers.3.self_attn.q_proj"));
    assert!(!targeted(&t, "model.layers.3.self_attn.k_proj"));
    let re = Some(serde_json::json!(r".*\.(q|k)_proj"));
    assert!(targeted(&re, "model.layers.3.self_attn.k_proj"));
    assert!(!targeted(&re, "model.layers.3.mlp.up_proj"));
    assert_eq!(
        normalize_model_name("HuggingFaceTB/SmolLM2-135M-Instruct"),
        normalize_model_name("SmolLM2 135M Instruct")
    );
}

/// A PEFT folder for a model with one 2 → 2 module `m`, rank 1, all weights 1.
fn peft_dir(config: &str) -> tempfile::TempDir {
    peft_dir_of_rank(config, 1)
}

/// A PEFT folder for a model with one 2 → 2 module `m` of rank `r`, all weights 1.
fn peft_dir_of_rank(config: &str, r: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("adapter_config.json"), config).expect("config");
    let n = 2 * r * 4;
    let header = format!(
        r#"{{"m.lora_A.weight":{{"dtype":"F32","shape":[{r},2],"data_offsets":[0,{n}]}},"m.lora_B.weight":{{"dtype":"F32","shape":[2,{r}],"data_offsets":[{n},{}]}}}}"#,
        2 * n
    );
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header.as_bytes());
    st.extend(std::iter::repeat_n(1f32.to_le_bytes(), 4 * r).flatten());
    std::fs::write(dir.path().join("adapter_model.safetensors"), st).expect("weights");
    dir
}

/// Rank and file-size limits refuse an adapter before its weights are used, with the
/// typed `OverLimit`; within the limits the same adapter loads.
#[test]
fn adapters_over_the_limits_are_refused() {
    let id = AdapterId::new("a").expect("id");
    let modules = [module("m", 2, 2)];
    let limits = AdapterLimits {
        max_rank: 2,
        max_bytes: 4096,
    };
    let over = |r: Result<LoraWeights, AdapterError>| match r {
        Err(AdapterError::OverLimit {
            what, value, limit, ..
        }) => (what, value, limit),
        other => panic!("expected OverLimit, got {other:?}"),
    };
    // Rank in the config (refused before the weights are read) …
    let d = peft_dir_of_rank(r#"{"r": 3, "lora_alpha": 3}"#, 3);
    let load = |d: &tempfile::TempDir, l: &AdapterLimits| {
        load_peft_limited(&id, d.path(), None, &modules, l)
    };
    assert_eq!(over(load(&d, &limits)), ("rank", 3, 2));
    // … in a rank_pattern …
    let d = peft_dir_of_rank(r#"{"r": 1, "lora_alpha": 1, "rank_pattern": {"m": 9}}"#, 1);
    assert_eq!(over(load(&d, &limits)), ("rank", 9, 2));
    // … or only in the weights' shapes (the config claims rank 1).
    let d = peft_dir_of_rank(r#"{"r": 1, "lora_alpha": 1}"#, 5);
    assert_eq!(over(load(&d, &limits)), ("rank", 5, 2));
    // Bytes: config + safetensors, counted before either is read.
    let d = peft_dir_of_rank(r#"{"r": 2, "lora_alpha": 2}"#, 2);
    let size = ["adapter_config.json", "adapter_model.safetensors"]
        .iter()
        .map(|f| std::fs::metadata(d.path().join(f)).expect("size").len())
        .sum::<u64>();
    let tight = AdapterLimits {
        max_rank: 2,
        max_bytes: size - 1,
    };
    assert_eq!(over(load(&d, &tight)), ("bytes", size, size - 1));
    let err = load(&d, &tight).unwrap_err().to_string();
    assert!(err.contains("AdapterLimits::max_bytes"), "{err}");
    // At the limits it loads; the defaults take it too.
    let exact = AdapterLimits {
        max_rank: 2,
        max_bytes: size,
    };
    assert_eq!(load(&d, &exact).expect("loads").modules["m"].rank, 2);
    assert!(load_peft(&id, d.path(), None, &modules).is_ok());
}

/// Found by the `peft_adapter` fuzz target: a huge `lora_alpha` (or rank 0) loaded
/// infinite LoRA values.
#[test]
fn scales_past_f32_are_refused() {
    let id = AdapterId::new("a").expect("id");
    let modules = [module("m", 2, 2)];
    let ok = peft_dir(r#"{"r": 1, "lora_alpha": 2}"#);
    let w = load_peft(&id, ok.path(), None, &modules).expect("loads");
    assert_eq!(w.modules["m"].b_t, [2.0, 2.0]);
    for config in [
        r#"{"r": 1, "lora_alpha": 1e300}"#,
        r#"{"r": 1, "lora_alpha": -1e39, "use_rslora": true}"#,
    ] {
        let dir = peft_dir(config);
        let err = load_peft(&id, dir.path(), None, &modules).unwrap_err();
        assert!(
            err.to_string().contains("past the f32 range"),
            "{config}: {err}"
        );
    }
}
