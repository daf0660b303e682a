//! A graph exported with `--ops static` (rows right-padded in cache buffers that the graph
//! writes in place) runs through the generator and gives the portable graph's results:
//! one-row prefills into a batch's buffers, rows joining mid-decode and leaving, a cached
//! prefix, adapters and adapter slots, and scoring (masked scoring leaves the hidden columns
//! out of the past, since the layout has no mask inside a row).

use super::*;
use tribute_inference::{FloatDtype, GraphOps};

/// The tiny model's weights exported with `--ops static` (and `flags`): the directory.
pub(super) fn static_export(name: &str, flags: &[&str]) -> PathBuf {
    let f = fixture();
    let out = scratch(name).join("model");
    let mut args = vec![
        "--source",
        s(&f.hf),
        "--out",
        s(&out),
        "--name",
        MODEL_NAME,
        "--ops",
        "static",
    ];
    args.extend(flags);
    export(&args);
    out
}

/// [`static_export`] loaded, adapters registered.
fn static_model(name: &str, flags: &[&str], options: GeneratorOptions) -> Generator {
    let f = fixture();
    let out = static_export(name, flags);
    let g = Generator::load_with(&out, options).expect("load the static tiny model");
    g.add_adapter("a", &f.a).expect("register a");
    g.add_adapter("b", &f.b).expect("register b");
    g
}

/// `--compute fp16`: a float16 cache, arithmetic in float16 (on the CPU, kernels widen
/// most of it to float32 inside).
fn static_fp16() -> &'static Generator {
    static G: OnceLock<Generator> = OnceLock::new();
    G.get_or_init(|| {
        static_model(
            "static-fp16",
            &["--compute", "fp16"],
            GeneratorOptions {
                prompt_cache_bytes: 64 << 20,
                ..GeneratorOptions::default()
            },
        )
    })
}

fn static_tiny() -> &'static Generator {
    static G: OnceLock<Generator> = OnceLock::new();
    G.get_or_init(|| {
        static_model(
            "static",
            &[],
            GeneratorOptions {
                prompt_cache_bytes: 64 << 20,
                ..GeneratorOptions::default()
            },
        )
    })
}

#[test]
fn a_static_graph_generates_what_the_portable_one_does() {
    let g = static_tiny();
    assert_eq!(g.config().ops, GraphOps::Static);
    generates_what_the_portable_graph_does(g);
}

/// `.onnx_adapter` adapters apply only in runs without an IoBinding, which the static layout
/// writes its cache through: a clear error, and the generator keeps serving.
#[test]
fn an_onnx_adapter_on_a_static_graph_is_a_clear_error() {
    let g = static_tiny();
    g.add_adapter("onnx", onnx_adapter("static-onnx-adapter"))
        .expect("register the .onnx_adapter");
    let r = GenerateRequest::new(tokens(41, 4)).max_tokens(3);
    let e = err(g.generate(&r.clone().adapter("onnx", 1.0)), "onnx adapter");
    assert!(
        matches!(&e, Error::InvalidRequest(m) if m.contains(".onnx_adapter")),
        "{e}"
    );
    let r = r.ignore_eos(true);
    assert_same(&run_one(g, &r), &run_one(tiny(), &r), "after the error");
}

/// Adapter slots: rows of different adapters (and the base model) in one static batch.
#[test]
fn a_static_graph_serves_mixed_adapters_through_slots() {
    let slots = GeneratorOptions {
        adapter_slots: 2,
        slot_rank: 8,
        ..GeneratorOptions::default()
    };
    serves_mixed_adapters_through_slots(&static_model("static-slots", &[], slots), tiny());
}

/// The same with `--compute fp16`, whose LoRA inputs and mask are float16: each row gives
/// what it gives alone, fed plainly (no slots), on the same graph.
#[test]
fn a_float16_graph_serves_mixed_adapters_through_float16_slots() {
    let fp16 = ["--compute", "fp16"];
    let slots = GeneratorOptions {
        adapter_slots: 2,
        slot_rank: 8,
        ..GeneratorOptions::default()
    };
    let g = static_model("static-fp16-slots", &fp16, slots);
    assert_eq!(g.config().lora.dtype, FloatDtype::Float16);
    let alone = static_model("static-fp16-plain", &fp16, GeneratorOptions::default());
    serves_mixed_adapters_through_slots(&g, &alone);
}

