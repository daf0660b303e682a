//! `logits_to_keep`: the head runs on the positions whose logits are read. Models exported
//! before that input (logits for every position) must give the same results.

use super::*;

/// A copy of the tiny model as exported before `logits_to_keep`: the slice before the head
/// removed from the graph, and the input from `tribute.json`.
fn legacy_model() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = model_copy("legacy-all-logits");
        let surgery = r#"
import json, os, sys
import onnx
d = sys.argv[1]
p = os.path.join(d, "model.onnx")
m = onnx.load(p, load_external_data=False)
g = m.graph
kept = next(n for n in g.node if n.output[0] == "kept_hidden")
src, out = kept.input[0], kept.output[0]
drop = {out, "logits_from", "kept_positions", "kept_seq_len"}
for n in g.node:
    for i, x in enumerate(n.input):
        if x == out:
            n.input[i] = src
keep_nodes = [n for n in g.node if n.output[0] not in drop]
del g.node[:]
g.node.extend(keep_nodes)
for coll in (g.input, g.initializer):
    keep = [x for x in coll if x.name != "logits_to_keep"]
    del coll[:]
    coll.extend(keep)
onnx.save(m, p)
tj = os.path.join(d, "tribute.json")
cfg = json.load(open(tj))
del cfg["inputs"]["logits_to_keep"]
json.dump(cfg, open(tj, "w"), indent=2)
"#;
        let out = Command::new(python())
            .args(["-c", surgery, s(&d)])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "graph surgery failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    })
}

#[test]
fn the_exported_model_limits_logits_and_a_legacy_graph_still_works() {
    let f = fixture();
    let tj: Value = serde_json::from_str(
        &std::fs::read_to_string(f.model.join("tribute.json")).expect("tribute.json"),
    )
    .expect("json");
    assert_eq!(tj["inputs"]["logits_to_keep"], "logits_to_keep");
    let legacy = Generator::load(legacy_model()).expect("load the legacy model");
    assert!(legacy.config().inputs.logits_to_keep.is_none());
    let g = tiny();
    assert_eq!(
        g.config().inputs.logits_to_keep.as_deref(),
        Some("logits_to_keep")
    );

    // Generation: prompts of different lengths in one left-padded batch, and one alone.
    let reqs: Vec<GenerateRequest> = [(41, 5), (42, 13), (43, 9)]
        .iter()
        .map(|&(seed, n)| {
            GenerateRequest::new(tokens(seed, n))
                .max_tokens(8)
                .ignore_eos(true)
        })
        .collect();
    let new = g.generate_batch(&reqs);
    let old = legacy.generate_batch(&reqs);
    for (i, (n, o)) in new.iter().zip(&old).enumerate() {
        let (n, o) = (n.as_ref().expect("new"), o.as_ref().expect("legacy"));
        assert_same(n, o, &format!("batched row {i}"));
        assert_same(&run_one(g, &reqs[i]), n, &format!("row {i} alone"));
    }

    // Teacher-forced scoring: every continuation position, with and without an adapter.
    let (ctx, cont) = (toks(44, 9), toks(45, 6));
    for ad in [adapters(&[]), adapters(&[("a", 1.0)])] {
        let got = g.log_probs(&ctx, &cont, &ad).expect("log_probs");
        legacy.add_adapter("a", &f.a).expect("register a");
        let want = legacy
            .log_probs(&ctx, &cont, &ad)
            .expect("legacy log_probs");
        assert_eq!(got.len(), cont.len());
        assert!(
            max_diff(&got, &want) <= 1e-5,
            "log_probs {ad:?}: {got:?} vs {want:?}"
        );
    }
    let refs = numpy(&[(&ctx, &cont, vec![])]);
    assert_close(
        &g.log_probs(&ctx, &cont, &[]).expect("log_probs"),
        &refs[0].0,
        "log_probs vs numpy",
    );
    // A one-token continuation: the smallest tail.
    let one = g.log_probs(&ctx, &cont[..1], &[]).expect("log_probs");
    assert!(max_diff(&one, &refs[0].0[..1]) <= TOL);

    // Masked scoring.
    let mut hide = vec![true; ctx.len()];
    hide[1..4].iter_mut().for_each(|m| *m = false);
    let masks = vec![vec![true; ctx.len()], hide];
    let got = g
        .score_masked(&ctx, &cont, &masks, &[])
        .expect("score_masked");
    let want = legacy
        .score_masked(&ctx, &cont, &masks, &[])
        .expect("legacy score_masked");
    for (a, b) in got.iter().zip(&want) {
        assert!(max_diff(a, b) <= 1e-5, "score_masked: {a:?} vs {b:?}");
    }
}
