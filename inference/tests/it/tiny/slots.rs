//! Adapter slots: rows of different adapter sets (and base-model rows) in one batch, each
//! equal to its request run alone without slots; more sets than slots; bad input.

use super::*;

fn slotted(slots: usize, slot_rank: usize, io_binding: bool) -> Generator {
    let f = fixture();
    let g = Generator::load_with(
        &f.model,
        GeneratorOptions {
            adapter_slots: slots,
            slot_rank,
            io_binding: Some(io_binding),
            ..GeneratorOptions::default()
        },
    )
    .expect("load the tiny model with adapter slots");
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
