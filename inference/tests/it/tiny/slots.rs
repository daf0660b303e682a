//! Adapter slots: rows of different adapter sets (and base-model rows) in one batch, each
//! equal to its request run alone without slots; more sets than slots; bad input.

use super::*;

fn slotted(slots: usize, slot_rank: usize, io_binding: bool) -> Generator {
    with_options(GeneratorOptions {
        adapter_slots: slots,
        slot_rank,
        io_binding: Some(io_binding),
        ..GeneratorOptions::default()
    })
}

/// The tiny model with adapters "a" and "b" registered.
fn with_options(options: GeneratorOptions) -> Generator {
    let f = fixture();
    let g =
        Generator::load_with(&f.model, options).expect("load the tiny model with adapter slots");
    g.add_adapter("a", &f.a).expect("register a");
    g.add_adapter("b", &f.b).expect("register b");
    g
}

/// Requests over `sets` (by index), with prompts of different lengths, greedy and sampled.
fn requests(sets: &[&[(&str, f32)]]) -> Vec<GenerateRequest> {
    sets.iter()
        .enumerate()
        .map(|(i, set)| {
            let mut r = GenerateRequest::new(tokens(70 + i as u64, 3 + 4 * i))
                .max_tokens(8 + 3 * (i % 3))
                .ignore_eos(true);
            if i % 2 == 1 {
                r = r.temperature(0.8).seed(i as u64);
            }
            for (id, w) in *set {
                r = r.adapter(*id, *w);
            }
            r
        })
        .collect()
}

/// Every row equals the same request run alone by the generator without slots.
fn assert_each_equals_alone(
    got: &[tribute_inference::Result<Generation>],
    reqs: &[GenerateRequest],
) {
    for (i, (g, r)) in got.iter().zip(reqs).enumerate() {
        let g = g.as_ref().unwrap_or_else(|e| panic!("row {i}: {e}"));
        assert_same(
            g,
            &run_one(tiny(), r),
            &format!("row {i} vs alone, no slots"),
        );
    }
}

#[test]
fn rows_of_different_adapters_share_one_batch_and_equal_each_request_alone() {
    let sets: [&[(&str, f32)]; 6] = [
        &[],
        &[("a", 1.0)],
        &[("b", 1.0)],
        &[("a", 0.5), ("b", -0.7)], // a merge (q_proj rank 4 + 2), one slot
        &[("a", 1.0)],
        &[],
    ];
    let reqs = requests(&sets);
    for io_binding in [false, true] {
        let g = slotted(4, 8, io_binding);
        let got = g.generate_batch(&reqs);
        assert_each_equals_alone(&got, &reqs);
        // One batch: every row saw all six rows in flight.
        for (i, r) in got.iter().enumerate() {
            let t = r.as_ref().expect("row").timings;
            assert_eq!(
                t.batch_size,
                sets.len(),
                "row {i}'s batch (io_binding {io_binding})"
            );
        }
        // Requests joining the running batch mid-decode with other adapters.
        let first = GenerateRequest::new(tokens(90, 6))
            .max_tokens(12)
            .ignore_eos(true)
            .adapter("b", 1.0);
        let joiners = requests(&[&[("a", 1.0)], &[], &[("a", 0.5), ("b", -0.7)]]);
        let out = crate::join_mid_decode(&g, &first, &joiners, 3);
        assert_same(&out[0], &run_one(tiny(), &first), "first row");
        for (i, (o, r)) in out[1..].iter().zip(&joiners).enumerate() {
            assert_same(o, &run_one(tiny(), r), &format!("joiner {i}"));
        }
    }
}

