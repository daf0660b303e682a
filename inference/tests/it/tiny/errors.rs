//! Bad input: model directories, configs, tokenizers and adapters that do not fit, long
//! prompts, invalid requests and non-finite logits are typed errors.

use super::*;

fn load_err(dir: &Path, what: &str) -> Error {
    err(Generator::load(dir), what)
}

fn assert_model_dir(e: &Error, needle: &str, what: &str) {
    assert!(matches!(e, Error::ModelDirectory { .. }), "{what}: {e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(needle),
        "{what}: message {msg:?} should mention {needle:?}"
    );
}

#[test]
fn bad_model_directories_are_typed_errors() {
    let root = scratch("bad-dirs");
    let e = load_err(&root.join("missing"), "missing dir");
    assert_model_dir(&e, "missing", "missing dir");

    let d = model_copy("no-onnx");
    std::fs::remove_file(d.join("model.onnx")).expect("rm");
    assert_model_dir(
        &load_err(&d, "no model.onnx"),
        "model.onnx",
        "no model.onnx",
    );

    let d = model_copy("no-tokenizer");
    std::fs::remove_file(d.join("tokenizer.json")).expect("rm");
    let e = load_err(&d, "no tokenizer.json");
    assert!(
        matches!(e, Error::ModelDirectory { .. } | Error::Tokenizer(_)),
        "{e:?}"
    );
    assert!(e.to_string().contains("tokenizer.json"), "{e}");

    let d = model_copy("garbage-onnx");
    let mut r = Rng(5);
    let junk: Vec<u8> = (0..4096).map(|_| r.next() as u8).collect();
    std::fs::write(d.join("model.onnx"), junk).expect("write");
    assert_model_dir(
        &load_err(&d, "garbage model.onnx"),
        "model.onnx",
        "garbage model.onnx",
    );

    let d = model_copy("no-config");
    std::fs::remove_file(d.join("tribute.json")).expect("rm");
    std::fs::remove_file(d.join("genai_config.json")).expect("rm");
    assert_model_dir(
        &load_err(&d, "no tribute.json"),
        "tribute.json",
        "no tribute.json",
    );

    let d = model_copy("bad-json");
    std::fs::write(d.join("tribute.json"), "{ not json").expect("write");
    assert_model_dir(
        &load_err(&d, "bad tribute.json"),
        "tribute.json",
        "bad tribute.json",
    );
}

/// A copy of the model with `tribute.json` edited by `edit`.
fn edited(name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    edited_copy(&fixture().model, name, edit)
}

/// The error of loading `dir` or, if it loads, of the first generation.
fn load_or_use_err(dir: &Path, what: &str) -> Error {
    match Generator::load(dir) {
        Err(e) => e,
        Ok(g) => err(
            g.generate(&GenerateRequest::new(tokens(1, 4)).max_tokens(2)),
            what,
        ),
    }
}

#[test]
fn config_that_does_not_match_the_graph_is_a_model_directory_error() {
    let d = edited("more-layers", |v| v["num_layers"] = json!(3));
    assert_model_dir(
        &load_err(&d, "num_layers 3"),
        "past_key_values.2",
        "num_layers 3",
    );
    let d = edited("no-lora-input", |v| {
        v["lora"]["modules"][0]["a"] = json!("model.layers.0.self_attn.q_proj.lora_X")
    });
    assert_model_dir(&load_err(&d, "lora input"), "lora_X", "unknown LoRA input");
    let d = edited("zero-heads", |v| v["num_kv_heads"] = json!(0));
    assert_model_dir(&load_err(&d, "kv heads 0"), "positive", "num_kv_heads 0");
    // A padded graph said to be static, and an fp16 cache, say what to re-export; an unknown
    // layout is named.
    let d = edited("static-ops", |v| v["ops"] = json!("static"));
    assert_model_dir(&load_err(&d, "ops static"), "next_token", "ops static");
    let d = edited("fp16-cache", |v| v["kv_dtype"] = json!("float16"));
    assert_model_dir(
        &load_err(&d, "kv_dtype"),
        "for the static layout",
        "kv_dtype float16",
    );
    let d = edited("flash-ops", |v| v["ops"] = json!("flash"));
    assert_model_dir(&load_err(&d, "ops flash"), "flash", "unknown ops");
}

