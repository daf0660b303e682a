//! Decoding one sequence: the KV cache against full teacher-forced passes, and seeded
//! sampling.

use super::*;

#[test]
fn kv_cache_decoding_matches_teacher_forced_full_passes() {
    let g = tiny();
    let prompt = toks(1, 7);
    let n = 40;
    let out = run_one(
        g,
        &GenerateRequest::new(Prompt::Tokens(prompt.clone()))
            .max_tokens(n)
            .ignore_eos(true),
    );
    assert_eq!(out.tokens.len(), n);
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.prompt_tokens, prompt.len());

    // One full forward pass over prompt + generated, checked against numpy.
    let lp = g.log_probs(&prompt, &out.tokens, &[]).expect("log_probs");
    let reference = numpy(&[(&prompt, &out.tokens, vec![])]);
    let (want_lp, want_argmax) = &reference[0];
    assert_close(&lp, want_lp, "teacher-forced log-probs vs numpy");
    // Every decoded token is the most likely one at its position in the full pass.
    for (j, (&t, &best)) in out.tokens.iter().zip(want_argmax).enumerate() {
        assert_eq!(
            t, best,
            "position {j}: KV-cache greedy token vs full-pass argmax"
        );
    }
    // And a prefill of prompt + the first j tokens (no cache reuse) picks token j.
    for j in (0..n).step_by(3) {
        let ctx: Vec<u32> = prompt.iter().chain(&out.tokens[..j]).copied().collect();
        let one = run_one(
            g,
            &GenerateRequest::new(Prompt::Tokens(ctx))
                .max_tokens(1)
                .ignore_eos(true),
        );
        assert_eq!(
            one.tokens,
            [out.tokens[j]],
            "prefill of length {} ",
            prompt.len() + j
        );
    }
}

#[test]
fn sampling_is_reproducible_from_the_seed() {
    let g = tiny();
    let sampled = |seed: u64| {
        run_one(
            g,
            &GenerateRequest::new(tokens(50, 6))
                .max_tokens(30)
                .ignore_eos(true)
                .temperature(1.0)
                .seed(seed),
        )
        .tokens
    };
    let a = sampled(42);
    assert_eq!(a, sampled(42), "same seed, same tokens");
    let others: Vec<Vec<u32>> = (43..46).map(sampled).collect();
    assert!(
        others.iter().all(|o| *o != a),
        "different seeds, different tokens"
    );

    let greedy = run_one(
        g,
        &GenerateRequest::new(tokens(50, 6))
            .max_tokens(30)
            .ignore_eos(true),
    );
    assert_ne!(greedy.tokens, a, "sampling at temperature 1 is not greedy");
    for r in [
        GenerateRequest::new(tokens(50, 6)).temperature(0.0).seed(3),
        GenerateRequest::new(tokens(50, 6))
            .temperature(0.0)
            .seed(4)
            .top_p(0.5),
        GenerateRequest::new(tokens(50, 6))
            .temperature(1.5)
            .top_k(1)
            .seed(9),
    ] {
        let got = run_one(g, &r.max_tokens(30).ignore_eos(true));
        assert_eq!(
            got.tokens, greedy.tokens,
            "temperature 0 / top_k 1 is greedy"
        );
    }
}