pub(super) fn serves_mixed_adapters_through_slots(g: &Generator, want: &Generator) {
    let reqs: Vec<GenerateRequest> = [(61, 6, Some("a")), (62, 13, None), (63, 4, Some("b"))]
        .iter()
        .map(|&(seed, n, ad)| {
            let r = GenerateRequest::new(tokens(seed, n))
                .max_tokens(8)
                .ignore_eos(true);
            match ad {
                Some(a) => r.adapter(a, 1.0),
                None => r,
            }
        })
        .collect();
    for (i, (got, r)) in g.generate_batch(&reqs).iter().zip(&reqs).enumerate() {
        let got = got.as_ref().expect("slotted static generation");
        assert_same(got, &run_one(want, r), &format!("slotted row {i}"));
    }
}

#[test]
fn a_static_graph_scores_what_the_portable_one_does() {
    let (g, want) = (static_tiny(), tiny());
    let (ctx, cont) = (toks(81, 11), toks(82, 6));
    // Hidden tokens anywhere in the prompt, the first one, and none.
    let mut masks: Vec<Vec<bool>> = (0..4)
        .map(|m| (0..ctx.len()).map(|i| i % 4 != m || i == 0).collect())
        .collect();
    masks.push((0..ctx.len()).map(|i| i != 0).collect());
    masks.push(vec![true; ctx.len()]);
    scores_what_the_portable_graph_does(g, &ctx, &cont, &masks, 1e-5);
    // The answer a generation wrote, scored from the prompt it kept.
    let prompt = toks(83, 14);
    let r = GenerateRequest::new(Prompt::Tokens(prompt.clone()))
        .max_tokens(5)
        .ignore_eos(true)
        .keep_prompt_cache(true);
    let answer = run_one(g, &r).tokens;
    let hits = g.prompt_cache_stats().hits;
    let got = g
        .score_masked(&prompt, &answer, &masks_for(prompt.len()), &[])
        .expect("scored from the kept prompt");
    assert!(
        g.prompt_cache_stats().hits > hits,
        "the kept prompt was used"
    );
    let expected = want
        .score_masked(&prompt, &answer, &masks_for(prompt.len()), &[])
        .expect("portable");
    for (a, b) in got.iter().zip(&expected) {
        assert!(max_diff(a, b) <= 1e-5, "kept prompt: {a:?} vs {b:?}");
    }
}

fn masks_for(n: usize) -> Vec<Vec<bool>> {
    vec![(0..n).map(|i| i % 3 != 2).collect(), vec![true; n]]
}

/// Gemma 3's sliding window (8 keys in the tiny shape): generation past the window equals
/// the portable export's; masked scoring is exact within the window and refused across it.
#[test]
fn a_static_sliding_window_model_generates_past_the_window_and_scores_within_it() {
    let f = fixture();
    let dirs: Vec<PathBuf> = [("portable", "portable"), ("static", "static")]
        .iter()
        .map(|(name, ops)| {
            let out = scratch(&format!("gemma3-{name}")).join("model");
            export(&[
                "--random",
                "tiny-gemma3",
                "--seed",
                "4",
                "--out",
                s(&out),
                "--tokenizer",
                s(&f.model),
                "--ops",
                ops,
            ]);
            out
        })
        .collect();
    let want = Generator::load(&dirs[0]).expect("portable gemma3");
    let g = Generator::load(&dirs[1]).expect("static gemma3");
    assert_eq!(g.config().sliding_window, Some(8));
    let reqs: Vec<GenerateRequest> = [(51, 3), (52, 11)]
        .iter()
        .map(|&(seed, n)| {
            GenerateRequest::new(tokens(seed, n))
                .max_tokens(14)
                .ignore_eos(true)
        })
        .collect();
    for (i, (got, r)) in g.generate_batch(&reqs).iter().zip(&reqs).enumerate() {
        let got = got.as_ref().expect("static gemma3 generation");
        assert_same(got, &run_one(&want, r), &format!("gemma3 row {i}"));
    }
    let (ctx, cont) = (toks(53, 5), toks(54, 3));
    let masks = vec![vec![true, false, true, false, true], vec![true; 5]];
    let got = g
        .score_masked(&ctx, &cont, &masks, &[])
        .expect("within the window");
    let expected = want
        .score_masked(&ctx, &cont, &masks, &[])
        .expect("portable");
    for (a, b) in got.iter().zip(&expected) {
        assert!(
            max_diff(a, b) <= 1e-5,
            "gemma3 within the window: {a:?} vs {b:?}"
        );
    }
    let long = toks(55, 9);
    let e = err(
        g.score_masked(&long, &cont, &[vec![true; 9]], &[]),
        "across the window",
    );
    assert!(
        matches!(&e, Error::InvalidRequest(m) if m.contains("sliding window (8 tokens)")),
        "{e}"
    );
}

