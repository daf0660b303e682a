//! Prompts prefilled a few columns at a time (`GeneratorOptions::prefill_chunk`) give what
//! whole prompts give: left-padded batches whose first chunks hold only padding for the
//! shorter rows, adapters, cached prefixes, rows joining mid-decode, seeded sampling, and the
//! prompt caches that scoring builds; on the portable graph, on the fused one (where only a
//! single row is chunked) and on the static one (each row into its buffer, a chunk a pass).

use super::fused::export_variant;
use super::static_layout::{serves_mixed_adapters_through_slots, static_export};
use super::*;

/// The model in `dir` with adapters `a` and `b`, prefilling `chunk` columns per pass.
fn chunked(dir: &Path, chunk: usize) -> Generator {
    loaded(
        dir,
        GeneratorOptions {
            prefill_chunk: chunk,
            prompt_cache_bytes: 64 << 20,
            ..GeneratorOptions::default()
        },
    )
}

/// The model in `dir` loaded with `options`, adapters `a` and `b` registered.
fn loaded(dir: &Path, options: GeneratorOptions) -> Generator {
    let f = fixture();
    let g = Generator::load_with(dir, options).expect("load the tiny model");
    g.add_adapter("a", &f.a).expect("register a");
    g.add_adapter("b", &f.b).expect("register b");
    g
}

#[test]
fn prompts_in_chunks_generate_what_whole_prompts_do() {
    // 5 columns a pass: the batch's 17-column prompts take 4 passes, the 90-token joiner 18
    for chunk in [1, 5] {
        let g = chunked(&fixture().model, chunk);
        generates_what(&g, tiny());
    }
    // 0 prefills whole prompts, as a chunk longer than every prompt does
    generates_what(&chunked(&fixture().model, 0), tiny());
}

#[test]
fn prompts_in_chunks_score_what_whole_prompts_do() {
    // scoring keeps the cache of its prompt but the last token, made here in chunks of 4
    let g = chunked(&fixture().model, 4);
    let (ctx, cont) = (toks(83, 23), toks(84, 7));
    let masks: Vec<Vec<bool>> = (0..4)
        .map(|m| (0..ctx.len()).map(|i| i % 4 != m || i == 0).collect())
        .collect();
    scores_what_the_portable_graph_does(&g, &ctx, &cont, &masks, 1e-5);
    let all = vec![vec![true; ctx.len()]];
    let got = g
        .score_masked(&ctx, &cont, &all, &[])
        .expect("score_masked");
    let want = numpy(&[(&ctx, &cont, vec![])]);
    assert_close(&got[0], &want[0].0, "chunked prompt cache vs numpy");
}

#[test]
fn a_fused_graph_chunks_single_rows_and_generates_what_the_portable_one_does() {
    let dir = export_variant("fused-chunks", &["--ops", "fused"]);
    let g = chunked(&dir, 3);
    assert_eq!(g.config().ops, tribute_inference::GraphOps::Fused);
    generates_what(&g, tiny());
}

#[test]
fn a_static_graph_prefills_rows_in_chunks_and_generates_what_the_portable_one_does() {
    let dir = static_export("static-chunks", &[]);
    let g = chunked(&dir, 3);
    assert_eq!(g.config().ops, tribute_inference::GraphOps::Static);
    generates_what(&g, tiny());
    // rows of different adapters through slots, each prefilled a chunk at a time
    let slots = loaded(
        &dir,
        GeneratorOptions {
            prefill_chunk: 2,
            adapter_slots: 2,
            slot_rank: 8,
            ..GeneratorOptions::default()
        },
    );
    serves_mixed_adapters_through_slots(&slots, tiny());
}