/// A slotted row's prompt is kept under its own adapter set: that set's scorings (run with
/// its own weights, not the slot bank's) start from it, and so do later prompts that start
/// like it, which answer as when run in full without slots.
#[test]
fn slotted_rows_keep_their_prompts_for_their_own_sets() {
    let cache = 64 << 20;
    let g = with_options(GeneratorOptions {
        adapter_slots: 2,
        slot_rank: 8,
        prompt_cache_bytes: cache,
        ..GeneratorOptions::default()
    });
    let fresh = with_options(GeneratorOptions::default());
    let head = toks(81, 24);
    let prompt = |tail: u64| -> Vec<u32> { head.iter().copied().chain(toks(tail, 5)).collect() };
    let request = |p: Vec<u32>, adapter: &str| {
        GenerateRequest::new(Prompt::Tokens(p))
            .max_tokens(6)
            .ignore_eos(true)
            .keep_prompt_cache(true)
            .adapter(adapter, 1.0)
    };
    let first = [request(prompt(82), "a"), request(prompt(83), "b")];
    for r in g.generate_batch(&first) {
        assert_eq!(r.expect("slotted").timings.batch_size, 2, "one mixed batch");
    }
    assert_eq!(
        g.prompt_cache_stats().entries,
        2,
        "both slotted prompts kept"
    );

    // Scoring under each row's own set finds its prompt and equals a fresh scoring.
    let answer = toks(84, 6);
    for (p, id) in [(prompt(82), "a"), (prompt(83), "b")] {
        let adapters = [(id.to_string(), 1.0)];
        let masks = vec![vec![true; p.len()]];
        let before = g.prompt_cache_stats().hits;
        let got = g
            .score_masked(&p, &answer, &masks, &adapters)
            .expect("score");
        assert_eq!(g.prompt_cache_stats().hits, before + 1, "{id}: a hit");
        let want = fresh
            .score_masked(&p, &answer, &masks, &adapters)
            .expect("fresh");
        assert_close(
            &got[0],
            &want[0],
            &format!("{id}: from the slotted row's cache"),
        );
    }

    // Later prompts sharing the head are prefilled from it, through the slots again.
    let before = g.prompt_cache_stats();
    let later = [request(prompt(85), "a"), request(prompt(86), "b")];
    let got = g.generate_batch(&later);
    for (r, req) in got.iter().zip(&later) {
        assert_same(
            r.as_ref().expect("later"),
            &run_one(&fresh, req),
            "prefilled from the cache",
        );
    }
    let after = g.prompt_cache_stats();
    assert_eq!(
        (
            after.prefill_hits - before.prefill_hits,
            after.prefill_tokens - before.prefill_tokens
        ),
        (2, 2 * head.len() as u64),
        "both later prompts took the shared head from the cache"
    );
}

#[test]
fn more_adapter_sets_than_slots_wait_for_a_free_slot() {
    // Five distinct sets, two slots: the batch runs what fits and the rest join as rows
    // finish and free their slots.
    let sets: [&[(&str, f32)]; 6] = [
        &[("a", 1.0)],
        &[("b", 1.0)],
        &[("a", 0.5), ("b", 0.5)],
        &[],
        &[("a", 0.25)],
        &[("b", 2.0)],
    ];
    let reqs = requests(&sets);
    let g = slotted(2, 8, false);
    let got = g.generate_batch(&reqs);
    assert_each_equals_alone(&got, &reqs);
    assert!(
        got.iter()
            .any(|r| r.as_ref().expect("row").timings.batch_size < sets.len()),
        "with two slots not every row can run at once"
    );
}

#[test]
fn a_set_whose_rank_exceeds_the_slot_runs_apart_and_old_models_say_re_export() {
    let g = slotted(2, 4, false);
    // a has rank 4, b ranks 2 and 3: each fits; their merge (q_proj: 4 + 2) does not, so
    // it runs in a batch of its own set next to the slotted rows, as without slots.
    let reqs = requests(&[
        &[("a", 1.0)],
        &[("a", 1.0), ("b", 1.0)],
        &[("b", 1.0)],
        &[],
        &[("a", 1.0), ("b", 1.0)],
    ]);
    let got = g.generate_batch(&reqs);
    assert_each_equals_alone(&got, &reqs);
    let batch = |i: usize| got[i].as_ref().expect("generation").timings.batch_size;
    assert_eq!(
        batch(0),
        3,
        "a, b and the base model share the slotted batch"
    );
    assert_eq!(
        batch(1),
        2,
        "the two merges run together, apart from the slots"
    );

    // A model exported before the mask: slots are refused with a pointer to re-export,
    // and the same model loads without slots.
    let old = model_copy("no-lora-mask");
    let path = old.join("tribute.json");
    let mut tj: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    tj["lora"]
        .as_object_mut()
        .expect("lora")
        .remove("mask")
        .expect("the export names its mask");
    std::fs::write(&path, tj.to_string()).expect("write");
    let e = Generator::load_with(
        &old,
        GeneratorOptions {
            adapter_slots: 2,
            ..GeneratorOptions::default()
        },
    )
    .map(|_| ());
    match err(e, "slots on a model without lora_mask") {
        Error::ModelDirectory { reason, .. } => {
            assert!(reason.contains("re-export"), "{reason}")
        }
        e => panic!("expected a model directory error, got {e:?}"),
    }
    Generator::load(&old).expect("without slots it loads");
}
