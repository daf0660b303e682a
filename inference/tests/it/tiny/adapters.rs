//! LoRA adapters against the numpy reference, `.onnx_adapter` files, and the adapter
//! registry's budget and eviction.

use super::*;

#[test]
fn lora_log_probs_match_numpy() {
    let g = tiny();
    let f = fixture();
    let context = toks(60, 9);
    let cont = toks(61, 12);
    // (adapters by id, the same as PEFT directories for numpy)
    type Case<'a> = (&'a [(&'a str, f32)], Vec<(&'a Path, f32)>);
    let cases: Vec<Case<'_>> = vec![
        (&[], vec![]),
        (&[("a", 1.0)], vec![(&f.a, 1.0)]),
        (&[("b", 1.0)], vec![(&f.b, 1.0)]),
        (&[("a", 0.7), ("b", -0.4)], vec![(&f.a, 0.7), (&f.b, -0.4)]),
        (&[("a", -1.5)], vec![(&f.a, -1.5)]),
    ];
    let queries: Vec<Query<'_>> = cases
        .iter()
        .map(|(_, ad)| (&context[..], &cont[..], ad.clone()))
        .collect();
    let want = numpy(&queries);
    let mut got_all = Vec::new();
    for ((set, _), (want_lp, _)) in cases.iter().zip(&want) {
        let got = g
            .log_probs(&context, &cont, &adapters(set))
            .unwrap_or_else(|e| panic!("log_probs {set:?}: {e}"));
        assert_close(&got, want_lp, &format!("log_probs with {set:?}"));
        got_all.push(got);
    }
    // The adapters change the model noticeably (so the check above can fail).
    for (i, got) in got_all.iter().enumerate().skip(1) {
        let d = max_diff(got, &got_all[0]);
        assert!(d > 0.05, "case {i} differs from the base model by only {d}");
    }
    // The merge is not just one of its parts.
    assert!(max_diff(&got_all[3], &got_all[1]) > 0.01 && max_diff(&got_all[3], &got_all[2]) > 0.01);
}

#[test]
fn onnx_adapter_file_equals_its_peft_directory() {
    let f = fixture();
    let file = onnx_adapter("onnx-adapter");
    let g = Generator::load(&f.model).expect("load");
    g.add_adapter("peft", &f.a).expect("register peft");
    g.add_adapter("onnx", &file).expect("register onnx_adapter");
    let context = toks(62, 7);
    let cont = toks(63, 10);
    let peft = g
        .log_probs(&context, &cont, &adapters(&[("peft", 1.0)]))
        .expect("peft");
    let onnx = g
        .log_probs(&context, &cont, &adapters(&[("onnx", 1.0)]))
        .expect("onnx");
    let base = g.log_probs(&context, &cont, &[]).expect("base");
    assert!(
        max_diff(&onnx, &peft) < 1e-5,
        "onnx {onnx:?}\npeft {peft:?}"
    );
    assert!(
        max_diff(&onnx, &base) > 0.05,
        "the .onnx_adapter is applied"
    );
    // Generation too, and the base model again afterwards (run options do not stick).
    let r = GenerateRequest::new(tokens(64, 5))
        .max_tokens(16)
        .ignore_eos(true);
    let with = |id: &str| run_one(&g, &r.clone().adapter(id, 1.0));
    assert_same(
        &Generation {
            adapters: vec![(id("peft"), 1.0)],
            ..with("onnx")
        },
        &with("peft"),
        "onnx vs peft generation",
    );
    let again = g.log_probs(&context, &cont, &[]).expect("base again");
    assert_eq!(again, base, "base model after an .onnx_adapter run");
    // An .onnx_adapter cannot be merged.
    let e = err(
        g.log_probs(&context, &cont, &adapters(&[("onnx", 0.5)])),
        "weighted onnx_adapter",
    );
    assert!(
        matches!(e, Error::Adapter(AdapterError::Request(_))),
        "{e:?}"
    );
}

// -------------------------------------------------------------------------------------------
// 7. Adapter registry