#[test]
fn config_with_fewer_layers_or_other_shapes_is_a_model_directory_error() {
    let mut wrong = Vec::new();
    for (name, key, val) in [
        ("fewer-layers", "num_layers", 1),
        ("other-vocab", "vocab_size", 400),
        ("other-head-dim", "head_dim", 8),
        ("other-kv-heads", "num_kv_heads", 1),
    ] {
        let d = edited(name, |v| v[key] = json!(val));
        let e = load_or_use_err(&d, name);
        if !matches!(e, Error::ModelDirectory { .. }) {
            wrong.push(format!("{key} = {val}: {e:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not ModelDirectory errors:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn tokenizer_of_a_bigger_model_is_refused() {
    let d = model_copy("smollm2-tokenizer");
    std::fs::copy(
        smollm2_dir().join("tokenizer.json"),
        d.join("tokenizer.json"),
    )
    .expect("copy");
    let e = load_err(&d, "SmolLM2 tokenizer");
    assert!(matches!(e, Error::Tokenizer(_)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("49152") && msg.contains("300"), "{msg}");

    let d = model_copy("broken-tokenizer");
    std::fs::write(d.join("tokenizer.json"), "{\"model\": 3}").expect("write");
    let e = load_err(&d, "broken tokenizer.json");
    assert!(matches!(e, Error::Tokenizer(_)), "{e:?}");
}

#[test]
fn misfit_adapters_are_mismatch_errors() {
    let f = fixture();
    let g = Generator::load(&f.model).expect("load");
    let dir = scratch("misfit");
    let r = GenerateRequest::new(tokens(80, 4)).max_tokens(2);
    let expect_mismatch = |g: &Generator, name: &str, path: &Path, needle: &str| {
        g.add_adapter(name, path)
            .expect("register (loading is lazy)");
        let e = err(g.generate(&r.clone().adapter(name, 1.0)), name);
        assert!(
            matches!(&e, Error::Adapter(AdapterError::Mismatch { id, .. }) if id == name),
            "{name}: {e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(needle),
            "{name}: {msg:?} should mention {needle:?}"
        );
        // The failed adapter leaves nothing resident and the generator usable.
        assert!(!g.adapters().is_resident(&id(name)));
    };
    // Wrong shapes: q_proj taking 32 inputs instead of 64.
    let p = dir.join("shapes");
    write_peft(
        &p,
        &Lora {
            in_features: Some(32),
            ..Lora::default()
        },
    );
    expect_mismatch(&g, "shapes", &p, "q_proj");
    // Another base model.
    let p = dir.join("other-base");
    write_peft(
        &p,
        &Lora {
            base_model: "HuggingFaceTB/SmolLM2-135M-Instruct",
            ..Lora::default()
        },
    );
    expect_mismatch(&g, "other-base", &p, "SmolLM2-135M-Instruct");
    run_one(&g, &r);

    // A target the model has no LoRA input for.
    let q_only = dir.join("q-only-model");
    export(&[
        "--source",
        s(&f.hf),
        "--out",
        s(&q_only),
        "--name",
        MODEL_NAME,
        "--lora-targets",
        "q_proj",
    ]);
    let gq = Generator::load(&q_only).expect("load q_proj-only model");
    let p = dir.join("k");
    write_peft(
        &p,
        &Lora {
            targets: &["k_proj"],
            ..Lora::default()
        },
    );
    expect_mismatch(&gq, "k", &p, "k_proj");
    // Its q_proj adapter works.
    gq.add_adapter("a", &f.a).expect("register");
    let e = err(gq.generate(&r.clone().adapter("a", 1.0)), "a has v_proj");
    assert!(
        matches!(e, Error::Adapter(AdapterError::Mismatch { .. })),
        "{e:?}"
    );
    let p = dir.join("q");
    write_peft(&p, &Lora::default());
    gq.add_adapter("q", &p).expect("register");
    run_one(&gq, &r.clone().adapter("q", 1.0));

    // A model without LoRA inputs refuses PEFT adapters when they are registered.
    let none = dir.join("no-lora-model");
    export(&[
        "--source",
        s(&f.hf),
        "--out",
        s(&none),
        "--lora-targets",
        "none",
    ]);
    let gn = Generator::load(&none).expect("load");
    let e = err(gn.add_adapter("q", &p), "no LoRA inputs");
    assert!(
        matches!(e, Error::Adapter(AdapterError::Mismatch { .. })),
        "{e:?}"
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let f = fixture();
    let d = scratch("ctx64").join("model");
    export(&[
        "--source",
        s(&f.hf),
        "--out",
        s(&d),
        "--context-length",
        "64",
    ]);
    let g = Generator::load(&d).expect("load");
    assert_eq!(g.config().context_length, 64);
    let long = toks(90, 100);
    let e = err(
        g.generate(&GenerateRequest::new(Prompt::Tokens(long.clone())).max_tokens(8)),
        "100 tokens",
    );
    assert!(
        matches!(
            e,
            Error::PromptTooLong {
                tokens: 100,
                context: 64
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("100") && e.to_string().contains("64"));
    // A prompt that fills the context leaves no room for a token.
    let e = err(
        g.generate(&GenerateRequest::new(Prompt::Tokens(toks(91, 64)))),
        "64 tokens",
    );
    assert!(matches!(e, Error::PromptTooLong { .. }), "{e:?}");
    let e = err(
        g.log_probs(&long[..60], &long[60..70], &[]),
        "log_probs 70 tokens",
    );
    assert!(
        matches!(
            e,
            Error::PromptTooLong {
                tokens: 70,
                context: 64
            }
        ),
        "{e:?}"
    );

    // Truncated: the oldest tokens go, leaving room for max_tokens.
    let got = run_one(
        &g,
        &GenerateRequest::new(Prompt::Tokens(long.clone()))
            .max_tokens(8)
            .ignore_eos(true)
            .truncate_prompt(true),
    );
    assert_eq!(got.prompt_tokens, 56);
    assert_eq!(got.tokens.len(), 8);
    let tail = run_one(
        &g,
        &GenerateRequest::new(Prompt::Tokens(long[100 - 56..].to_vec()))
            .max_tokens(8)
            .ignore_eos(true),
    );
    assert_same(&got, &tail, "truncated prompt vs its last 56 tokens");
    // max_tokens is bounded by the context: positions never reach 64.
    let got = run_one(
        &g,
        &GenerateRequest::new(Prompt::Tokens(toks(92, 60)))
            .max_tokens(20)
            .ignore_eos(true),
    );
    assert_eq!(got.tokens.len(), 4);
    assert_eq!(got.finish_reason, FinishReason::Length);
}

#[test]
fn bad_requests_are_invalid_request_errors() {
    let g = tiny();
    let p = || GenerateRequest::new(tokens(1, 4)).max_tokens(4);
    for (what, r) in [
        ("negative temperature", p().temperature(-1.0)),
        ("NaN temperature", p().temperature(f32::NAN)),
        ("infinite temperature", p().temperature(f32::INFINITY)),
        ("top_p 0", p().top_p(0.0)),
        ("top_p > 1", p().top_p(1.5)),
        ("repetition penalty 0", p().repetition_penalty(0.0)),
        ("max_tokens 0", p().max_tokens(0)),
        ("empty prompt", GenerateRequest::new(Prompt::Tokens(vec![]))),
        (
            "token outside the vocabulary",
            GenerateRequest::new(Prompt::Tokens(vec![1, VOCAB])),
        ),
    ] {
        let e = err(g.generate(&r), what);
        assert!(matches!(e, Error::InvalidRequest(_)), "{what}: {e:?}");
        let e = err(g.stream(&r), what);
        assert!(
            matches!(e, Error::InvalidRequest(_)),
            "stream, {what}: {e:?}"
        );
    }
    for (what, r) in [
        ("NaN adapter weight", p().adapter("a", f32::NAN)),
        ("adapter twice", p().adapter("a", 1.0).adapter("a", 0.5)),
        ("empty adapter id", p().adapter(" ", 1.0)),
    ] {
        let e = err(g.generate(&r), what);
        assert!(
            matches!(e, Error::Adapter(AdapterError::Request(_))),
            "{what}: {e:?}"
        );
    }
    let e = err(g.log_probs(&[], &[1], &[]), "empty context");
    assert!(matches!(e, Error::InvalidRequest(_)), "{e:?}");
    let e = err(
        g.log_probs(&[1], &[VOCAB + 5], &[]),
        "continuation outside the vocabulary",
    );
    assert!(matches!(e, Error::InvalidRequest(_)), "{e:?}");

    // In a batch, a bad request fails alone.
    let good = p().ignore_eos(true);
    let out = g.generate_batch(&[
        good.clone(),
        p().top_p(2.0),
        good.clone().adapter("nope", 1.0),
        good.clone(),
    ]);
    assert!(
        matches!(out[1], Err(Error::InvalidRequest(_))),
        "{:?}",
        out[1]
    );
    assert!(out[2].is_err(), "{:?}", out[2]);
    let single = run_one(g, &good);
    for i in [0, 3] {
        assert_same(
            out[i].as_ref().expect("good row"),
            &single,
            &format!("row {i}"),
        );
    }
}

#[test]
fn nan_weights_give_non_finite_logits() {
    let d = model_copy("nan-weights");
    reference(&["nan-weights", "--model", s(&d)], None);
    let g = Generator::load(&d).expect("a NaN model still loads");
    let e = err(
        g.generate(&GenerateRequest::new(tokens(1, 4)).max_tokens(3)),
        "NaN model",
    );
    assert!(
        matches!(e, Error::NonFiniteLogits { step: 0, row: 0 }),
        "{e:?}"
    );
    assert!(e.to_string().contains("non-finite"), "{e}");
    let e = err(g.log_probs(&[1, 2], &[3], &[]), "NaN log_probs");
    assert!(matches!(e, Error::NonFiniteLogits { .. }), "{e:?}");
    let mut stream = g
        .stream(&GenerateRequest::new(tokens(1, 4)).max_tokens(3))
        .expect("stream starts");
    let first = stream.next().expect("an item");
    assert!(
        matches!(first, Err(Error::NonFiniteLogits { .. })),
        "{first:?}"
    );
    assert!(stream.next().is_none(), "the stream ends after an error");
    drop(stream); // gives the session back
    let out = g.generate_batch(&[GenerateRequest::new(tokens(2, 3)).max_tokens(2)]);
    assert!(out[0].is_err(), "{:?}", out[0]);
}