/// A float16 cache (`--ops static --compute fp16`, the GPU export): the buffers hold
/// float16, and rows moving between batches and the prompt cache widen it to float32 and
/// back (exactly). Every request gives what it gives alone on the same graph (a second
/// generator, without a prompt cache); greedy tokens equal the float32 graph's on short
/// prompts, and scores are within float16's rounding of it (a 24-token run meets a near tie
/// at its 19th token, so longer runs are compared with the float16 graph only).
#[test]
fn a_float16_cache_generates_and_scores_as_the_float32_graph_does() {
    let g = static_fp16();
    assert_eq!(g.config().kv_dtype, FloatDtype::Float16);
    let alone = static_model(
        "static-fp16-alone",
        &["--compute", "fp16"],
        GeneratorOptions::default(),
    );
    generates_what(g, &alone);
    for seed in 0..6 {
        let r = GenerateRequest::new(tokens(100 + seed, 3 + 2 * seed as usize))
            .max_tokens(12)
            .ignore_eos(true);
        assert_same(
            &run_one(g, &r),
            &run_one(tiny(), &r),
            &format!("seed {seed}"),
        );
    }
    let (ctx, cont) = (toks(84, 12), toks(85, 5));
    let masks = vec![
        (0..ctx.len()).map(|i| i % 3 != 1).collect(),
        vec![true; ctx.len()],
    ];
    scores_what_the_portable_graph_does(g, &ctx, &cont, &masks, 2e-2);
}

/// A config whose `kv_dtype` or `lora.dtype` is not the graph's is refused at load, naming
/// both.
#[test]
fn a_dtype_other_than_the_graphs_is_a_model_directory_error() {
    let _ = static_fp16();
    let from = fixture().root.join("static-fp16/model");
    for (name, edit, says) in [
        (
            "kv-said-fp32",
            (|tj: &mut serde_json::Value| tj["kv_dtype"] = serde_json::json!("float32"))
                as fn(&mut serde_json::Value),
            "kv_dtype is Float32",
        ),
        (
            "lora-said-fp32",
            |tj| tj["lora"]["dtype"] = serde_json::json!("float32"),
            "lora.dtype is Float32",
        ),
    ] {
        let e = err(Generator::load(edited_copy(&from, name, edit)), name);
        assert!(
            matches!(&e, Error::ModelDirectory { reason, .. }
                if reason.contains("Float16") && reason.contains(says)),
            "{name}: {e}"
        );
    }
}

/// Greedy rows take the graph's argmax (`next_token`) instead of reading logits; where the
/// logits are not finite the graph says so (-1), and the row fails as a sampled row does.
#[test]
fn non_finite_logits_fail_rows_that_take_the_graphs_argmax() {
    let dir = static_export("static-nan", &[]);
    reference(&["nan-weights", "--model", s(&dir)], None);
    let g = Generator::load(&dir).expect("a NaN model still loads");
    let greedy = GenerateRequest::new(tokens(1, 4)).max_tokens(3);
    let sampled = greedy.clone().temperature(0.8).seed(3);
    for (r, what) in [(&greedy, "greedy"), (&sampled, "sampled")] {
        let e = err(g.generate(r), what);
        assert!(
            matches!(e, Error::NonFiniteLogits { step: 0, row: 0 }),
            "{what}: {e:?}"
        );
    }
}