#[test]
fn registry_keeps_within_budget_and_evicts_least_recently_used() {
    let f = fixture();
    let dir = scratch("registry");
    let paths: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = dir.join(format!("c{i}"));
            write_peft(
                &p,
                &Lora {
                    targets: &["q_proj", "v_proj"],
                    seed: 100 + i,
                    ..Lora::default()
                },
            );
            p
        })
        .collect();
    let context = toks(70, 5);
    let cont = toks(71, 5);
    // Size of one resident adapter (all three have the same shapes).
    let probe = Generator::load(&f.model).expect("load");
    probe.add_adapter("c0", &paths[0]).expect("register");
    probe.adapters().preload(&[id("c0")]).expect("preload");
    let one = probe.adapters().stats().resident_bytes;
    assert!(one > 0);

    let budget = 2 * one + one / 2;
    let g = Generator::load_with(
        &f.model,
        GeneratorOptions {
            adapter_budget_bytes: budget,
            ..GeneratorOptions::default()
        },
    )
    .expect("load");
    let ids: Vec<AdapterId> = ["c0", "c1", "c2"]
        .iter()
        .zip(&paths)
        .map(|(n, p)| g.add_adapter(*n, p).expect("register"))
        .collect();
    let reg = g.adapters();
    assert_eq!(reg.stats().registered, 3);
    assert_eq!(reg.stats().resident, 0, "registering loads nothing");
    let mut first = BTreeMap::new();
    let mut use_ = |n: usize| {
        let lp = g
            .log_probs(&context, &cont, &adapters(&[(ids[n].as_str(), 1.0)]))
            .expect("log_probs");
        let st = reg.stats();
        assert!(st.resident_bytes <= budget, "{st:?}");
        assert_eq!(st.budget_bytes, budget);
        // Reloading an evicted adapter gives the same numbers.
        assert_eq!(*first.entry(n).or_insert_with(|| lp.clone()), lp, "c{n}");
    };
    let resident = |n: &[bool]| {
        for (i, want) in n.iter().enumerate() {
            assert_eq!(
                reg.is_resident(&ids[i]),
                *want,
                "c{i} resident? {:?}",
                reg.stats()
            );
        }
    };
    use_(0);
    use_(1);
    resident(&[true, true, false]);
    use_(2); // evicts c0, the least recently used
    resident(&[false, true, true]);
    use_(1);
    use_(0); // evicts c2: c1 was used more recently
    resident(&[true, true, false]);
    assert_eq!(reg.stats().resident_bytes, 2 * one);
    use_(2); // evicts c1
    resident(&[true, false, true]);

    assert!(reg.unload(&ids[0]));
    assert!(!reg.unload(&ids[0]), "already unloaded");
    resident(&[false, false, true]);
    assert_eq!(reg.stats().resident_bytes, one);
    reg.preload(&[ids[1].clone()]).expect("preload");
    resident(&[false, true, true]);
    assert_eq!(reg.stats().resident, 2);

    // Unknown ids.
    let e = err(
        g.generate(&GenerateRequest::new(tokens(1, 3)).adapter("nope", 1.0)),
        "unknown adapter",
    );
    assert!(
        matches!(&e, Error::Adapter(AdapterError::Unknown(n)) if n == "nope"),
        "{e:?}"
    );
    assert!(e.to_string().contains("nope"));
    let e = err(reg.preload(&[id("nope")]), "preload unknown");
    assert!(
        matches!(e, Error::Adapter(AdapterError::Unknown(_))),
        "{e:?}"
    );
    assert!(!reg.unload(&id("nope")));

    // An adapter larger than the whole budget.
    let small = Generator::load_with(
        &f.model,
        GeneratorOptions {
            adapter_budget_bytes: one / 2,
            ..GeneratorOptions::default()
        },
    )
    .expect("load");
    small.add_adapter("c0", &paths[0]).expect("register");
    let e = err(
        small.log_probs(&context, &cont, &adapters(&[("c0", 1.0)])),
        "over budget",
    );
    assert!(
        matches!(e, Error::Adapter(AdapterError::OverBudget { bytes, budget, .. }) if bytes == one && budget == one / 2),
        "{e:?}"
    );
}
