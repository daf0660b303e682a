//! Batching and concurrency: batched rows equal single runs, request order across adapter
//! sets, the context limit, several sessions, and the `IoBinding` path.

use super::*;

#[test]
fn batch_equals_single_runs_with_mixed_settings() {
    let g = tiny();
    // A stop string taken from request 3's own output, so that it stops early.
    let r3 = GenerateRequest::new(Prompt::Text("batch stop".into()))
        .max_tokens(40)
        .ignore_eos(true);
    let full3 = run_one(g, &r3);
    let stop = ascii_stop(&full3.text).expect("an ASCII pair in the output");
    let cancelled = CancelToken::new();
    cancelled.cancel();
    let requests = vec![
        GenerateRequest::new(tokens(10, 5))
            .max_tokens(24)
            .ignore_eos(true),
        GenerateRequest::new(tokens(11, 19))
            .max_tokens(30)
            .temperature(0.9)
            .top_k(40)
            .top_p(0.95)
            .seed(7),
        // Finishes after 3 tokens, in the middle of the prefill-length spread.
        GenerateRequest::new(tokens(12, 11))
            .max_tokens(3)
            .ignore_eos(true),
        r3.clone().stop(stop.clone()),
        GenerateRequest::new("a chat prompt")
            .max_tokens(17)
            .temperature(1.3)
            .seed(99)
            .repetition_penalty(1.2),
        GenerateRequest::new(tokens(13, 2))
            .max_tokens(1)
            .ignore_eos(true),
        // Cancelled before it starts: no tokens, the others go on.
        GenerateRequest::new(tokens(14, 8))
            .max_tokens(10)
            .cancel_token(cancelled),
    ];
    let batch = g.generate_batch(&requests);
    assert_eq!(batch.len(), requests.len());
    for (i, (r, b)) in requests.iter().zip(&batch).enumerate() {
        let b = b.as_ref().unwrap_or_else(|e| panic!("batch row {i}: {e}"));

        let single = run_one(g, r);
        assert_same(b, &single, &format!("batch row {i}"));
    }
    let b = |i: usize| batch[i].as_ref().expect("row");
    assert_eq!(b(0).tokens.len(), 24);
    assert_eq!(b(2).tokens.len(), 3);
    assert_eq!(b(5).tokens.len(), 1);
    assert_eq!(b(3).finish_reason, FinishReason::Stop(stop.clone()));
    assert!(full3.text.starts_with(&b(3).text) && b(3).text.len() < full3.text.len());
    assert_eq!(b(6).finish_reason, FinishReason::Cancelled);
    assert!(b(6).tokens.is_empty() && b(6).text.is_empty());
}