/// Decode steps at fixed shapes and addresses, as CUDA graphs capture them
/// (`cuda_graphs`): on the CPU the same steps run uncaptured, covering every row the
/// buffers hold (rows not in use padded) at their full width. The whole scenario gives what
/// each request gives alone on the portable graph. Every run of such an engine goes through
/// its own thread (as ONNX Runtime's per-thread graphs need): scoring, and generations asked
/// from several threads at once, give what they give on the portable graph too.
#[test]
fn fixed_decode_steps_generate_what_the_portable_graph_does() {
    let g = static_model(
        "static-fixed",
        &[],
        GeneratorOptions {
            prompt_cache_bytes: 64 << 20,
            cuda_graphs: Some(true),
            ..GeneratorOptions::default()
        },
    );
    generates_what_the_portable_graph_does(&g);
    let (ctx, cont) = (toks(84, 11), toks(85, 6));
    let masks: Vec<Vec<bool>> = (0..3)
        .map(|m| (0..ctx.len()).map(|i| i % 3 != m || i == 0).collect())
        .collect();
    scores_what_the_portable_graph_does(&g, &ctx, &cont, &masks, 1e-5);
    let reqs: Vec<GenerateRequest> = (0..4)
        .map(|i| {
            GenerateRequest::new(tokens(90 + i, 4 + i as usize))
                .max_tokens(6)
                .ignore_eos(true)
        })
        .collect();
    std::thread::scope(|s| {
        let callers: Vec<_> = reqs.iter().map(|r| s.spawn(|| run_one(&g, r))).collect();
        for (caller, r) in callers.into_iter().zip(&reqs) {
            let got = caller.join().expect("a caller thread");
            assert_same(&got, &run_one(tiny(), r), "asked from a thread of its own");
        }
    });
}

/// Fixed steps with adapter slots, float16 LoRA columns and a float16 cache: rows of
/// different adapters (and base-model rows alone, whose steps bind other adapter tensors)
/// give what they give alone.
#[test]
fn fixed_decode_steps_serve_mixed_adapters_through_float16_slots() {
    let fp16 = ["--compute", "fp16"];
    let fixed = GeneratorOptions {
        adapter_slots: 2,
        slot_rank: 8,
        cuda_graphs: Some(true),
        ..GeneratorOptions::default()
    };
    let g = static_model("static-fp16-fixed-slots", &fp16, fixed);
    serves_mixed_adapters_through_slots(&g, static_fp16());
    // A base-model row alone, then with a slotted row joining: the batch's steps switch
    // between the two sets of adapter tensors.
    let first = GenerateRequest::new(tokens(64, 5))
        .max_tokens(16)
        .ignore_eos(true);
    let joiners = [GenerateRequest::new(tokens(65, 3))
        .max_tokens(4)
        .ignore_eos(true)
        .adapter("a", 1.0)];
    let got = crate::join_mid_decode(&g, &first, &joiners, 3);
    for (i, (r, got)) in std::iter::once(&first)
        .chain(&joiners)
        .zip(&got)
        .enumerate()
    {
        assert_same(got, &run_one(static_fp16(), r), &format!("row {i}"));
    }
}

/// Fixed steps need the static layout's buffers: asking for them on another layout is an
/// error, not a silent fallback.
#[test]
fn cuda_graphs_on_a_portable_graph_are_refused() {
    let e = Generator::load_with(
        &fixture().model,
        GeneratorOptions {
            cuda_graphs: Some(true),
            ..GeneratorOptions::default()
        },
    )
    .expect_err("cuda_graphs on a portable export");
    assert!(
        matches!(&e, Error::InvalidRequest(m) if m.contains("--ops static")),
        "{e}"
    );
}
