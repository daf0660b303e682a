//! Adapter slots through the engine: `[generation] adapter_slots` reaches the generator,
//! and asks with different adapters, run at the same time, answer what each answers alone.

use super::*;

#[test]
fn asks_with_different_adapters_share_the_adapter_slots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapters = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/adapters");
    let mut config = EngineConfig {
        index: dir.path().join("kb"),
        model: Some(tribute::inference::default_model_dir()),
        ..EngineConfig::default()
    };
    config.generation.max_tokens = 24;
    config.generation.adapter_slots = 2;
    for (id, name) in [
        ("zephyr", "smollm2-135m-zephyr-lora"),
        ("caps", "smollm2-135m-caps-lora"),
    ] {
        config.adapters.push(tribute::config::AdapterConfig {
            id: id.into(),
            path: adapters.join(name),
        });
    }
    let engine = Engine::builder()
        .config(config)
        .embedder(embedder())
        .build()
        .expect("engine with two adapters");
    engine.add_documents(sample_docs(), None).expect("ingest");
    let g = engine.generator().expect("a generator");
    assert_eq!(
        g.adapter_slots(),
        (2, 16),
        "one slot per configured adapter"
    );

    let ask = |adapter: Option<&str>| {
        let mut a = engine.ask(QUESTION).top_k(2);
        if let Some(id) = adapter {
            a = a.adapters([(id, 1.0)]);
        }
        a.run().expect("ask").text
    };
    let which = [Some("zephyr"), Some("caps"), None];
    let alone: Vec<String> = which.iter().map(|&w| ask(w)).collect();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = which.iter().map(|&w| s.spawn(move || ask(w))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ask thread"))
            .collect()
    });
    assert_eq!(together, alone);
    assert_ne!(alone[0], alone[1], "the adapters change the answer");
}

/// `[generation] cuda_graphs` reaches the generator: asking for CUDA graphs with the
/// default model (a portable export, no static buffers to capture over) fails the build
/// with the generator's reason.
#[test]
fn cuda_graphs_on_a_portable_model_fail_the_engine_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = EngineConfig {
        index: dir.path().join("kb"),
        model: Some(tribute::inference::default_model_dir()),
        ..EngineConfig::default()
    };
    config.generation.cuda_graphs = Some(true);
    let e = Engine::builder()
        .config(config)
        .embedder(embedder())
        .build()
        .expect_err("cuda_graphs on a portable export");
    assert!(e.to_string().contains("--ops static"), "{e}");
}
