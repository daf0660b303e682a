//! A graph exported with `--ops fused` (ONNX Runtime's GroupQueryAttention and
//! SkipSimplifiedLayerNormalization) runs through the same generator as the portable one and
//! gives its results: left-padded batches, rows joining mid-decode and leaving, adapters,
//! the prompt cache, teacher-forced and masked scoring (which runs one mask per call on it).

use super::*;
use tribute_inference::GraphOps;

/// The tiny model's weights exported again with `flags`, into a scratch directory `name`.
pub(super) fn export_variant(name: &str, flags: &[&str]) -> PathBuf {
    let f = fixture();
    let out = scratch(name).join("model");
    let mut args = vec!["--source", s(&f.hf), "--out", s(&out), "--name", MODEL_NAME];
    args.extend_from_slice(flags);
    export(&args);
    out
}

/// The tiny model exported from the same weights with `--ops fused`, adapters registered,
/// with a prompt cache.
fn fused() -> &'static Generator {
    static G: OnceLock<Generator> = OnceLock::new();
    G.get_or_init(|| {
        let f = fixture();
        let out = export_variant("fused", &["--ops", "fused"]);
        let g = Generator::load_with(
            &out,
            GeneratorOptions {
                prompt_cache_bytes: 64 << 20,
                ..GeneratorOptions::default()
            },
        )
        .expect("load the fused tiny model");
        g.add_adapter("a", &f.a).expect("register a");
        g.add_adapter("b", &f.b).expect("register b");
        g
    })
}

#[test]
fn a_fused_graph_generates_what_the_portable_one_does() {
    let g = fused();
    assert_eq!(g.config().ops, GraphOps::Fused);
    assert_eq!(tiny().config().ops, GraphOps::Portable);
    generates_what_the_portable_graph_does(g);
}

#[test]
fn a_fused_graph_scores_what_the_portable_one_does() {
    let g = fused();
    let (ctx, cont) = (toks(81, 11), toks(82, 6));
    assert_close(
        &g.log_probs(&ctx, &cont, &[]).expect("log_probs"),
        &numpy(&[(&ctx, &cont, vec![])])[0].0,
        "fused log_probs vs numpy",
    );
    // More masks than one call could take on this graph: each runs on its own.
    let masks: Vec<Vec<bool>> = (0..5)
        .map(|m| (0..ctx.len()).map(|i| i % 5 != m || i == 0).collect())
        .collect();
    scores_what_the_portable_graph_does(g, &ctx, &cont, &masks, 1e-5);
}

/// `--compute fp16` (float16 inside the graph, float32 inputs and outputs): the generator
/// feeds and reads it as any other export; scores within fp16's precision of fp32's.
#[test]
fn an_fp16_compute_graph_runs_through_the_generator() {
    let f = fixture();
    let out = export_variant("fused-fp16", &["--ops", "fused", "--compute", "fp16"]);
    let g = Generator::load(&out).expect("load the fp16 tiny model");
    g.add_adapter("a", &f.a).expect("register a");
    let want = tiny();
    let (ctx, cont) = (toks(91, 12), toks(92, 5));
    for ad in [adapters(&[]), adapters(&[("a", 1.0)])] {
        let got = g.log_probs(&ctx, &cont, &ad).expect("fp16 log_probs");
        let expected = want.log_probs(&ctx, &cont, &ad).expect("fp32 log_probs");
        assert!(
            max_diff(&got, &expected) <= 2e-2,
            "log_probs {ad:?}: {got:?} vs {expected:?}"
        );
    }
    let masks = vec![
        vec![true; ctx.len()],
        (0..ctx.len()).map(|i| i % 3 != 1).collect(),
    ];
    let got = g
        .score_masked(&ctx, &cont, &masks, &[])
        .expect("fp16 score_masked");
    let expected = want
        .score_masked(&ctx, &cont, &masks, &[])
        .expect("fp32 score_masked");
    for (a, b) in got.iter().zip(&expected) {
        assert!(max_diff(a, b) <= 2e-2, "score_masked: {a:?} vs {b:?}");
    }
    let reqs: Vec<GenerateRequest> = [(93, 4), (94, 15)]
        .iter()
        .map(|&(seed, n)| {
            GenerateRequest::new(tokens(seed, n))
                .max_tokens(6)
                .ignore_eos(true)
        })
        .collect();
    for r in g.generate_batch(&reqs) {
        assert_eq!(r.expect("fp16 generation").tokens.len(), 6);
    }
}