#[test]
fn batch_with_different_adapter_sets_keeps_request_order() {
    let g = tiny();
    let sets: [&[(&str, f32)]; 7] = [
        &[],
        &[("a", 1.0)],
        &[("b", 1.0)],
        &[],
        &[("a", 0.7), ("b", -0.4)],
        &[("a", 1.0)],
        &[("b", 1.0), ("a", 0.0)],
    ];
    let requests: Vec<GenerateRequest> = sets
        .iter()
        .enumerate()
        .map(|(i, set)| {
            let mut r = GenerateRequest::new(tokens(20 + i as u64 % 3, 4 + 3 * i))
                .max_tokens(6 + 2 * i)
                .ignore_eos(true);
            if i % 2 == 1 {
                r = r.temperature(0.8).seed(i as u64);
            }
            for (id, w) in *set {
                r = r.adapter(*id, *w);
            }
            r
        })
        .collect();
    let batch = g.generate_batch(&requests);
    let mut outputs = Vec::new();
    for (i, (r, b)) in requests.iter().zip(&batch).enumerate() {
        let b = b.as_ref().unwrap_or_else(|e| panic!("row {i}: {e}"));
        assert_eq!(b.tokens.len(), 6 + 2 * i, "row {i} is in request order");
        let want: Vec<(AdapterId, f32)> = {
            let mut v: Vec<(AdapterId, f32)> = sets[i]
                .iter()
                .filter(|(_, w)| *w != 0.0)
                .map(|(n, w)| (id(n), *w))
                .collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        assert_eq!(b.adapters, want, "row {i} adapters");
        assert_same(b, &run_one(g, r), &format!("row {i}"));
        outputs.push(b.tokens.clone());
    }
    // The adapters matter: the same prompt under base / a / b decodes differently.
    let same_prompt = |set: &[(&str, f32)]| {
        let mut r = GenerateRequest::new(tokens(5, 9))
            .max_tokens(12)
            .ignore_eos(true);
        for (id, w) in set {
            r = r.adapter(*id, *w);
        }
        run_one(g, &r).tokens
    };
    let base = same_prompt(&[]);
    assert_ne!(
        base,
        same_prompt(&[("a", 1.0)]),
        "adapter a changes the output"
    );
    assert_ne!(
        base,
        same_prompt(&[("b", 1.0)]),
        "adapter b changes the output"
    );
}

#[test]
fn batch_rows_near_the_context_limit() {
    let g = tiny();
    // Each fits: 4 + 252 = 256 and 20 + 5 = 25 tokens; padded together 20 + 252 > 256.
    let requests = [
        GenerateRequest::new(tokens(33, 4))
            .max_tokens(CONTEXT - 4)
            .ignore_eos(true),
        GenerateRequest::new(tokens(34, 20))
            .max_tokens(5)
            .ignore_eos(true),
    ];
    let batch = g.generate_batch(&requests);
    for (i, (r, b)) in requests.iter().zip(&batch).enumerate() {
        let b = b.as_ref().unwrap_or_else(|e| panic!("row {i}: {e}"));
        assert_same(b, &run_one(g, r), &format!("row {i}"));
    }
    assert_eq!(
        batch[0].as_ref().map(|g| g.tokens.len()).ok(),
        Some(CONTEXT - 4)
    );
}

#[test]
fn two_sessions_serve_four_threads_like_sequential_runs() {
    let f = fixture();
    let g = Generator::load_with(
        &f.model,
        GeneratorOptions {
            sessions: 2,
            intra_threads: Some(1),
            max_batch: 2,
            ..GeneratorOptions::default()
        },
    )
    .expect("load with 2 sessions");
    g.add_adapter("a", &f.a).expect("a");
    g.add_adapter("b", &f.b).expect("b");
    let requests: Vec<GenerateRequest> = (0..8u64)
        .map(|i| {
            let mut r = GenerateRequest::new(tokens(100 + i, 3 + i as usize))
                .max_tokens(12 + i as usize)
                .ignore_eos(true);
            if i % 2 == 0 {
                r = r.temperature(0.9).seed(i);
            }
            match i % 4 {
                1 => r.adapter("a", 1.0),
                2 => r.adapter("b", 1.0),
                3 => r.adapter("a", 0.5).adapter("b", 0.5),
                _ => r,
            }
        })
        .collect();
    let sequential: Vec<Generation> = requests.iter().map(|r| run_one(&g, r)).collect();
    // The shared one-session generator agrees.
    for (r, want) in requests.iter().zip(&sequential) {
        assert_same(&run_one(tiny(), r), want, "default generator");
    }
    let start = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let g = g.clone();
            let start = start.clone();
            let reqs = requests.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut out = Vec::new();
                for round in 0..2 {
                    if t == 3 && round == 1 {
                        // One thread batches everything (max_batch 2: several chunks).
                        out.extend(
                            g.generate_batch(&reqs)
                                .into_iter()
                                .enumerate()
                                .map(|(i, r)| (i, r.expect("batch row"))),
                        );
                    } else {
                        for i in (0..reqs.len()).filter(|i| (i + t + round) % 2 == 0) {
                            out.push((i, g.generate(&reqs[i]).expect("generate")));
                        }
                    }
                }
                out
            })
        })
        .collect();
    for h in handles {
        for (i, got) in h.join().expect("thread") {
            assert_same(&got, &sequential[i], &format!("concurrent request {i}"));
        }
    }
}

#[test]
fn io_binding_path_matches_plain_runs() {
    // CUDA keeps the KV cache on the device through an IoBinding; force that path on the
    // CPU and compare it with the default plain runs, batched, with adapters and log-probs.
    let f = fixture();
    let bound = Generator::load_with(
        &f.model,
        GeneratorOptions {
            io_binding: Some(true),
            ..Default::default()
        },
    )
    .expect("load with io_binding");
    bound.add_adapter("a", &f.a).expect("register a");
    bound.add_adapter("b", &f.b).expect("register b");
    let reqs = vec![
        GenerateRequest::new(tokens(1, 5))
            .max_tokens(12)
            .ignore_eos(true),
        GenerateRequest::new(tokens(2, 17))
            .max_tokens(4)
            .ignore_eos(true),
        GenerateRequest::new(tokens(3, 9))
            .max_tokens(10)
            .ignore_eos(true)
            .adapter("a", 0.7)
            .adapter("b", -0.4),
        GenerateRequest::new(tokens(4, 9))
            .max_tokens(10)
            .temperature(0.8)
            .seed(5)
            .adapter("a", 1.0),
    ];
    let want = tiny().generate_batch(&reqs);
    let got = bound.generate_batch(&reqs);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let (g, w) = (g.as_ref().expect("bound"), w.as_ref().expect("plain"));
        assert_eq!(g.tokens, w.tokens, "request {i}");
    }
    let ctx = toks(6, 7);
    let cont = toks(7, 5);
    let lp_plain = tiny()
        .log_probs(&ctx, &cont, &adapters(&[("b", 1.0)]))
        .expect("plain log_probs");
    let lp_bound = bound
        .log_probs(&ctx, &cont, &adapters(&[("b", 1.0)]))
        .expect("bound log_probs");
    assert_close(&lp_bound, &lp_plain, "log_probs through the IoBinding");
}
